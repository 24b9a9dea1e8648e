"""Benchmarks of the measurement loop and the regression statistics.

``test_protocol_loop_*`` time one ``harness.protocol.measure`` call on a trivial function,
i.e. what the protocol itself costs per measurement (warm-up, GC handling, clock reads,
statistics). The comparison benchmarks time what ``vlm-pareto compare``/``nightly`` do per key.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.compare import change_points, compare_samples, history_verdicts
from harness.protocol import Protocol, measure

#: Fixed-count protocol (no minimum time) so each benchmark round does the same work.
COUNTED = Protocol(
    "bench-counted",
    warmup_runs=1,
    warmup_min_s=0.0,
    min_runs=200,
    min_time_s=0.0,
    max_time_s=10.0,
    threads=1,
)


def _noop() -> None:
    return None


def _busy_50us() -> None:
    # A small arithmetic loop: long enough to dominate a clock read, short enough to be many.
    x = 0
    for i in range(400):
        x += i * i


def test_protocol_loop_noop(benchmark):
    m = benchmark(measure, _noop, COUNTED)
    assert len(m.samples_ms) == 200


def test_protocol_loop_busy(benchmark):
    m = benchmark(measure, _busy_50us, COUNTED)
    assert m.stats.median_ms > 0


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(0)
    return rng.lognormal(np.log(20.0), 0.05, 300), rng.lognormal(np.log(21.0), 0.05, 300)


def test_compare_samples_with_ci(benchmark, samples):
    b, c = samples
    r = benchmark(compare_samples, b, c)
    assert r.n_baseline == 300


def test_compare_samples_no_ci(benchmark, samples):
    b, c = samples
    r = benchmark(compare_samples, b, c, n_boot=0)
    assert r.verdict in ("~", "regression")


def test_history_verdicts_30_runs(benchmark):
    rng = np.random.default_rng(1)
    runs = [rng.lognormal(np.log(20.0), 0.05, 100) for _ in range(30)]
    steps = benchmark(history_verdicts, runs)
    assert len(steps) == 30


def test_change_points_100(benchmark):
    values = [10.0] * 50 + [12.0] * 50
    assert benchmark(change_points, values) == [50]
