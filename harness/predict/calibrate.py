"""Calibration: fit a profile's efficiency factors and per-op overhead to known latencies.

The model of one part (encoder, or projector + prefill) on one unit is linear in its work:

    t_ms = k_dense * dense/peak + k_dw * dw/peak + k_attn * attn/peak
         + k_w * weight_bytes/bw + k_act * act_bytes/bw + k_op * ops

(seconds converted to ms; ``k_op`` in microseconds per operator). Each ``k`` >= 0 is an
inverse efficiency (``1/k`` of peak). A known row is an encoder latency, a prefill (or
projector) latency or a whole TTFT (both parts), so the paper's encoder rows and its TTFT
rows constrain one joint non-negative least-squares problem. Rows are weighted by
``1/known`` (relative error) and the fit is made robust by iteratively reweighted NNLS with
Huber weights; rows whose final relative residual is far outside the rest are reported as
outliers (they keep a small weight, they are never silently fitted).

Uncalibrated profiles use a plain roofline with fixed default efficiencies
(:data:`DEFAULT_EFFICIENCY`) and never claim an error band.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.errors import UserError
from harness.predict.costmodel import FEATURES, Cost
from harness.predict.profiles import PARTS, Profile

#: Column names: ``<part>.<feature>``.
COLUMNS: tuple[str, ...] = tuple(f"{p}.{f}" for p in PARTS for f in FEATURES)
#: Fraction of peak assumed by the uncalibrated roofline.
DEFAULT_EFFICIENCY = {"dense_flops": 0.5, "dw_flops": 0.1, "attn_flops": 0.3, "bandwidth": 0.7}
DEFAULT_OP_US = 10.0
HUBER_C = 1.345
OUTLIER_Z = 3.0
OUTLIER_FLOOR = 0.25  # a row is an outlier only if it is also >= 25% off


@dataclass(frozen=True)
class KnownRow:
    """One known latency: ``part`` is 'encoder', 'prefill' or 'ttft'."""

    label: str
    part: str
    known_ms: float
    encoder: Cost | None = None
    prefill: Cost | None = None  # projector + prefill
    family: str = ""
    source: str = ""
    key: dict[str, Any] = field(default_factory=dict)


def part_seconds(cost: Cost, profile: Profile, part: str) -> np.ndarray:
    """The six regressors (ms at k = 1) of ``cost`` on ``profile``'s ``part``."""
    u = profile.parts[part]
    b = u.bytes_per_elem
    return np.array(
        [
            cost.dense_flops / u.peak_flops * 1e3,
            cost.dw_flops / u.peak_flops * 1e3,
            cost.attn_flops / u.peak_flops * 1e3,
            cost.weight_elems * b / u.bandwidth * 1e3,
            cost.act_elems * b / u.bandwidth * 1e3,
            cost.ops * 1e-3,
        ]
    )


def design_row(row: KnownRow, profile: Profile) -> np.ndarray:
    x = np.zeros(len(COLUMNS))
    n = len(FEATURES)
    if row.encoder is not None:
        x[:n] = part_seconds(row.encoder, profile, "encoder")
    if row.prefill is not None:
        x[n:] = part_seconds(row.prefill, profile, "prefill")
    return x


@dataclass
class Fit:
    """Fitted coefficients (one per column), and what the fit thought of its rows."""

    coef: np.ndarray
    rows: list[KnownRow]
    residuals: np.ndarray  # relative: predicted / known - 1
    weights: np.ndarray
    outliers: list[tuple[str, float]]  # (label, relative residual)
    active: list[str]

    def predict_row(self, row: KnownRow, profile: Profile) -> float:
        return float(design_row(row, profile) @ self.coef)

    def efficiencies(self) -> dict[str, float]:
        """Fitted coefficients by column; flops/bytes as fraction of peak, ops in us/op."""
        out: dict[str, float] = {}
        for name, k in zip(COLUMNS, self.coef, strict=True):
            if name not in self.active or k <= 0:
                continue  # a zero coefficient: the term explains nothing in these rows
            if name.endswith(".ops"):
                out[name.replace(".ops", ".us_per_op")] = float(k)
            else:
                out[name + ".efficiency"] = float(1.0 / k)
        return out


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls  # type: ignore[import-untyped]

    x, _ = nnls(a, b, maxiter=50 * a.shape[1])
    return np.asarray(x)


def fit_rows(rows: Sequence[KnownRow], profile: Profile, *, iterations: int = 30) -> Fit:
    """Robust NNLS (Huber IRLS on relative residuals). Too few rows is a UserError."""
    rows = list(rows)
    x = np.array([design_row(r, profile) for r in rows]) if rows else np.zeros((0, len(COLUMNS)))
    y = np.array([r.known_ms for r in rows])
    active = [j for j in range(len(COLUMNS)) if rows and np.any(x[:, j] > 0)]
    if len(rows) < len(active) + 1 or not rows:
        raise UserError(
            f"calibrating {profile.name} needs at least {len(active) + 1} known latencies for its "
            f"{len(active)} parameters, got {len(rows)}; measure more configurations (vlm-pareto sweep) or use it uncalibrated"
        )
    xa = x[:, active] / y[:, None]  # relative error: divide every row by its known value
    scale = np.maximum(xa.max(axis=0), 1e-30)
    xs = xa / scale
    w = np.ones(len(rows))
    coef_s = np.zeros(len(active))
    for _ in range(iterations):
        sw = np.sqrt(w)
        new = _nnls(xs * sw[:, None], sw)
        r = xs @ new - 1.0
        s = 1.4826 * float(np.median(np.abs(r - np.median(r))))
        s = max(s, 0.02)
        u = np.abs(r) / (HUBER_C * s)
        w = np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))
        if np.allclose(new, coef_s, rtol=1e-6, atol=1e-12):
            coef_s = new
            break
        coef_s = new
    coef = np.zeros(len(COLUMNS))
    coef[active] = coef_s / scale
    pred = x @ coef
    res = pred / y - 1.0
    s = max(1.4826 * float(np.median(np.abs(res - np.median(res)))), 0.02)
    outliers = [
        (rows[i].label, float(res[i]))
        for i in range(len(rows))
        if abs(res[i]) > max(OUTLIER_Z * s, OUTLIER_FLOOR)
    ]
    return Fit(coef, rows, res, w, outliers, [COLUMNS[j] for j in active])


def default_coef(profile: Profile) -> np.ndarray:
    """Coefficients of the uncalibrated roofline (fixed default efficiencies)."""
    e = DEFAULT_EFFICIENCY
    per_part = [
        1 / e["dense_flops"],
        1 / e["dw_flops"],
        1 / e["attn_flops"],
        1 / e["bandwidth"],
        0.25 / e["bandwidth"],
        DEFAULT_OP_US,
    ]
    return np.array(per_part * len(PARTS))
