"""Does it cry wolf? A/A draws over real noise (used by scripts/noise_study.py and a test)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.compare.history import night_to_night_margin
from harness.compare.samples import (
    CONFIRM_RUNS,
    DEFAULT_ALPHA,
    DEFAULT_NOISE_QUANTILE,
    DEFAULT_THRESHOLD,
    DEFAULT_WINDOW,
    MIN_SAMPLES,
    Verdict,
    check_sample_sizes,
    compare_samples,
)
from harness.errors import UserError

# --------------------------------------------------------------------------------------------
# Does it cry wolf? (A/A draws over real noise; used by scripts/noise_study.py and a test)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateEstimate:
    """How often a verdict fired in ``trials`` draws, with a Wilson 95% interval."""

    hits: int
    trials: int

    @property
    def rate(self) -> float:
        return self.hits / self.trials if self.trials else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.hits, self.trials)

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {
            "hits": self.hits,
            "trials": self.trials,
            "rate": self.rate,
            "ci_low": lo,
            "ci_high": hi,
        }

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"{self.rate * 100:5.1f}% ({self.hits}/{self.trials}, 95% CI {lo * 100:.1f}-{hi * 100:.1f}%)"


def wilson_interval(hits: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sane at 0 hits, unlike the normal one)."""
    if trials <= 0:
        return math.nan, math.nan
    p = hits / trials
    den = 1.0 + z * z / trials
    mid = (p + z * z / (2 * trials)) / den
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


@dataclass(frozen=True)
class NoiseStudy:
    """False alarms (A/A) and detection (injected slowdowns) for single and nightly comparisons.

    A *night* is the pooled samples of ``rounds_per_night`` rounds drawn at random (without
    replacement) from the real rounds: the nightly job interleaves several rounds of every
    key through its run, so one night's samples come from several moments of the machine's
    load, not one. ``pair``: one night vs another. ``nightly``: ``window`` nights pooled as
    the baseline vs two further nights, a confirmed regression needing both to violate.
    Keys of the detection dicts are slowdowns (0.10 = candidate samples x 1.10).
    """

    n_rounds: int
    rounds_per_night: int
    noise_quantile: float | None
    threshold: float
    alpha: float
    window: int
    round_medians_ms: list[float]
    pair_false_alarm: RateEstimate
    pair_detection: dict[float, RateEstimate]
    nightly_false_alarm: RateEstimate
    nightly_suspect: RateEstimate
    nightly_detection: dict[float, RateEstimate]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_rounds": self.n_rounds,
            "rounds_per_night": self.rounds_per_night,
            "noise_quantile": self.noise_quantile,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "window": self.window,
            "round_medians_ms": self.round_medians_ms,
            "pair_false_alarm": self.pair_false_alarm.to_dict(),
            "pair_detection": {str(k): v.to_dict() for k, v in self.pair_detection.items()},
            "nightly_false_alarm": self.nightly_false_alarm.to_dict(),
            "nightly_suspect": self.nightly_suspect.to_dict(),
            "nightly_detection": {str(k): v.to_dict() for k, v in self.nightly_detection.items()},
        }

    def render(self) -> str:
        med = np.asarray(self.round_medians_ms)
        lines = [
            f"rounds: {self.n_rounds}; round medians {med.min():.2f}-{med.max():.2f} ms "
            f"(max/min {med.max() / med.min():.2f}, CV {med.std(ddof=1) / med.mean() * 100:.1f}%); "
            f"{self.rounds_per_night} round(s) per night",
            f"threshold {self.threshold * 100:.0f}%, alpha {self.alpha:g}, window {self.window}",
            f"one night vs another:  false alarms {self.pair_false_alarm}",
        ]
        for s, r in self.pair_detection.items():
            lines.append(f"    detected {s * 100:.0f}% slowdown: {r}")
        margin = "off" if self.noise_quantile is None else f"{self.noise_quantile:g}"
        lines.append(
            f"nightly (window {self.window}, confirm {CONFIRM_RUNS}, noise margin {margin}): confirmed false alarms "
            f"{self.nightly_false_alarm}; suspect nights {self.nightly_suspect}"
        )
        for s, r in self.nightly_detection.items():
            lines.append(f"    confirmed {s * 100:.0f}% slowdown: {r}")
        return "\n".join(lines)


