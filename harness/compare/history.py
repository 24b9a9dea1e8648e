"""History (the nightly case): each run against the pooled window of previous runs,
and the nightly job's result types (per-key history, the whole night's verdicts)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.compare.samples import (
    CONFIRM_RUNS,
    DEFAULT_ALPHA,
    DEFAULT_NOISE_QUANTILE,
    DEFAULT_THRESHOLD,
    DEFAULT_WINDOW,
    MIN_SAMPLES,
    SampleComparison,
    Status,
    compare_samples,
)
from harness.compare.tables import key_label
from harness.errors import UserError

# --------------------------------------------------------------------------------------------
# History (nightly)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryStep:
    """The verdict for run ``index`` of a history of one key."""

    index: int
    status: Status
    baseline_runs: tuple[int, ...]  # indices of the runs pooled into its baseline
    comparison: SampleComparison | None
    threshold_used: float = (
        DEFAULT_THRESHOLD  # the threshold, or the window's noise margin if larger
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "status": self.status,
            "baseline_runs": list(self.baseline_runs),
            "threshold_used": self.threshold_used,
            "comparison": self.comparison.to_dict() if self.comparison else None,
        }


def night_to_night_margin(
    run_medians: Sequence[float], quantile: float = DEFAULT_NOISE_QUANTILE
) -> float:
    """Relative slowdown that run-to-run scatter alone exceeds with probability 1 - quantile.

    The samples of one run share that run's machine state (load, frequency, neighbours), so
    a rank test on pooled samples cannot see night-to-night variation; the spread of the
    window's run medians can. One-sided prediction bound for a new run's log-median, from a
    t distribution with k - 1 degrees of freedom: ``exp(t_q * s * sqrt(1 + 1/k)) - 1``.
    Returns 0.0 with fewer than 3 runs (no usable spread).
    """
    from scipy.stats import t as student_t

    m = np.log(np.asarray([x for x in run_medians if x > 0], dtype=float))
    k = m.size
    if k < 3:
        return 0.0
    s = float(m.std(ddof=1))
    return float(math.expm1(student_t.ppf(quantile, k - 1) * s * math.sqrt(1.0 + 1.0 / k)))


def run_to_run_margin(run_sd: float, k: int, quantile: float = DEFAULT_NOISE_QUANTILE) -> float:
    """Relative slowdown a new run exceeds with probability 1 - quantile on run-to-run
    variance alone, for a baseline of ``k`` runs: ``exp(z_q * run_sd * sqrt(1 + 1/k)) - 1``."""
    from statistics import NormalDist

    return float(math.expm1(NormalDist().inv_cdf(quantile) * run_sd * math.sqrt(1.0 + 1.0 / k)))


def history_verdicts(
    runs: Sequence[Sequence[float]],
    window: int = DEFAULT_WINDOW,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    *,
    reference: Sequence[float] | None = None,
    confirm: int = CONFIRM_RUNS,
    min_samples: int = MIN_SAMPLES,
    n_boot: int = 0,
    noise_quantile: float | None = DEFAULT_NOISE_QUANTILE,
    run_sd: float = 0.0,
) -> list[HistoryStep]:
    """Walk a chronological history of one key (samples per run) and give each run a status.

    Baseline of run ``i``: the pooled samples of the last ``window`` earlier runs that were
    not 'suspect' (an unconfirmed bad night must not drag the baseline towards itself), or
    ``reference`` when given (a committed baseline file). A run violating the threshold is
    'suspect'; the ``confirm``-th consecutive violating run is a confirmed 'regression'. Runs
    after a confirmed regression pool it in, so a real, accepted shift becomes the new normal
    after a few nights instead of failing forever.

    With ``noise_quantile`` and at least 3 window runs, the threshold of a step is raised to
    :func:`night_to_night_margin` of the window when that is larger (reported as
    ``threshold_used``): on a machine whose runs scatter by more than the threshold, a
    slowdown must clear that scatter too. With fewer window runs (or a ``reference``) there is
    no spread to read, and ``run_sd`` (the machine's run-to-run sd of log median,
    ``harness.drift``) stands in: the same bound from a normal, ``exp(z_q * run_sd *
    sqrt(1 + 1/k)) - 1`` with k the window runs (1 for a reference).
    """
    if window < 1:
        raise UserError(f"window must be at least 1 run, got {window}")
    if confirm < 1:
        raise UserError(f"confirm must be at least 1 run, got {confirm}")
    steps: list[HistoryStep] = []
    clean: list[int] = []  # runs eligible for later baselines
    streak = 0
    for i, samples in enumerate(runs):
        if reference is not None:
            base_idx: tuple[int, ...] = ()
            base = list(reference)
        else:
            base_idx = tuple(clean[-window:])
            base = [s for j in base_idx for s in runs[j]]
        if not base:
            steps.append(HistoryStep(i, "no-baseline", base_idx, None, threshold))
            clean.append(i)
            continue
        used = threshold
        if noise_quantile is not None and reference is None and len(base_idx) >= 3:
            used = max(
                threshold,
                night_to_night_margin(
                    [float(np.median(runs[j])) for j in base_idx], noise_quantile
                ),
            )
        elif noise_quantile is not None and run_sd > 0:
            used = max(threshold, run_to_run_margin(run_sd, max(len(base_idx), 1), noise_quantile))
        cmp = compare_samples(
            base, samples, used, alpha, min_samples=min_samples, n_boot=n_boot, where=f"run {i}"
        )
        if cmp.verdict == "regression":
            streak += 1
            status: Status = "regression" if streak >= confirm else "suspect"
        else:
            streak = 0
            status = cmp.verdict
        if status != "suspect":
            clean.append(i)
        steps.append(HistoryStep(i, status, base_idx, cmp, used))
    return steps


# --------------------------------------------------------------------------------------------
# The nightly job's result (rendered by harness/report/trends.py)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """One run of the history (from the store's ``runs`` table)."""

    run_id: str
    created_at: str
    git_commit: str | None = None


@dataclass
class KeyHistory:
    """One measured key (plus its context) over the runs that measured it, oldest first."""

    key: dict[str, Any]
    context: dict[str, Any]
    runs: list[RunInfo]
    medians_ms: list[float]
    ci_low_ms: list[float]
    ci_high_ms: list[float]
    steps: list[HistoryStep]
    latest: SampleComparison | None  # the new run vs its baseline, with a bootstrap CI
    shift_index: int | None  # run index where the latest level shift began
    baseline_median_ms: float | None  # the file baseline's median, when a file is used
    noisy: bool = False  # the new run's samples have IQR/median > 10%: read the verdict with care
    #: the new run's measurement is contended (docs/noise.md): never a regression, status "contended"
    contended: bool = False

    @property
    def label(self) -> str:
        return key_label(self.key)

    @property
    def status(self) -> str:
        if self.contended and self.steps and self.steps[-1].status != "no-baseline":
            return "contended"
        return self.steps[-1].status if self.steps else "no-baseline"

    @property
    def shift_run(self) -> RunInfo | None:
        return self.runs[self.shift_index] if self.shift_index is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "context": self.context,
            "status": self.status,
            "runs": [r.run_id for r in self.runs],
            "created_at": [r.created_at for r in self.runs],
            "git_commits": [r.git_commit for r in self.runs],
            "medians_ms": self.medians_ms,
            "ci_low_ms": self.ci_low_ms,
            "ci_high_ms": self.ci_high_ms,
            "statuses": [s.status for s in self.steps],
            "latest": self.latest.to_dict() if self.latest else None,
            "shift_run": self.shift_run.run_id if self.shift_run else None,
            "baseline_median_ms": self.baseline_median_ms,
            "noisy": self.noisy,
            "contended": self.contended,
        }


