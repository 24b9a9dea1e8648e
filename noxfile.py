"""nox sessions: tests, lint, bench, demo.

Sessions reuse the current interpreter's environment (``venv_backend="none"``): building a
fresh virtualenv per session would reinstall torch and transformers (minutes, and a risk of
pulling a CUDA build of torch). Install once with ``pip install -c constraints.txt -e '.[test]'``.
"""

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The default test suite (slow, macOS-only and benchmark tests excluded)."""
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the package, tests and scripts; mypy over the package."""
    session.run("ruff", "check", "harness", "tests", "scripts", "noxfile.py")
    session.run("ruff", "format", "--check", "harness", "tests", "scripts", "noxfile.py")
    session.run("python", "-m", "mypy", "harness")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """pytest-benchmark suite (tests/benchmarks), JSON with raw samples for `vlm-pareto compare`."""
    session.run(
        "python",
        "-m",
        "pytest",
        "tests/benchmarks",
        "--benchmark-only",
        "--benchmark-json=results/bench.json",
        "--benchmark-save-data",
        *session.posargs,
    )


@nox.session(venv_backend="none")
def demo(session: nox.Session) -> None:
    """The README's main job: the default sweep (paper_table4) and its report."""
    session.run("python", "-m", "harness", "sweep", *session.posargs)
