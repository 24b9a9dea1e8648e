"""Shared test configuration.

Markers (see pyproject.toml): ``slow`` tests run only with ``-m slow`` (or ``--run-slow``);
``macos`` tests run only on macOS; ``bench`` tests (tests/benchmarks) only with
``--benchmark-only``. Every test gets its own SQLite store through ``$VLM_PARETO_DB`` so the
suite never touches ``results/``.

``postgres`` and ``slurm`` tests use the real services that ``scripts/services.sh start``
(run by ``scripts/test.sh``) brings up: the env file it writes (``$VLM_PARETO_SERVICES_ENV``,
else ``<repo>/.services.env``) names them. A service the script could not start skips its
tests with the script's reason, and the end of the run says which services were unavailable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: marker -> (env var holding the connection fact, env var holding why it is unavailable)
SERVICES = {
    "postgres": ("VLM_PARETO_TEST_PG_URL", "VLM_PARETO_TEST_PG_UNAVAILABLE"),
    "slurm": ("VLM_PARETO_TEST_SLURM_PARTITION", "VLM_PARETO_TEST_SLURM_UNAVAILABLE"),
}
_unavailable: dict[str, str] = {}
_skipped_for: dict[str, int] = {}


def _load_services_env() -> None:
    """Export the services' env file (KEY=value lines) into this process and its children."""
    path = Path(os.environ.get("VLM_PARETO_SERVICES_ENV") or ROOT / ".services.env")
    if path.is_file():
        for line in path.read_text().splitlines():
            key, eq, value = line.partition("=")
            if eq and not key.startswith("#") and key.strip():
                os.environ.setdefault(key.strip(), value)
    extra_path = os.environ.get("VLM_PARETO_TEST_SLURM_PATH")
    if extra_path and extra_path not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = extra_path + os.pathsep + os.environ.get("PATH", "")
    for name, (fact, why) in SERVICES.items():
        if not os.environ.get(fact):
            _unavailable[name] = os.environ.get(why) or (
                f"not started (run 'scripts/services.sh start', or 'bash scripts/test.sh'; no {path.name})"
            )
        else:
            dead = _does_not_answer(name, os.environ[fact])
            if dead:
                _unavailable[name] = f"{dead} (stale {path.name}? run 'scripts/services.sh start')"


def _does_not_answer(name: str, fact: str) -> str | None:
    """A cheap liveness check of a service the env file names (None when it answers)."""
    import socket
    import subprocess

    if name == "postgres":
        import sqlalchemy as sa

        try:
            u = sa.engine.make_url(fact)
            with socket.create_connection((u.host or "127.0.0.1", u.port or 5432), timeout=3):
                return None
        except (OSError, sa.exc.ArgumentError) as e:
            return f"PostgreSQL at {fact.rpartition('@')[2]} does not answer ({e})"
    try:
        r = subprocess.run(
            ["sinfo", "-h", "-p", fact, "-o", "%T"], capture_output=True, text=True, timeout=15
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo failed ({e})"
    return (
        None
        if r.returncode == 0 and r.stdout.strip()
        else f"partition {fact} does not answer (sinfo)"
    )


def pytest_configure(config: pytest.Config) -> None:
    _load_services_env()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = config.getoption("-m") or ""
    run_slow = config.getoption("--run-slow") or "slow" in markexpr
    bench_only = bool(config.getoption("--benchmark-only", default=False))
    skip_slow = pytest.mark.skip(reason="slow: run with -m slow or --run-slow")
    skip_mac = pytest.mark.skip(reason="needs macOS (Core ML prediction / Metal)")
    skip_bench = pytest.mark.skip(reason="benchmark: run with --benchmark-only")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "macos" in item.keywords and sys.platform != "darwin":
            item.add_marker(skip_mac)
        if "bench" in item.keywords and not bench_only and "bench" not in markexpr:
            item.add_marker(skip_bench)
        for name, why in _unavailable.items():
            if name in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"{name} unavailable: {why}"))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        for name in SERVICES:
            if f"{name} unavailable:" in reason:
                _skipped_for[name] = _skipped_for.get(name, 0) + 1
                break


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Never silent: say which real services were missing and how many tests that skipped."""
    if not _skipped_for:
        return
    terminalreporter.section("services unavailable", sep="=", yellow=True)
    for name, n in sorted(_skipped_for.items()):
        terminalreporter.write_line(f"{name}: {n} test(s) skipped: {_unavailable[name]}")


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    """Point the default store at a per-test SQLite file."""
    db = tmp_path / "store.db"
    monkeypatch.setenv("VLM_PARETO_DB", f"sqlite:///{db}")
    return db


@pytest.fixture
def db_url(_isolated_store) -> str:
    return f"sqlite:///{_isolated_store}"


def wipe_postgres(url: str) -> None:
    """Empty the scratch database: drop and recreate its ``public`` schema."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture
def pg(monkeypatch) -> str:
    """The services' PostgreSQL database, emptied, as the default store (tests marked postgres)."""
    url = os.environ.get("VLM_PARETO_TEST_PG_URL")
    if not url:
        pytest.skip(
            f"postgres unavailable: {_unavailable.get('postgres', 'no VLM_PARETO_TEST_PG_URL')}"
        )
    wipe_postgres(url)
    monkeypatch.setenv("VLM_PARETO_DB", url)
    return url
