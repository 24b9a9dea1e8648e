"""Shared test configuration.

Markers (see pyproject.toml): ``slow`` tests run only with ``-m slow`` (or ``--run-slow``);
``macos`` tests run only on macOS; ``bench`` tests (tests/benchmarks) only with
``--benchmark-only``. Every test gets its own SQLite store through ``$VLM_PARETO_DB`` so the
suite never touches ``results/``.
"""

from __future__ import annotations

import sys

import pytest


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


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    """Point the default store at a per-test SQLite file."""
    db = tmp_path / "store.db"
    monkeypatch.setenv("VLM_PARETO_DB", f"sqlite:///{db}")
    return db


@pytest.fixture
def db_url(_isolated_store) -> str:
    return f"sqlite:///{_isolated_store}"
