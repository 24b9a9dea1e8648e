"""The paper's encoder rows three ways: measured here, predicted for the M1 Max (leave-one-out:
a row's own paper number is not used to predict it), and the paper's number."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.predict.calibrate import fit_rows
from harness.predict.profiles import get_profile
from harness.predict.rows import paper_known_rows

PAPER_DEVICE = "m1-max-ane-mlx"


def three_way_rows(measured: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """One dict per paper encoder row (Tables 1, 3, 4): encoder, resolution, tokens,
    ``measured_ms`` (from ``measured`` points' ``encoder_ms`` if given), ``predicted_ms``
    (leave-one-out on the paper's rows), ``paper_ms``, ``loo_error_pct``, ``distrusted``."""
    profile = get_profile(PAPER_DEVICE)
    rows = paper_known_rows(profile.prompt_tokens)
    full = fit_rows(rows, profile)
    distrusted = {lbl for lbl, _ in full.outliers}
    here: dict[tuple[str, int], float] = {}
    if measured is not None and len(measured):
        for _, m in measured.iterrows():
            if str(m.get("tiling", "none")) != "none":
                continue
            v = m.get("encoder_ms")
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                here.setdefault((str(m["encoder"]), int(m["resolution"])), float(v))
    out = []
    for i, r in enumerate(rows):
        if r.part != "encoder":
            continue
        f = fit_rows(rows[:i] + rows[i + 1 :], profile)
        pred = f.predict_row(r, profile)
        enc, res = r.key["encoder"], int(r.key["resolution"])
        out.append(
            {
                "encoder": enc,
                "resolution": res,
                "source": r.source,
                "measured_ms": here.get((enc, res), math.nan),
                "predicted_ms": pred,
                "paper_ms": r.known_ms,
                "loo_error_pct": (pred / r.known_ms - 1) * 100,
                "distrusted": r.label in distrusted,
            }
        )
    return out


def three_way_table(measured: pd.DataFrame | None = None, *, only_measured: bool = False) -> str:
    rows = three_way_rows(measured)
    if only_measured:
        rows = [r for r in rows if not math.isnan(r["measured_ms"])]
    if not rows:
        return ""
    head = (
        f"{'encoder':>13} {'res':>5} {'measured here':>14} {'pred. M1 Max (LOO)':>19} {'paper M1 Max':>13} "
        f"{'LOO err':>8}  source"
    )
    lines = [
        "Paper encoders three ways (encoder latency, ms): measured on this machine, predicted for "
        f"{PAPER_DEVICE} without the row's own number, and the paper's",
        head,
    ]
    for r in rows:
        m = "-" if math.isnan(r["measured_ms"]) else f"{r['measured_ms']:.1f}"
        flag = (
            "  (distrusted by the calibration: conflicts with Table 6)" if r["distrusted"] else ""
        )
        lines.append(
            f"{r['encoder']:>13} {r['resolution']:>5} {m:>14} {r['predicted_ms']:>19.1f} {r['paper_ms']:>13.1f} "
            f"{r['loo_error_pct']:>+7.0f}%  {r['source']}{flag}"
        )
    return "\n".join(lines)
