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
from dataclasses import asdict, dataclass, field
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
KEY_FIELDS: tuple[str, ...] = ("kind", "name", "resolution", "tiling", "tokens", "prompt_tokens", "in_dim")
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


def check_sample_sizes(n_baseline: int, n_candidate: int, min_samples: int = MIN_SAMPLES, where: str = "") -> None:
    """Refuse a test that cannot have power (and would otherwise read as 'no change')."""
    if n_baseline < min_samples or n_candidate < min_samples:
        at = f" for {where}" if where else ""
        raise UserError(
            f"too few samples{at}: baseline has {n_baseline}, candidate {n_candidate}, need at least "
            f"{min_samples} each for a significance test; measure with more rounds "
            "(e.g. the 'standard' or 'rigorous' protocol)"
        )


def mann_whitney_p(baseline: Sequence[float] | np.ndarray, candidate: Sequence[float] | np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (asymptotic with tie and continuity correction)."""
    from scipy.stats import mannwhitneyu

    b, c = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if np.ptp(np.concatenate([b, c])) == 0.0:
        return 1.0  # all samples identical: nothing to test (scipy would return nan)
    # 'asymptotic' rather than 'auto': the exact method is O(n^2) memory for large samples and
    # the normal approximation is accurate from ~10 samples per side.
    method = "exact" if max(b.size, c.size) <= 8 and np.unique(np.concatenate([b, c])).size == b.size + c.size else "asymptotic"
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


def classify(ratio: float, p_value: float, threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA) -> Verdict:
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
) -> SampleComparison:
    """Compare raw samples (ms). ``n_boot=0`` skips the bootstrap CI (reported as nan).

    Raises :class:`UserError` when either side has fewer than ``min_samples`` samples.
    """
    _check_settings(threshold, alpha)
    b = _as_samples(baseline, "baseline")
    c = _as_samples(candidate, "candidate")
    check_sample_sizes(b.size, c.size, min_samples, where)
    mb, mc = float(np.median(b)), float(np.median(c))
    ratio = mc / mb
    p = mann_whitney_p(b, c)
    lo, hi = ratio_of_medians_ci(b, c, confidence, n_boot, seed) if n_boot > 0 else (math.nan, math.nan)
    verdict = classify(ratio, p, threshold, alpha)
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
    )


def _check_settings(threshold: float, alpha: float) -> None:
    if not (isinstance(threshold, (int, float)) and 0.0 <= threshold < 10.0):
        raise UserError(f"threshold must be a fraction like 0.05 (5%), got {threshold!r}")
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise UserError(f"alpha must be in (0, 1), e.g. 0.002, got {alpha!r}")


# --------------------------------------------------------------------------------------------
# Like with like
# --------------------------------------------------------------------------------------------


def differing_fields(a: Mapping[str, Any], b: Mapping[str, Any], fields: Iterable[str] = CONTEXT_FIELDS) -> list[str]:
    """Names of ``fields`` whose values differ between ``a`` and ``b`` (as strings)."""
    return [f for f in fields if str(a.get(f)) != str(b.get(f))]


def check_comparable(a: Mapping[str, Any], b: Mapping[str, Any], what: str = "baseline and candidate") -> None:
    """Raise a UserError listing every context field (machine, backend, ...) that differs."""
    diff = differing_fields(a, b)
    if diff:
        shown = "; ".join(f"{f}: {a.get(f)!r} vs {b.get(f)!r}" for f in diff)
        raise UserError(
            f"{what} are not comparable, they differ in {', '.join(diff)} ({shown}); "
            "compare runs of the same machine, backend, device, dtype and protocol"
        )


# --------------------------------------------------------------------------------------------
# Tables of measurements (store rows / exports)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyComparison:
    """One measured key (see KEY_FIELDS) of a table comparison."""

    key: dict[str, Any]
    context: dict[str, Any]
    result: SampleComparison

    @property
    def label(self) -> str:
        return key_label(self.key)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "context": self.context, **self.result.to_dict()}


@dataclass(frozen=True)
class TableComparison:
    """All keys of a baseline-vs-candidate comparison, plus keys only one side has."""

    rows: list[KeyComparison]
    only_baseline: list[str] = field(default_factory=list)
    only_candidate: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD
    alpha: float = DEFAULT_ALPHA

    @property
    def regressions(self) -> list[KeyComparison]:
        return [r for r in self.rows if r.result.verdict == "regression"]

    @property
    def improvements(self) -> list[KeyComparison]:
        return [r for r in self.rows if r.result.verdict == "improvement"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "alpha": self.alpha,
            "regressions": len(self.regressions),
            "improvements": len(self.improvements),
            "rows": [r.to_dict() for r in self.rows],
            "only_baseline": self.only_baseline,
            "only_candidate": self.only_candidate,
            "skipped": self.skipped,
        }


def key_label(key: Mapping[str, Any]) -> str:
    """Short human label of a measurement key, e.g. ``encoder fastvithd@1024 2x2+overview``."""
    parts = [str(key.get("kind", "")), str(key.get("name", ""))]
    res, tiling = key.get("resolution", 0), key.get("tiling", "none")
    tokens, prompt = key.get("tokens", 0), key.get("prompt_tokens", 0)
    if res not in (0, "0", None):
        parts[-1] += f"@{res}"
    if tiling not in ("none", None, ""):
        parts.append(str(tiling))
    if key.get("kind") == "prefill" or prompt not in (0, "0", None):
        parts.append(f"tok={tokens}+{prompt}")
    return " ".join(p for p in parts if p)


def _normalise(rows: Any) -> list[dict[str, Any]]:
    """Rows as dicts with every key/context field present (missing ones get neutral values)."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        records = rows.to_dict("records")
    else:
        records = [dict(r) for r in rows]
    defaults: dict[str, Any] = {"kind": "encoder", "resolution": 0, "tiling": "none", "tokens": 0,
                                "prompt_tokens": 0, "in_dim": 0, "backend": "none", "device": "none", "dtype": "none",
                                "protocol": "none", "machine_id": "unknown", "status": "ok"}
    out = []
    for r in records:
        for k, v in defaults.items():
            if r.get(k) is None or (isinstance(r.get(k), float) and math.isnan(r[k])):
                r[k] = v
        for k in ("resolution", "tokens", "prompt_tokens", "in_dim"):
            try:
                r[k] = int(r[k])
            except (TypeError, ValueError):
                pass
        if "name" not in r:
            raise UserError("measurement rows need a 'name' column")
        out.append(r)
    return out


def _samples(r: Mapping[str, Any]) -> list[float]:
    s = r.get("samples_ms")
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return []
    if isinstance(s, str):
        import json

        s = json.loads(s)
    return [float(v) for v in s]


def group_rows(rows: Any) -> dict[tuple, dict[tuple, list[dict[str, Any]]]]:
    """``{key tuple: {context tuple: [rows]}}`` for rows with status 'ok'."""
    groups: dict[tuple, dict[tuple, list[dict[str, Any]]]] = {}
    for r in _normalise(rows):
        if str(r.get("status", "ok")) != "ok":
            continue
        k = tuple(r[f] for f in KEY_FIELDS)
        c = tuple(str(r[f]) for f in CONTEXT_FIELDS)
        groups.setdefault(k, {}).setdefault(c, []).append(r)
    return groups


def _one_machine(rows: list[dict[str, Any]], side: str) -> None:
    machines = sorted({str(r["machine_id"]) for r in rows})
    if len(machines) > 1:
        raise UserError(
            f"the {side} mixes runs from different machines ({', '.join(machines)}); "
            "pick runs from one machine"
        )


def compare_tables(
    baseline: Any,
    candidate: Any,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    *,
    min_samples: int = MIN_SAMPLES,
    n_boot: int = 2000,
) -> TableComparison:
    """Compare two tables of measurement rows (DataFrame or dicts with ``samples_ms`` lists).

    The baseline may hold several runs (a window): their samples are pooled per key. Rows
    are paired by KEY_FIELDS; a key present on both sides with a different context
    (machine, backend, device, dtype, protocol) is refused, as is a side mixing machines.
    """
    _check_settings(threshold, alpha)
    b_rows, c_rows = _normalise(baseline), _normalise(candidate)
    if not b_rows:
        raise UserError("the baseline has no measurements")
    if not c_rows:
        raise UserError("the candidate has no measurements")
    _one_machine(b_rows, "baseline")
    _one_machine(c_rows, "candidate")
    check_comparable({"machine_id": b_rows[0]["machine_id"]}, {"machine_id": c_rows[0]["machine_id"]},
                     "baseline and candidate")
    bg, cg = group_rows(b_rows), group_rows(c_rows)
    skipped = sorted({key_label(r) for r in b_rows + c_rows if str(r.get("status", "ok")) != "ok"})

    out: list[KeyComparison] = []
    for k in sorted(set(bg) & set(cg), key=lambda t: tuple(str(x) for x in t)):
        common = sorted(set(bg[k]) & set(cg[k]))
        key = dict(zip(KEY_FIELDS, k, strict=True))
        if not common:
            b_ctx = dict(zip(CONTEXT_FIELDS, sorted(bg[k])[0], strict=True))
            c_ctx = dict(zip(CONTEXT_FIELDS, sorted(cg[k])[0], strict=True))
            check_comparable(b_ctx, c_ctx, f"baseline and candidate of {key_label(key)}")
        for ctx in common:
            b = [s for r in bg[k][ctx] for s in _samples(r)]
            c = [s for r in cg[k][ctx] for s in _samples(r)]
            label = key_label(key) + (f" ({ctx[1]}/{ctx[3]})" if len(common) > 1 else "")
            res = compare_samples(b, c, threshold, alpha, min_samples=min_samples, n_boot=n_boot, where=label)
            out.append(KeyComparison(key=key, context=dict(zip(CONTEXT_FIELDS, ctx, strict=True)), result=res))
    if not out:
        raise UserError(
            "baseline and candidate have no measurement in common (same kind, name, resolution, "
            "tiling, tokens); nothing to compare"
        )
    return TableComparison(
        rows=out,
        only_baseline=sorted(key_label(dict(zip(KEY_FIELDS, k, strict=True))) for k in set(bg) - set(cg)),
        only_candidate=sorted(key_label(dict(zip(KEY_FIELDS, k, strict=True))) for k in set(cg) - set(bg)),
        skipped=skipped,
        threshold=threshold,
        alpha=alpha,
    )


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
    threshold_used: float = DEFAULT_THRESHOLD  # the threshold, or the window's noise margin if larger

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "status": self.status,
            "baseline_runs": list(self.baseline_runs),
            "threshold_used": self.threshold_used,
            "comparison": self.comparison.to_dict() if self.comparison else None,
        }


