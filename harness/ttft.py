"""TTFT = encoder + projector + prefill, composed from stored measurements (pure functions).

``compose_ttft`` joins store-format measurement rows (DESIGN.md) into the latency columns
of the joined-points table, carrying the uncertainty of the sum. ``fit_prefill_curve`` fits
prefill latency against token count so reports can draw the curve and the chooser can
interpolate; a measured point always wins over the fit (``prefill_at``).

Joins are strict: rows from different machines are never combined, and a projector row is
used only when its LLM, token count, backend, device, dtype and encoder channels match.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from harness.backends.base import EncoderExtra, PrefillExtra
from harness.errors import UserError
from harness.schema import TTFT_COLUMNS
from harness.stats import combine_intervals, sum_of_medians_ci

#: Keys an encoder row's ``extra`` may use for its output channel count (projector in_dim).
ENCODER_DIM_KEYS = ("out_dim", "channels", "embed_dim", "feature_dim")

Rows: TypeAlias = pd.DataFrame | Iterable[Mapping[str, Any]] | None

_P90_DRAWS = 4000


def _records(rows: Rows) -> list[dict[str, Any]]:
    if rows is None:
        return []
    recs: Iterable[Mapping[Any, Any]]
    if isinstance(rows, pd.DataFrame):
        recs = rows.to_dict("records")
    else:
        recs = [dict(r) for r in rows]
    out: list[dict[str, Any]] = []
    for rec in recs:
        r = {str(k): v for k, v in rec.items()}
        r["extra"] = _json(r.get("extra")) or {}
        samples = _json(r.get("samples_ms"))
        r["samples_ms"] = (
            [float(x) for x in samples] if isinstance(samples, (list, tuple, np.ndarray)) else []
        )
        if str(r.get("status", "ok")) == "ok" and _num(r.get("median_ms")) is not None:
            out.append(r)
    return out


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _latest(rows: list[dict[str, Any]], key_fields: Sequence[str]) -> list[dict[str, Any]]:
    """One row per key: the most recent (by created_at, else the last given)."""
    chosen: dict[tuple, tuple[Any, int, dict[str, Any]]] = {}
    for i, r in enumerate(rows):
        key = tuple(r.get(f) for f in key_fields)
        stamp = str(r.get("created_at") or "")
        if key not in chosen or (stamp, i) >= (chosen[key][0], chosen[key][1]):
            chosen[key] = (stamp, i, r)
    return [v[2] for v in chosen.values()]


def _encoder_dim(row: dict[str, Any]) -> int | None:
    for k in ENCODER_DIM_KEYS:
        v = _num(row["extra"].get(k))
        if v is not None:
            return int(v)
    return None


def _same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ma, mb = a.get("machine_id"), b.get("machine_id")
    return ma is None or mb is None or ma == mb


def _part(row: dict[str, Any]) -> tuple[float, float, float, float, list[float]]:
    med = float(row["median_ms"])
    lo = _num(row.get("ci_low_ms"))
    hi = _num(row.get("ci_high_ms"))
    p90 = _num(row.get("p90_ms"))
    return (
        med,
        med if lo is None else lo,
        med if hi is None else hi,
        med if p90 is None else p90,
        row["samples_ms"],
    )


def _in_dim(row: dict[str, Any]) -> float | None:
    # The store has an in_dim key column (0 = not applicable); older rows keep it in extra.
    v = _num(row.get("in_dim"))
    return v if v else _num(row["extra"].get("in_dim"))


def _projector_for(
    prefill: dict[str, Any], enc_dim: int | None, projectors: list[dict[str, Any]]
) -> tuple[tuple[float, float, float, float, list[float]], dict[str, Any] | None] | None:
    """(the projector part, its own row or None when it is the prefill's by-product)."""
    match_fields = ("name", "tokens", "backend", "device", "dtype")
    candidates = [
        q
        for q in projectors
        if all(q.get(f) == prefill.get(f) for f in match_fields)
        and _same_machine(q, prefill)
        and (enc_dim is None or _in_dim(q) in (None, enc_dim))
    ]
    dims = {_in_dim(q) for q in candidates}
    if candidates and len(dims) == 1:
        row = _latest(candidates, ("name",))[0]
        return _part(row), row
    # Fall back to the projector time recorded with the prefill, if its encoder dim fits.
    px = PrefillExtra.from_dict(prefill["extra"])
    ms, pdim = _num(px.projector_ms), _num(px.encoder_dim)
    if ms is not None and (enc_dim is None or pdim in (None, enc_dim)):
        return (ms, ms, ms, ms, []), None
    return None


def _interference(rows: Sequence[dict[str, Any]]) -> str:
    """The worst interference verdict of the measurements a point is composed of (the very
    rows joined, so one runtime's contended measurement never taints another's point)."""
    from harness.interference import verdict_of

    rank = {"clean": 0, "unknown": 1, "contended": 2}
    return max((verdict_of(r.get("extra")) for r in rows), key=rank.__getitem__)


def _paired(e: dict[str, Any], p: dict[str, Any]) -> bool:
    """Rows restricted to partners (``extra["pairs_with"]``: a VLM's vision and its own decoder)
    join only those partners; unrestricted rows join any."""
    ep, pp = e["extra"].get("pairs_with"), p["extra"].get("pairs_with")
    return (ep is None or p.get("name") in ep) and (pp is None or e.get("name") in pp)


def _p90_of_sum(parts: list[tuple[float, float, float, float, list[float]]]) -> float:
    if all(p[4] for p in parts):
        rng = np.random.default_rng(0)
        total = sum(rng.choice(np.asarray(p[4]), size=_P90_DRAWS) for p in parts)
        return float(np.quantile(total, 0.9))
    return float(sum(p[3] for p in parts))  # no samples: sum of p90s, an upper bound


def _peak_mem(e: dict[str, Any], p: dict[str, Any]) -> float:
    """The larger of the encoder's and the prefill's measured step peaks (bytes).

    Unknown (NaN) when either part did not report one, or when the prefill was layer-sampled:
    a k-layer model's memory says nothing about the full model's.
    """
    if bool(p.get("estimated")):
        return math.nan
    peaks: list[Any] = [e.get("peak_mem_bytes"), p.get("peak_mem_bytes")]
    if any(x is None or (isinstance(x, float) and math.isnan(x)) for x in peaks):
        return math.nan
    return float(max(peaks))


def compose_ttft(encoder_rows: Rows, projector_rows: Rows, prefill_rows: Rows) -> pd.DataFrame:
    """Join encoder, projector and prefill measurements into TTFT rows.

    An encoder row (``tokens`` visual tokens at a resolution and tiling) pairs with every
    prefill row of the same token count on the same machine (one TTFT row per pair). The
    projector comes from a matching projector row (see module docstring), else from the
    prefill row's ``extra["projector_ms"]``; if neither exists ``projector_ms`` is NaN and
    TTFT is encoder + prefill. ``ttft_ms`` is the sum of the parts' medians; its interval
    is a bootstrap of the sum when raw samples are present (``sum_of_medians_ci``), else the
    parts' intervals combined (``combine_intervals``). Only rows with status 'ok' are used.
    """
    enc = _latest(
        _records(encoder_rows),
        ("name", "resolution", "tiling", "tokens", "backend", "device", "dtype", "machine_id"),
    )
    pre = _latest(
        _records(prefill_rows),
        ("name", "tokens", "prompt_tokens", "backend", "device", "dtype", "machine_id"),
    )
    proj = _records(projector_rows)
    out: list[dict[str, Any]] = []
    for e in enc:
        enc_dim = _encoder_dim(e)
        for p in pre:
            if int(p["tokens"]) != int(e["tokens"]) or not _same_machine(e, p) or not _paired(e, p):
                continue
            e_part, p_part = _part(e), _part(p)
            found = _projector_for(p, enc_dim, proj)
            q_part, q_row = found if found else (None, None)
            parts = [e_part, p_part] + ([q_part] if q_part else [])
            verdict = _interference([e, p] + ([q_row] if q_row else []))
            if all(x[4] for x in parts):
                point, lo, hi = sum_of_medians_ci([x[4] for x in parts])
                point = sum(x[0] for x in parts)  # medians as stored; equal up to rounding
            else:
                point, lo, hi = combine_intervals([x[:3] for x in parts])
            runs = sorted({str(r.get("run_id")) for r in (e, p) if r.get("run_id") is not None})
            eb, pb = str(e.get("backend", "")), str(p.get("backend", ""))
            ex, px = EncoderExtra.from_dict(e["extra"]), PrefillExtra.from_dict(p["extra"])
            out.append(
                {
                    "encoder": e["name"],
                    "resolution": int(e.get("resolution", 0)),
                    "llm": p["name"],
                    "tiling": str(e.get("tiling", "none")),
                    "tokens": int(e["tokens"]),
                    "prompt_tokens": int(p.get("prompt_tokens", 0)),
                    "encoder_ms": e_part[0],
                    "projector_ms": q_part[0] if q_part else math.nan,
                    "prefill_ms": p_part[0],
                    "ttft_ms": point,
                    "ttft_ci_low_ms": lo,
                    "ttft_ci_high_ms": hi,
                    "ttft_p90_ms": _p90_of_sum(parts),
                    "estimated": bool(e.get("estimated") or False)
                    or bool(p.get("estimated") or False),
                    "backend": eb if eb == pb else f"{eb}+{pb}",
                    "machine": str(e.get("machine_id") or p.get("machine_id") or ""),
                    "run_id": ",".join(runs),
                    "encoder_backend": eb,
                    "prefill_backend": pb,
                    "dtype": p.get("dtype"),
                    "encoder_params_m": _num(ex.params_m),
                    "llm_params_b": _num(px.params_b)
                    or (_num(px.settings.get("params_m")) or math.nan) / 1e3,
                    # a predicted part (a latency model, not a run) makes the whole point predicted
                    "latency_source": "predicted"
                    if "predicted" in (ex.latency_source, px.latency_source)
                    else "measured",
                    "peak_mem_bytes": _peak_mem(e, p),
                    "interference": verdict,
                    "contended": verdict == "contended",
                }
            )
    df = pd.DataFrame(out, columns=list(TTFT_COLUMNS))
    df["contended"] = df["contended"].astype(bool)
    return df.sort_values(
        ["encoder", "resolution", "tiling", "llm", "prompt_tokens"], kind="stable"
    ).reset_index(drop=True)


# --------------------------------------------------------------------------- prefill curve


@dataclass(frozen=True)
class PrefillFit:
    """``ms(n) = a + b*n + c*n^2`` (non-negative coefficients), fitted on relative error."""

    coef: tuple[float, float, float]
    degree: int
    tokens: tuple[int, ...]
    ms: tuple[float, ...]
    residuals_ms: tuple[float, ...]

    def predict(self, n: float | Sequence[float] | np.ndarray) -> float | np.ndarray:
        """Predicted prefill ms at ``n`` tokens (scalar in, scalar out)."""
        x = np.asarray(n, dtype=float)
        a, b, c = self.coef
        y = a + b * x + c * x * x
        return float(y) if y.ndim == 0 else y

    @property
    def rel_residuals(self) -> tuple[float, ...]:
        return tuple(r / m for r, m in zip(self.residuals_ms, self.ms, strict=True))

    @property
    def rmse_ms(self) -> float:
        return float(np.sqrt(np.mean(np.square(self.residuals_ms))))

    @property
    def max_rel_error(self) -> float:
        return float(np.max(np.abs(self.rel_residuals)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "coef": list(self.coef),
            "degree": self.degree,
            "tokens": list(self.tokens),
            "ms": list(self.ms),
            "residuals_ms": list(self.residuals_ms),
            "rmse_ms": self.rmse_ms,
            "max_rel_error": self.max_rel_error,
        }


def fit_prefill_curve(
    tokens: Sequence[float], ms: Sequence[float], degree: int | None = None
) -> PrefillFit:
    """Least-squares fit of prefill ms against token count.

    Minimises *relative* error (latencies span 10-100x across token counts, so absolute
    least squares would ignore the small points) with non-negative coefficients (fixed
    cost, per-token cost, attention's quadratic cost cannot be negative). ``degree``
    defaults to 2, or less when there are too few distinct token counts.
    """
    x = np.asarray(tokens, dtype=float)
    y = np.asarray(ms, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise UserError(
            "fit_prefill_curve needs equal-length sequences of token counts and latencies"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        raise UserError("fit_prefill_curve needs positive, finite token counts and latencies")
    distinct = len(np.unique(x))
    if distinct < 2:
        raise UserError(
            f"fitting prefill latency needs at least 2 distinct token counts, got {distinct}"
        )
    deg = min(2, distinct - 1) if degree is None else degree
    if deg not in (0, 1, 2) or deg > distinct - 1:
        raise UserError(
            f"prefill fit degree must be 0-2 and below the number of distinct token counts ({distinct})"
        )
    from scipy.optimize import nnls

    design = np.stack([x**p for p in range(deg + 1)], axis=1)
    coef, _ = nnls(design / y[:, None], np.ones_like(y))
    c0, c1, c2 = (float(c) for c in np.concatenate([coef, np.zeros(2 - deg)]))
    residuals = tuple(float(r) for r in design @ coef - y)
    return PrefillFit(
        (c0, c1, c2), deg, tuple(int(t) for t in x), tuple(float(v) for v in y), residuals
    )


def prefill_at(
    n: int, tokens: Sequence[float], ms: Sequence[float], fit: PrefillFit | None = None
) -> tuple[float, str]:
    """Prefill ms at ``n`` tokens: the measured median if ``n`` was measured, else the fit.

    Returns ``(ms, "measured" | "fit")``.
    """
    x = np.asarray(tokens, dtype=float)
    y = np.asarray(ms, dtype=float)
    hit = y[x == n]
    if hit.size:
        return float(np.median(hit)), "measured"
    fit = fit or fit_prefill_curve(tokens, ms)
    return float(fit.predict(n)), "fit"
