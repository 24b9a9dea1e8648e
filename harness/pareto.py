"""Pure Pareto analysis: non-dominated sets, per-group frontiers, frontier comparison.

No I/O. Inputs are arrays or DataFrames, outputs are small frozen dataclasses.

Conventions
-----------
* An objective is ``(column, "max" | "min")``; the default is maximise ``avg5``, minimise
  ``ttft_ms`` (the paper's Figs. 1 and 4).
* Internally every objective is turned into a minimisation (``max`` columns are negated).
* A point is dominated when another point is no worse in every objective and strictly
  better in at least one. Exact duplicates therefore never dominate each other: **all
  copies of a non-dominated point are kept** (a sweep that measured the same configuration
  twice shows both rows; callers that want one can drop duplicates first).
* Rows with NaN in any objective are excluded and counted in ``excluded_nan``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.errors import UserError, suggest

Objective = tuple[str, str]
DEFAULT_OBJECTIVES: tuple[Objective, ...] = (("avg5", "max"), ("ttft_ms", "min"))
_DIRECTIONS = ("max", "min")


@dataclass(frozen=True)
class FrontResult:
    """Non-dominated subset of some points.

    ``front`` holds row positions (0-based, like ``DataFrame.iloc``) in ascending order;
    ``mask`` is the same set as a boolean array over all rows; ``excluded_nan`` counts rows
    dropped because an objective was NaN.
    """

    front: np.ndarray
    mask: np.ndarray
    excluded_nan: int
    objectives: tuple[Objective, ...]

    def __len__(self) -> int:
        return int(self.front.size)


def _check_objectives(
    objectives: Sequence[Objective], columns: Sequence[str] | None
) -> tuple[Objective, ...]:
    objs = tuple((str(c), str(d).lower()) for c, d in objectives)
    if len(objs) < 2:
        raise UserError(f"need at least two objectives, got {len(objs)}")
    for col, direction in objs:
        if direction not in _DIRECTIONS:
            raise UserError(
                f"objective {col!r}: direction must be 'max' or 'min', not {direction!r}"
            )
        if columns is not None and col not in columns:
            raise UserError(suggest(col, columns, "objective"))
    return objs


def _as_minimisation(points: np.ndarray | pd.DataFrame, objs: tuple[Objective, ...]) -> np.ndarray:
    """(n, k) float array where smaller is better in every column."""
    if isinstance(points, pd.DataFrame):
        arr = np.column_stack(
            [pd.to_numeric(points[c], errors="coerce").to_numpy(dtype=float) for c, _ in objs]
        )
    else:
        arr = np.asarray(points, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != len(objs):
            raise ValueError(f"points must be (n, {len(objs)}), got shape {arr.shape}")
        arr = arr.copy()
    for j, (_, direction) in enumerate(objs):
        if direction == "max":
            arr[:, j] = -arr[:, j]
    return arr


def _front_2d(a: np.ndarray) -> np.ndarray:
    """Boolean mask of non-dominated rows of an (n, 2) minimisation array without NaN.

    Sort by a0 and split into groups of equal a0. A row survives if it has the smallest a1
    of its group (else a same-a0 row beats it) and an a1 strictly below every a1 seen in
    earlier groups (else a row with smaller a0 is at least as good). Exact copies share
    both properties, so all of them survive. One O(n log n) sort plus O(n) sweeps; a plain
    argsort is used because np.lexsort is ~8x slower on a million rows.
    """
    n = a.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(a[:, 0])
    x, y = a[order, 0], a[order, 1]
    starts = np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1])))
    sizes = np.diff(np.append(starts, n))
    group_min = np.minimum.reduceat(y, starts)
    before = np.empty_like(group_min)
    before[0] = np.inf
    np.minimum.accumulate(group_min[:-1], out=before[1:])
    keep_sorted = (y == np.repeat(group_min, sizes)) & (y < np.repeat(before, sizes))
    mask = np.zeros(n, dtype=bool)
    mask[order] = keep_sorted
    return mask


def _front_nd(a: np.ndarray) -> np.ndarray:
    """Non-dominated mask for k >= 3 objectives: lexicographic sort + check against the front.

    A dominator is lexicographically smaller than the point it dominates, so scanning in
    lexicographic order never has to remove a point already accepted. O(n * |front|).
    """
    n = a.shape[0]
    order = np.lexsort(a.T[::-1])
    kept: list[int] = []
    front = np.empty((0, a.shape[1]))
    for i in order:
        p = a[i]
        if front.shape[0]:
            no_worse = np.all(front <= p, axis=1)
            strictly = np.any(front < p, axis=1)
            if np.any(no_worse & strictly):
                continue
        kept.append(int(i))
        front = np.vstack([front, p])
    mask = np.zeros(n, dtype=bool)
    mask[kept] = True
    return mask


def pareto_front(
    points: np.ndarray | pd.DataFrame,
    objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
) -> FrontResult:
    """Non-dominated set of ``points`` under ``objectives``.

    ``points`` is a DataFrame (objectives name its columns) or an ``(n, k)`` array whose
    column ``j`` is objective ``j`` (the names are then only labels). Two objectives take
    O(n log n); more take O(n * front size). See the module docstring for ties, duplicates
    and NaN.
    """
    columns = list(points.columns) if isinstance(points, pd.DataFrame) else None
    objs = _check_objectives(objectives, columns)
    a = _as_minimisation(points, objs)
    valid = ~np.isnan(a).any(axis=1)
    sub = a[valid]
    sub_mask = _front_2d(sub) if len(objs) == 2 else _front_nd(sub)
    mask = np.zeros(a.shape[0], dtype=bool)
    mask[np.flatnonzero(valid)[sub_mask]] = True
    return FrontResult(
        front=np.flatnonzero(mask), mask=mask, excluded_nan=int((~valid).sum()), objectives=objs
    )


@dataclass(frozen=True)
class GroupFronts:
    """Frontier per group value and over all rows (positions index the input DataFrame)."""

    group: str
    groups: dict[str, FrontResult]
    overall: FrontResult


def fronts_by_group(
    df: pd.DataFrame,
    group: str = "encoder",
    objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
) -> GroupFronts:
    """Pareto front of each ``group`` value (e.g. each encoder) and of all rows together."""
    if group not in df.columns:
        raise UserError(suggest(group, df.columns, "group column"))
    overall = pareto_front(df, objectives)
    keys = df[group].astype(str).to_numpy()
    out: dict[str, FrontResult] = {}
    for g in sorted(set(keys)):
        pos = np.flatnonzero(keys == g)
        res = pareto_front(df.iloc[pos], objectives)
        mask = np.zeros(len(df), dtype=bool)
        mask[pos[res.front]] = True
        out[g] = FrontResult(np.flatnonzero(mask), mask, res.excluded_nan, res.objectives)
    return GroupFronts(group=group, groups=out, overall=overall)


# --------------------------------------------------------------------------- frontier curves


@dataclass(frozen=True)
class Staircase:
    """A 2-D accuracy-vs-TTFT frontier as a step function, sorted by TTFT ascending.

    ``best_accuracy(t)`` is the best accuracy reachable with TTFT <= t (non-decreasing);
    ``ttft_needed(y)`` the smallest TTFT that reaches accuracy >= y.
    """

    ttft: np.ndarray
    accuracy: np.ndarray

    def best_accuracy(self, t: np.ndarray | float) -> np.ndarray:
        i = np.searchsorted(self.ttft, np.asarray(t, dtype=float), side="right") - 1
        return np.where(i >= 0, self.accuracy[np.clip(i, 0, None)], np.nan)

    def ttft_needed(self, y: np.ndarray | float) -> np.ndarray:
        i = np.searchsorted(self.accuracy, np.asarray(y, dtype=float), side="left")
        ok = i < self.accuracy.size
        return np.where(ok, self.ttft[np.clip(i, 0, self.accuracy.size - 1)], np.nan)


def staircase(accuracy: np.ndarray, ttft: np.ndarray) -> Staircase:
    """Frontier step function of (accuracy max, TTFT min) points; NaN rows are ignored.

    Duplicates collapse to one step; on the front, accuracy strictly increases with TTFT.
    """
    acc = np.asarray(accuracy, dtype=float)
    t = np.asarray(ttft, dtype=float)
    res = pareto_front(np.column_stack([acc, t]), (("accuracy", "max"), ("ttft", "min")))
    pts = np.unique(np.column_stack([t[res.front], acc[res.front]]), axis=0)
    return Staircase(ttft=pts[:, 0], accuracy=pts[:, 1])


def hypervolume_2d(
    points: np.ndarray,
    reference: Sequence[float],
    objectives: Sequence[Objective] = (("accuracy", "max"), ("ttft", "min")),
) -> float:
    """Exact area dominated by ``points`` (n, 2) and bounded by ``reference``.

    ``reference`` is in the same units and directions as the points (e.g. the lowest
    accuracy and the highest TTFT of interest); points not strictly better than it in both
    objectives contribute nothing.
    """
    objs = _check_objectives(objectives, None)
    if len(objs) != 2:
        raise ValueError("hypervolume_2d needs exactly two objectives")
    a = _as_minimisation(np.asarray(points, dtype=float).reshape(-1, 2), objs)
    r = _as_minimisation(np.asarray(reference, dtype=float).reshape(1, 2), objs)[0]
    a = a[~np.isnan(a).any(axis=1)]
    a = a[(a[:, 0] < r[0]) & (a[:, 1] < r[1])]
    if a.shape[0] == 0:
        return 0.0
    f = a[_front_2d(a)]
    f = f[np.lexsort((f[:, 1], f[:, 0]))]
    # On the front a0 rises while a1 falls: each point owns a slab up to the next a0.
    x_next = np.append(f[1:, 0], r[0])
    return float(np.sum((x_next - f[:, 0]) * (r[1] - f[:, 1])))


@dataclass(frozen=True)
class FrontierComparison:
    """How frontier A (e.g. a new encoder) compares with frontier B (e.g. FastViTHD).

    Speedup is ``TTFT_B / TTFT_A`` at equal accuracy (> 1: A is faster); accuracy gain is
    ``acc_A - acc_B`` at equal TTFT (> 0: A is more accurate). Both are evaluated on the
    step functions over the range where both frontiers exist: speedup on an even grid of
    accuracy levels, gain on an even grid of log-TTFT. ``None`` when there is no overlap.
    Hypervolumes use accuracy x log10(TTFT) (the report's axes) against ``reference``.
    """

    speedup_best: float | None
    speedup_median: float | None
    speedup_at_accuracy: float | None  # accuracy level where the best speedup occurs
    gain_best: float | None
    gain_median: float | None
    gain_at_ttft_ms: float | None  # TTFT where the best gain occurs
    accuracy_overlap: tuple[float, float] | None
    ttft_overlap_ms: tuple[float, float] | None
    hypervolume_a: float
    hypervolume_b: float
    reference: tuple[float, float]  # (accuracy, ttft_ms)
    n_front_a: int
    n_front_b: int
    notes: tuple[str, ...] = field(default_factory=tuple)


def _xy(data: pd.DataFrame | np.ndarray, acc: str, ttft: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, pd.DataFrame):
        for c in (acc, ttft):
            if c not in data.columns:
                raise UserError(suggest(c, data.columns, "column"))
        return (
            pd.to_numeric(data[acc], errors="coerce").to_numpy(float),
            pd.to_numeric(data[ttft], errors="coerce").to_numpy(float),
        )
    arr = np.asarray(data, dtype=float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def compare_frontiers(
    a: pd.DataFrame | np.ndarray,
    b: pd.DataFrame | np.ndarray,
    *,
    accuracy: str = "avg5",
    ttft: str = "ttft_ms",
    reference: tuple[float, float] | None = None,
    grid: int = 512,
) -> FrontierComparison:
    """Compare the accuracy-vs-TTFT frontiers of two point sets (A against baseline B).

    ``a``/``b`` are DataFrames with ``accuracy`` and ``ttft`` columns, or (n, 2) arrays of
    (accuracy, ttft_ms). ``reference`` defaults to (lowest accuracy, highest TTFT) over both
    sets, so the two hypervolumes are comparable.
    """
    fa = staircase(*_xy(a, accuracy, ttft))
    fb = staircase(*_xy(b, accuracy, ttft))
    notes: list[str] = []
    if fa.ttft.size == 0 or fb.ttft.size == 0:
        raise UserError(
            "cannot compare frontiers: one side has no point with both accuracy and TTFT"
        )
    if np.any(fa.ttft <= 0) or np.any(fb.ttft <= 0):
        raise UserError("TTFT must be positive to compare frontiers in log-TTFT")
    if reference is None:
        reference = (
            float(min(fa.accuracy.min(), fb.accuracy.min())),
            float(max(fa.ttft.max(), fb.ttft.max())),
        )
    # Hypervolume in (accuracy, log10 TTFT): equal ratios of TTFT weigh equally, as on the plot.
    log_ref = (reference[0], float(np.log10(reference[1])))
    hv = [
        hypervolume_2d(np.column_stack([f.accuracy, np.log10(f.ttft)]), log_ref) for f in (fa, fb)
    ]

    speed: tuple[float | None, float | None, float | None] = (None, None, None)
    y_lo, y_hi = (
        max(fa.accuracy.min(), fb.accuracy.min()),
        min(fa.accuracy.max(), fb.accuracy.max()),
    )
    acc_overlap = (float(y_lo), float(y_hi)) if y_lo <= y_hi else None
    if acc_overlap:
        ys = np.linspace(y_lo, y_hi, grid)
        ratio = fb.ttft_needed(ys) / fa.ttft_needed(ys)
    if acc_overlap and np.isfinite(ratio).any():
        k = int(np.nanargmax(ratio))
        speed = (float(ratio[k]), float(np.nanmedian(ratio)), float(ys[k]))
    elif acc_overlap:
        notes.append("no accuracy both frontiers reach: no speedup at equal accuracy")
    else:
        notes.append("accuracy ranges do not overlap: no speedup at equal accuracy")

    gain: tuple[float | None, float | None, float | None] = (None, None, None)
    t_lo, t_hi = max(fa.ttft.min(), fb.ttft.min()), min(fa.ttft.max(), fb.ttft.max())
    t_overlap = (float(t_lo), float(t_hi)) if t_lo <= t_hi else None
    if t_overlap:
        # clipped: 10 ** log10(t) can land a hair below t, off a one-point staircase
        ts = np.clip(np.logspace(np.log10(t_lo), np.log10(t_hi), grid), t_lo, t_hi)
        diff = fa.best_accuracy(ts) - fb.best_accuracy(ts)
    if t_overlap and np.isfinite(diff).any():
        k = int(np.nanargmax(diff))
        gain = (float(diff[k]), float(np.nanmedian(diff)), float(ts[k]))
    elif t_overlap:
        notes.append("no TTFT at which both frontiers have a point: no accuracy gain at equal TTFT")
    else:
        notes.append("TTFT ranges do not overlap: no accuracy gain at equal TTFT")

    return FrontierComparison(
        speedup_best=speed[0],
        speedup_median=speed[1],
        speedup_at_accuracy=speed[2],
        gain_best=gain[0],
        gain_median=gain[1],
        gain_at_ttft_ms=gain[2],
        accuracy_overlap=acc_overlap,
        ttft_overlap_ms=t_overlap,
        hypervolume_a=hv[0],
        hypervolume_b=hv[1],
        reference=(float(reference[0]), float(reference[1])),
        n_front_a=int(fa.ttft.size),
        n_front_b=int(fb.ttft.size),
        notes=tuple(notes),
    )