def night_to_night_margin(run_medians: Sequence[float], quantile: float = DEFAULT_NOISE_QUANTILE) -> float:
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
    slowdown must clear that scatter too.
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
            used = max(threshold, night_to_night_margin([float(np.median(runs[j])) for j in base_idx],
                                                        noise_quantile))
        cmp = compare_samples(base, samples, used, alpha, min_samples=min_samples, n_boot=n_boot,
                              where=f"run {i}")
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


def change_points(
    values: Sequence[float],
    min_effect: float = DEFAULT_THRESHOLD,
    z: float = 3.0,
    min_size: int = 1,
) -> list[int]:
    """Indices where a new level begins in a series of per-run medians (binary segmentation).

    Works on ``log(values)`` so effects are relative. A segment is split at the index that
    minimises the two-level least-squares error if (a) the two levels differ by at least
    ``min_effect`` (relative) and (b) the step is ``z`` standard errors from zero, using the
    pooled within-level scatter (levels with no scatter pass (b) on (a) alone). Recurses into
    both halves. Returns sorted indices; ``[]`` means one level.
    """
    v = np.asarray(values, dtype=float)
    if v.size and not (np.isfinite(v).all() and (v > 0).all()):
        raise UserError("change_points needs positive, finite values")
    y = np.log(v)
    found: list[int] = []

    def split(lo: int, hi: int) -> None:
        n = hi - lo
        if n < 2 * min_size:
            return
        seg = y[lo:hi]
        csum, csum2 = np.cumsum(seg), np.cumsum(seg**2)
        best_k, best_sse = -1, math.inf
        for k in range(min_size, n - min_size + 1):
            n1, n2 = k, n - k
            s1, s2 = csum[k - 1], csum[-1] - csum[k - 1]
            q1, q2 = csum2[k - 1], csum2[-1] - csum2[k - 1]
            sse = (q1 - s1 * s1 / n1) + (q2 - s2 * s2 / n2)
            if sse < best_sse - 1e-15:
                best_k, best_sse = k, sse
        if best_k < 0:
            return
        left, right = seg[:best_k], seg[best_k:]
        step = float(right.mean() - left.mean())
        if abs(math.expm1(step)) < min_effect:
            return
        dof = n - 2
        if dof > 0 and best_sse > 1e-18:
            s = math.sqrt(max(best_sse, 0.0) / dof)
            se = s * math.sqrt(1.0 / left.size + 1.0 / right.size)
            if abs(step) / se < z:
                return
        found.append(lo + best_k)
        split(lo, lo + best_k)
        split(lo + best_k, hi)

    split(0, int(y.size))
    return sorted(found)


