"""Regression statistics: is a candidate slower than its baseline, for real?

Pure functions (arrays and tables in, dataclasses out, no I/O), shared by
``vlm-pareto compare``, ``vlm-pareto nightly`` and ``scripts/noise_study.py``.

A **regression** needs two things at once, and both are reported:

* *significance*: a two-sided Mann-Whitney U test on the raw samples gives ``p < alpha``.
  Rank-based, so the heavy right tail of latencies on a shared machine does not drive it.
* *size*: the ratio of medians (candidate / baseline) is beyond ``1 + threshold``.
  On a busy machine two runs of unchanged code differ by a few percent, and with hundreds
  of samples the test calls that "significant"; the threshold is what keeps those
  differences from becoming alarms. The test keeps a large-but-lucky ratio from few samples
  from becoming one.

Anything else is ``'~'`` (no change shown), or ``'improvement'`` for the mirror case.

**Run-to-run variance** (``run_sd``): two runs of unchanged code on a shared machine land
10-25% apart (docs/noise.md), and no sample of either run sees that, so the rank test calls
it significant. Given the standard deviation of log median between runs, the ratio's
interval is widened by it (in quadrature, in log space), and a verdict then also needs that
wider interval to exclude 1: a shift the machine makes on its own is not a regression.

**History** (the nightly case): each run is compared with the pooled samples of the
``window`` previous runs on the same machine; one violating night is ``'suspect'`` (and is
kept out of later baselines), a second consecutive one makes it a confirmed ``'regression'``.
:func:`change_points` fits level shifts to the per-run medians to name the run where a
shift began.

Only like is compared with like: same machine, backend, device, dtype and protocol;
anything else is a :class:`~harness.errors.UserError` naming the fields that differ.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from harness.errors import UserError

#: Default size threshold: a regression must be at least 5% slower (median ratio >= 1.05).
DEFAULT_THRESHOLD = 0.05
#: Default significance level of the Mann-Whitney U test (two-sided). Same as asv's. On its
#: own it would allow 0.2% false alarms per key on exchangeable samples; real runs are not
#: exchangeable (the machine drifts between them), so the size threshold does most of the
#: work, and the noise study (docs/nightly.md) measures the combined false-alarm rate.
DEFAULT_ALPHA = 0.002
#: Fewer samples than this on either side: no test is run, the comparison is refused.
MIN_SAMPLES = 5
#: Default number of previous runs pooled into the nightly baseline.
DEFAULT_WINDOW = 5
#: Consecutive violating runs needed to confirm a regression.
CONFIRM_RUNS = 2
#: History mode: the threshold is raised to the one-sided 90% prediction bound of the
#: night-to-night scatter of the window's run medians (None turns this off). 0.9 rather than
#: 0.99: with the 2-night confirmation on top, 0.99 gave up most detection of 20% slowdowns
#: on the real noise fixture without lowering false alarms further (docs/nightly.md).
DEFAULT_NOISE_QUANTILE = 0.9

Verdict = Literal["regression", "improvement", "~"]
Status = Literal["regression", "suspect", "improvement", "~", "no-baseline"]

#: What identifies one measured thing inside a run (the store's unique key minus run and context).
KEY_FIELDS: tuple[str, ...] = (
    "kind",
    "name",
    "resolution",
    "tiling",
    "tokens",
    "prompt_tokens",
    "in_dim",
)
#: What must be equal for two measurements of the same thing to be comparable at all.
CONTEXT_FIELDS: tuple[str, ...] = ("machine_id", "backend", "device", "dtype", "protocol")


# --------------------------------------------------------------------------------------------
# Two samples
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleComparison:
    """Candidate vs baseline samples of one key. Times in ms; ratio = candidate / baseline."""

    n_baseline: int
    n_candidate: int
    baseline_median_ms: float
    candidate_median_ms: float
    ratio: float
    ratio_ci_low: float
    ratio_ci_high: float
    p_value: float
    significant: bool
    beyond_threshold: bool
    verdict: Verdict
    threshold: float
    alpha: float
    #: Standard deviation of log ratio that run-to-run variance adds (0: samples only).
    run_sd: float = 0.0
    #: The ratio's interval from the samples alone (equal to ``ratio_ci_*`` when run_sd is 0).
    ratio_ci_within_low: float = math.nan
    ratio_ci_within_high: float = math.nan

    @property
    def change_pct(self) -> float:
        return (self.ratio - 1.0) * 100.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["change_pct"] = self.change_pct
        return d


def _as_samples(x: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    a = a[np.isfinite(a)]
    if a.size and (a <= 0).any():
        raise UserError(f"{what} has non-positive latencies; samples must be times > 0 in ms")
    return a


def check_sample_sizes(
    n_baseline: int, n_candidate: int, min_samples: int = MIN_SAMPLES, where: str = ""
) -> None:
    """Refuse a test that cannot have power (and would otherwise read as 'no change')."""
    if n_baseline < min_samples or n_candidate < min_samples:
        at = f" for {where}" if where else ""
        raise UserError(
            f"too few samples{at}: baseline has {n_baseline}, candidate {n_candidate}, need at least "
            f"{min_samples} each for a significance test; measure with more rounds "
            "(e.g. the 'standard' or 'rigorous' protocol)"
        )


def mann_whitney_p(
    baseline: Sequence[float] | np.ndarray, candidate: Sequence[float] | np.ndarray
) -> float:
    """Two-sided Mann-Whitney U p-value (asymptotic with tie and continuity correction)."""
    from scipy.stats import mannwhitneyu

    b, c = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if np.ptp(np.concatenate([b, c])) == 0.0:
        return 1.0  # all samples identical: nothing to test (scipy would return nan)
    # 'asymptotic' rather than 'auto': the exact method is O(n^2) memory for large samples and
    # the normal approximation is accurate from ~10 samples per side.
    method = (
        "exact"
        if max(b.size, c.size) <= 8 and np.unique(np.concatenate([b, c])).size == b.size + c.size
        else "asymptotic"
    )
    return float(mannwhitneyu(c, b, alternative="two-sided", method=method).pvalue)


def ratio_of_medians_ci(
    baseline: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of ``median(candidate) / median(baseline)``.

    Both sides are resampled independently (they are separate measurements). Deterministic.
    """
    b, c = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    rng = np.random.default_rng(seed)
    mb = np.median(b[rng.integers(0, b.size, size=(n_boot, b.size))], axis=1)
    mc = np.median(c[rng.integers(0, c.size, size=(n_boot, c.size))], axis=1)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(mc / mb, [tail, 1.0 - tail])
    return float(lo), float(hi)


