"""Everything in tests/benchmarks is a pytest-benchmark benchmark: mark it ``bench``.

The root conftest skips ``bench`` items unless ``--benchmark-only`` is given, and
pyproject's ``norecursedirs`` keeps a plain ``pytest`` from collecting this folder at all.
Run the suite with ``pytest tests/benchmarks --benchmark-only`` (or ``nox -s bench``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before the root conftest decides what to skip
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.bench)