def last_shift(values: Sequence[float], min_effect: float = DEFAULT_THRESHOLD, z: float = 3.0) -> int | None:
    """Index of the run where the most recent level shift began, or None."""
    cps = change_points(values, min_effect, z)
    return cps[-1] if cps else None


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
        return {"hits": self.hits, "trials": self.trials, "rate": self.rate, "ci_low": lo, "ci_high": hi}

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
        lines.append(f"nightly (window {self.window}, confirm {CONFIRM_RUNS}, noise margin {margin}): confirmed false alarms "
                     f"{self.nightly_false_alarm}; suspect nights {self.nightly_suspect}")
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
        raise UserError(f"need at least {need_pair} rounds for pairs of {per}-round nights, got {len(rs)}")
    for i, r in enumerate(rs):
        check_sample_sizes(r.size, r.size, MIN_SAMPLES, f"round {i}")
    rng = np.random.default_rng(seed)

    def nights(count: int) -> list[np.ndarray]:
        pick = rng.permutation(len(rs))[: count * per]
        return [np.concatenate([rs[j] for j in pick[k * per : (k + 1) * per]]) for k in range(count)]

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
                thr = max(threshold, night_to_night_margin([float(np.median(h)) for h in hist], noise_quantile))
            n_trials += 1
            v1, v2 = verdict(base, x, thr), verdict(base, y, thr)
            n_fa += v1 == "regression" and v2 == "regression"
            n_sus += v1 == "regression"
            for s in slowdowns:
                n_det[s] += (verdict(base, x * (1.0 + s), thr) == "regression"
                             and verdict(base, y * (1.0 + s), thr) == "regression")
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