def classify(
    ratio: float, p_value: float, threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA
) -> Verdict:
    """'regression' / 'improvement' only when significant AND beyond the threshold, else '~'.

    The improvement bound is the mirror image in log space (1 / (1 + threshold)), so a 5%
    threshold means "5% slower" one way and "as much faster" the other.
    """
    if not p_value < alpha:
        return "~"
    if ratio >= 1.0 + threshold:
        return "regression"
    if ratio <= 1.0 / (1.0 + threshold):
        return "improvement"
    return "~"


def run_interval(
    ratio: float, low: float, high: float, run_sd: float, confidence: float = 0.95
) -> tuple[float, float]:
    """The ratio's interval with run-to-run variance (``run_sd``, sd of log ratio) added.

    ``low``/``high`` from the samples (nan: none, then the run term alone).
    """
    if not run_sd > 0:
        return low, high
    from statistics import NormalDist

    from harness.stats import widen_log

    h = NormalDist().inv_cdf(0.5 + confidence / 2.0) * run_sd
    if math.isnan(low) or math.isnan(high):
        return ratio * math.exp(-h), ratio * math.exp(h)
    return widen_log(ratio, low, high, h)


def compare_samples(
    baseline: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    *,
    min_samples: int = MIN_SAMPLES,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    where: str = "",
    run_sd: float = 0.0,
) -> SampleComparison:
    """Compare raw samples (ms). ``n_boot=0`` skips the bootstrap CI (reported as nan).

    ``run_sd`` > 0 (the standard deviation of log ratio that run-to-run variance adds) widens
    the interval by it, and a verdict then also needs the widened interval to exclude 1.

    Raises :class:`UserError` when either side has fewer than ``min_samples`` samples.
    """
    check_thresholds(threshold, alpha)
    if not (isinstance(run_sd, (int, float)) and math.isfinite(run_sd) and run_sd >= 0):
        raise UserError(f"run_sd must be a standard deviation >= 0, got {run_sd!r}")
    b = _as_samples(baseline, "baseline")
    c = _as_samples(candidate, "candidate")
    check_sample_sizes(b.size, c.size, min_samples, where)
    mb, mc = float(np.median(b)), float(np.median(c))
    ratio = mc / mb
    p = mann_whitney_p(b, c)
    lo, hi = (
        ratio_of_medians_ci(b, c, confidence, n_boot, seed) if n_boot > 0 else (math.nan, math.nan)
    )
    verdict = classify(ratio, p, threshold, alpha)
    wlo, whi = lo, hi
    if run_sd > 0:
        lo, hi = run_interval(ratio, lo, hi, run_sd, confidence)
        if (verdict == "regression" and not lo > 1.0) or (
            verdict == "improvement" and not hi < 1.0
        ):
            verdict = "~"
    return SampleComparison(
        n_baseline=int(b.size),
        n_candidate=int(c.size),
        baseline_median_ms=mb,
        candidate_median_ms=mc,
        ratio=ratio,
        ratio_ci_low=lo,
        ratio_ci_high=hi,
        p_value=p,
        significant=p < alpha,
        beyond_threshold=ratio >= 1.0 + threshold or ratio <= 1.0 / (1.0 + threshold),
        verdict=verdict,
        threshold=threshold,
        alpha=alpha,
        run_sd=float(run_sd),
        ratio_ci_within_low=wlo,
        ratio_ci_within_high=whi,
    )


def check_thresholds(threshold: float, alpha: float) -> None:
    if not (isinstance(threshold, (int, float)) and 0.0 <= threshold < 10.0):
        raise UserError(f"threshold must be a fraction like 0.05 (5%), got {threshold!r}")
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise UserError(f"alpha must be in (0, 1), e.g. 0.002, got {alpha!r}")


# --------------------------------------------------------------------------------------------
# Like with like
# --------------------------------------------------------------------------------------------


def differing_fields(
    a: Mapping[str, Any], b: Mapping[str, Any], fields: Iterable[str] = CONTEXT_FIELDS
) -> list[str]:
    """Names of ``fields`` whose values differ between ``a`` and ``b`` (as strings)."""
    return [f for f in fields if str(a.get(f)) != str(b.get(f))]


def check_comparable(
    a: Mapping[str, Any], b: Mapping[str, Any], what: str = "baseline and candidate"
) -> None:
    """Raise a UserError listing every context field (machine, backend, ...) that differs."""
    diff = differing_fields(a, b)
    if diff:
        shown = "; ".join(f"{f}: {a.get(f)!r} vs {b.get(f)!r}" for f in diff)
        raise UserError(
            f"{what} are not comparable, they differ in {', '.join(diff)} ({shown}); "
            "compare runs of the same machine, backend, device, dtype and protocol"
        )