@dataclass
class NightlyResult:
    """Everything the nightly job decided about one run."""

    run_id: str
    machine_id: str
    created_at: str
    git_commit: str | None
    baseline: str  # "window of N previous runs" or the file path
    window: int
    threshold: float
    alpha: float
    keys: list[KeyHistory]
    missing: list[str] = field(default_factory=list)  # keys in history but not in this run
    out_dir: Path | None = None
    #: points of this run that crashed or could not be measured ("label: reason")
    failed: list[str] = field(default_factory=list)
    #: the run's machine-speed canary against the machine's history, and what was normalised
    machine_speed: str | None = None
    #: the run-to-run term that sets the bar while the window is too short for its own margin
    run_to_run: str | None = None

    @property
    def contended(self) -> list[KeyHistory]:
        return [k for k in self.keys if k.status == "contended"]

    @property
    def confirmed(self) -> list[KeyHistory]:
        return [k for k in self.keys if k.status == "regression"]

    @property
    def suspects(self) -> list[KeyHistory]:
        return [k for k in self.keys if k.status == "suspect"]

    @property
    def improvements(self) -> list[KeyHistory]:
        return [k for k in self.keys if k.status == "improvement"]

    @property
    def exit_code(self) -> int:
        # A point that crashed tonight is a failure of the job, not "no regression".
        return 1 if (self.confirmed or self.failed) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "machine_id": self.machine_id,
            "created_at": self.created_at,
            "git_commit": self.git_commit,
            "baseline": self.baseline,
            "window": self.window,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "confirm_runs": CONFIRM_RUNS,
            "exit_code": self.exit_code,
            "failed": list(self.failed),
            "confirmed": [k.label for k in self.confirmed],
            "suspects": [k.label for k in self.suspects],
            "improvements": [k.label for k in self.improvements],
            "missing": self.missing,
            "contended": [k.label for k in self.contended],
            "machine_speed": self.machine_speed,
            "run_to_run": self.run_to_run,
            "keys": [k.to_dict() for k in self.keys],
        }
