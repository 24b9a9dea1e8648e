"""Step detection: where a level shift began in a series of per-run medians."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from harness.compare.samples import (
    DEFAULT_THRESHOLD,
)
from harness.errors import UserError


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


def last_shift(
    values: Sequence[float], min_effect: float = DEFAULT_THRESHOLD, z: float = 3.0
) -> int | None:
    """Index of the run where the most recent level shift began, or None."""
    cps = change_points(values, min_effect, z)
    return cps[-1] if cps else None
