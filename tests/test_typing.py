"""The package type-checks: `python -m mypy harness` (config in pyproject's [tool.mypy]) exits 0.

This puts the type checker on the README's test path (scripts/test.sh -> pytest, which CI
runs); `nox -s lint` runs the same command next to ruff. mypy keeps its incremental cache in
the repository's .mypy_cache, so only the first run on a machine checks everything.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_reports_no_errors() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not importable (install the test extra: pip install -e '.[test]')")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "harness"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    report = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, f"mypy harness failed (exit {proc.returncode}):\n{report[-6000:]}"
    assert "Success: no issues found" in proc.stdout, report


@pytest.mark.parametrize(
    "args",
    [
        ["check", "harness", "tests", "scripts", "noxfile.py"],
        ["format", "--check", "harness", "tests", "scripts", "noxfile.py"],
    ],
    ids=["ruff-check", "ruff-format"],
)
def test_ruff_lint_and_format_are_clean(args: list[str]) -> None:
    """One formatter (ruff format, line length 100 from pyproject) and the linter, on the test path."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not importable (install the test extra: pip install -e '.[test]')")
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, (
        f"ruff {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    )