def noise_study(
    rounds: Sequence[Sequence[float]],
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    window: int = DEFAULT_WINDOW,
    slowdowns: Sequence[float] = (0.10, 0.20),
    rounds_per_night: int = 1,
    trials: int = 500,
    seed: int = 0,
    noise_quantile: float | None = DEFAULT_NOISE_QUANTILE,
) -> NoiseStudy:
    """A/A and injected-slowdown rates over real rounds of one unchanged workload.

    Every trial draws distinct rounds at random (fixed ``seed``) and pools them into nights
    (see :class:`NoiseStudy`). Pair trials: a 'regression' verdict of night B against night
    A is a false alarm; with B's samples multiplied by (1 + s) it is a detection. Nightly
    trials: ``window`` baseline nights, then two nights; both violating = a confirmed false
    alarm (one = suspect); both slowed and both violating = a confirmed detection. As in
    :func:`history_verdicts`, the nightly threshold is raised to the window's
    :func:`night_to_night_margin` (``noise_quantile``; None = off).
    """
    rs = [np.asarray(r, dtype=float) for r in rounds]
    per = int(rounds_per_night)
    if per < 1:
        raise UserError(f"rounds_per_night must be >= 1, got {per}")
    need_pair, need_nightly = 2 * per, (window + 2) * per
    if len(rs) < need_pair:
        raise UserError(
            f"need at least {need_pair} rounds for pairs of {per}-round nights, got {len(rs)}"
        )
    for i, r in enumerate(rs):
        check_sample_sizes(r.size, r.size, MIN_SAMPLES, f"round {i}")
    rng = np.random.default_rng(seed)

    def nights(count: int) -> list[np.ndarray]:
        pick = rng.permutation(len(rs))[: count * per]
        return [
            np.concatenate([rs[j] for j in pick[k * per : (k + 1) * per]]) for k in range(count)
        ]

    def verdict(b: np.ndarray, c: np.ndarray, thr: float = threshold) -> Verdict:
        return compare_samples(b, c, thr, alpha, n_boot=0).verdict

    fa, det = 0, {s: 0 for s in slowdowns}
    for _ in range(trials):
        a, b = nights(2)
        fa += verdict(a, b) == "regression"
        for s in slowdowns:
            det[s] += verdict(a, b * (1.0 + s)) == "regression"

    n_fa, n_sus, n_det, n_trials = 0, 0, {s: 0 for s in slowdowns}, 0
    if len(rs) >= need_nightly:
        for _ in range(trials):
            *hist, x, y = nights(window + 2)
            base = np.concatenate(hist)
            thr = threshold
            if noise_quantile is not None and window >= 3:
                thr = max(
                    threshold,
                    night_to_night_margin([float(np.median(h)) for h in hist], noise_quantile),
                )
            n_trials += 1
            v1, v2 = verdict(base, x, thr), verdict(base, y, thr)
            n_fa += v1 == "regression" and v2 == "regression"
            n_sus += v1 == "regression"
            for s in slowdowns:
                n_det[s] += (
                    verdict(base, x * (1.0 + s), thr) == "regression"
                    and verdict(base, y * (1.0 + s), thr) == "regression"
                )
    return NoiseStudy(
        n_rounds=len(rs),
        rounds_per_night=per,
        noise_quantile=noise_quantile,
        threshold=threshold,
        alpha=alpha,
        window=window,
        round_medians_ms=[float(np.median(r)) for r in rs],
        pair_false_alarm=RateEstimate(fa, trials),
        pair_detection={s: RateEstimate(det[s], trials) for s in slowdowns},
        nightly_false_alarm=RateEstimate(n_fa, n_trials),
        nightly_suspect=RateEstimate(n_sus, n_trials),
        nightly_detection={s: RateEstimate(n_det[s], n_trials) for s in slowdowns},
    )
