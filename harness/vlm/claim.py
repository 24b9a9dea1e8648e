"""A TTFT ratio between two grid points, next to the ratio a paper claims (pure; no torch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from harness.errors import UserError
from harness.sweep.configs import check_claim


def _pick(points: pd.DataFrame, want: Mapping[str, Any], side: str) -> pd.Series:
    rows = points
    for key in ("encoder", "resolution", "llm"):
        if key in want and want[key] is not None:
            rows = rows[rows[key].astype(str) == str(want[key])]
    if rows.empty:
        raise UserError(f"claim.{side}: no TTFT point matches {dict(want)}")
    return rows.sort_values("ttft_ms").iloc[0]


def claim_ratio(points: pd.DataFrame, claim: Mapping[str, Any]) -> dict[str, Any]:
    """``slow`` TTFT / ``fast`` TTFT measured here, and the claim's ``paper_ratio``."""
    check_claim(claim)
    claim = dict(claim)
    fast, slow = _pick(points, claim["fast"], "fast"), _pick(points, claim["slow"], "slow")
    ratio = float(slow["ttft_ms"]) / float(fast["ttft_ms"])
    return {
        "fast": f"{fast['encoder']}@{fast['resolution']} + {fast['llm']} ({int(fast['tokens'])} tokens)",
        "slow": f"{slow['encoder']}@{slow['resolution']} + {slow['llm']} ({int(slow['tokens'])} tokens)",
        "fast_ttft_ms": float(fast["ttft_ms"]),
        "slow_ttft_ms": float(slow["ttft_ms"]),
        "ratio": ratio,
        "estimated": bool(fast.get("estimated", False)) or bool(slow.get("estimated", False)),
        "paper_ratio": claim.get("paper_ratio"),
        "paper": claim.get("paper", ""),
    }


def claim_line(points: pd.DataFrame, claim: Mapping[str, Any]) -> str:
    """One line for the sweep summary (a problem becomes the line, never an exception)."""
    try:
        r = claim_ratio(points, claim)
    except UserError as e:
        return f"claim: not computed ({e})"
    paper = f"; paper: {r['paper_ratio']}x ({r['paper']})" if r["paper_ratio"] is not None else ""
    est = " (estimated: layer-sampled)" if r["estimated"] else ""
    return (
        f"claim: {r['slow']} {r['slow_ttft_ms']:.0f} ms / {r['fast']} {r['fast_ttft_ms']:.0f} ms = "
        f"{r['ratio']:.1f}x measured here{est}{paper}"
    )
