"""Pure statistics on latency samples: summaries, bootstrap intervals, sums of medians.

No I/O and no global state: every function takes arrays and returns numbers, so the
protocol, TTFT composition and regression tests share one definition of each statistic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

#: IQR/median above this marks a measurement as noisy (torch.utils.benchmark uses 10% too).
NOISY_IQR_RATIO = 0.10
DEFAULT_BOOTSTRAP = 2000


@dataclass(frozen=True)
class Stats:
    """Summary of latency samples, all in milliseconds."""

    n: int
    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    p90_ms: float
    q1_ms: float
    q3_ms: float
    iqr_ms: float
    std_ms: float
    ci_low_ms: float
    ci_high_ms: float
    noisy: bool

    @property
    def iqr_ratio(self) -> float:
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def bootstrap_median_ci(
    samples: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median.

    Deterministic (fixed seed) so that the same samples always give the same interval.
    With a single sample the interval collapses onto it.
    """
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        raise ValueError("no samples")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    meds = np.median(x[idx], axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(meds, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarize(samples: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Stats:
    """Median, mean, min, max, p90, quartiles, IQR and a bootstrap CI of the median."""
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        raise ValueError("no samples")
    q1, med, q3, p90 = np.quantile(x, [0.25, 0.5, 0.75, 0.9])
    lo, hi = bootstrap_median_ci(x, confidence)
    iqr = float(q3 - q1)
    return Stats(
        n=int(x.size),
        median_ms=float(med),
        mean_ms=float(x.mean()),
        min_ms=float(x.min()),
        max_ms=float(x.max()),
        p90_ms=float(p90),
        q1_ms=float(q1),
        q3_ms=float(q3),
        iqr_ms=iqr,
        std_ms=float(x.std(ddof=1)) if x.size > 1 else 0.0,
        ci_low_ms=lo,
        ci_high_ms=hi,
        noisy=bool(med > 0 and iqr / med > NOISY_IQR_RATIO),
    )


def sum_of_medians_ci(
    parts: Sequence[Sequence[float] | np.ndarray],
    confidence: float = 0.95,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Median-sum and bootstrap CI of ``sum(median(part))`` for independent parts.

    Each part is resampled independently (encoder and prefill are measured separately),
    so the interval of TTFT = encoder + prefill carries both uncertainties.
    Returns ``(point, low, high)``.
    """
    arrays = [np.asarray(p, dtype=float) for p in parts if len(p) > 0]
    if not arrays:
        raise ValueError("no samples")
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for x in arrays:
        if x.size == 1:
            total += x[0]
        else:
            total += np.median(x[rng.integers(0, x.size, size=(n_boot, x.size))], axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(total, [alpha, 1.0 - alpha])
    point = float(sum(np.median(x) for x in arrays))
    return point, float(lo), float(hi)


def combine_intervals(parts: Sequence[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Combine (point, low, high) intervals of independent parts when raw samples are gone.

    Half-widths add in quadrature on each side (a normal approximation), which is what two
    independent bootstrap intervals give for their sum to first order.
    """
    point = sum(p for p, _, _ in parts)
    lo = point - float(np.sqrt(sum((p - lo_) ** 2 for p, lo_, _ in parts)))
    hi = point + float(np.sqrt(sum((hi_ - p) ** 2 for p, _, hi_ in parts)))
    return point, lo, hi


#: A measurement from one round (one process, one pass over the grid) cannot see run-to-run
#: variance; its interval is widened to at least +-this share of the median (docs/noise.md).
SINGLE_ROUND_HALF_WIDTH = 0.10


def hierarchical_median_ci(
    groups: Sequence[Sequence[float] | np.ndarray],
    confidence: float = 0.95,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float]:
    """Two-level bootstrap CI of the pooled median: resample rounds, then samples within each.

    Round-to-round variance (another process, another pass over the grid, a drifting machine)
    is in the interval, not only the within-round spread. Deterministic (fixed seed).
    """
    gs = [np.asarray(g, dtype=float) for g in groups if len(g) > 0]
    if not gs:
        raise ValueError("no samples")
    if len(gs) == 1:
        return bootstrap_median_ci(gs[0], confidence, n_boot, seed)
    rng = np.random.default_rng(seed)
    k = len(gs)
    meds = np.empty(n_boot)
    picks = rng.integers(0, k, size=(n_boot, k))
    for b in range(n_boot):
        pooled = np.concatenate(
            [gs[i][rng.integers(0, gs[i].size, size=gs[i].size)] for i in picks[b]]
        )
        meds[b] = np.median(pooled)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(meds, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def widen_log(median: float, low: float, high: float, half_width: float) -> tuple[float, float]:
    """``(low, high)`` with ``half_width`` (in log units) added to each side in quadrature:
    the interval of ``median x exp(e)`` for an independent error ``e`` of that half-width."""
    if half_width <= 0 or not median > 0:
        return low, high
    below = math.log(median / low) if low > 0 else math.inf
    above = math.log(high / median) if high > median else 0.0
    lo = (
        median * math.exp(-math.hypot(max(below, 0.0), half_width)) if math.isfinite(below) else low
    )
    hi = median * math.exp(math.hypot(above, half_width))
    return min(lo, low), max(hi, high)


def summarize_rounds(
    groups: Sequence[Sequence[float] | np.ndarray],
    confidence: float = 0.95,
    single_round_half_width: float = SINGLE_ROUND_HALF_WIDTH,
) -> Stats:
    """:func:`summarize` of the pooled samples, with an interval over rounds.

    Two or more rounds: :func:`hierarchical_median_ci`. One round: the bootstrap interval
    widened to at least +-``single_round_half_width`` of the median, since one round says
    nothing about how the next process or pass would measure. ``noisy`` also marks round
    medians that spread by more than the IQR threshold. (A sweep then adds its run-to-run term
    with :func:`widen_log`, ``harness.drift``.)
    """
    gs = [np.asarray(g, dtype=float) for g in groups if len(g) > 0]
    if not gs:
        raise ValueError("no samples")
    pooled = np.concatenate(gs)
    s = summarize(pooled, confidence)
    if len(gs) >= 2:
        lo, hi = hierarchical_median_ci(gs, confidence)
        meds = np.asarray([np.median(g) for g in gs])
        spread = bool(s.median_ms > 0 and (meds.max() - meds.min()) / s.median_ms > NOISY_IQR_RATIO)
    else:
        lo, hi, spread = s.ci_low_ms, s.ci_high_ms, False
        lo = min(lo, s.median_ms * (1.0 - single_round_half_width))
        hi = max(hi, s.median_ms * (1.0 + single_round_half_width))
    return replace(s, ci_low_ms=float(lo), ci_high_ms=float(hi), noisy=bool(s.noisy or spread))
