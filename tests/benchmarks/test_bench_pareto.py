"""pytest-benchmark: the two-objective front of 1,000,000 random points (target: < 1 s).

Run with ``pytest tests/benchmarks/test_bench_pareto.py --benchmark-only``.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.pareto import pareto_front

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def million_points() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.column_stack([rng.uniform(40, 80, 1_000_000), rng.lognormal(6, 1, 1_000_000)])


def test_pareto_front_million_points(benchmark, million_points):
    res = benchmark.pedantic(
        pareto_front, args=(million_points,), rounds=5, iterations=1, warmup_rounds=1
    )
    assert 0 < len(res) < 200 and res.excluded_nan == 0
    assert benchmark.stats.stats.median < 1.0


def test_pareto_front_million_points_with_ties(benchmark):
    # Quantised values: many exact ties and duplicates exercise the grouping path.
    rng = np.random.default_rng(1)
    pts = np.column_stack(
        [rng.integers(400, 800, 1_000_000) / 10, rng.integers(10, 5000, 1_000_000).astype(float)]
    )
    res = benchmark.pedantic(pareto_front, args=(pts,), rounds=5, iterations=1, warmup_rounds=1)
    assert len(res) > 0
    assert benchmark.stats.stats.median < 1.0
