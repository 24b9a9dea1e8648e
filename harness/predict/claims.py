"""The FastVLM paper's headline numeric claims, recomputed from its own shipped tables.

Each :class:`Claim` names where the paper makes it, the factor it states, and how to
recompute it from ``harness/data/paper_tables.csv`` (a ratio of two cells, each named by
row label and column), or why it cannot be checked from Tables 1-6. :func:`check_claims`
returns one verdict per claim: ``holds`` (the recomputed factor rounds to the stated one, or
is within 3%), ``differs`` (both numbers shown) or ``cannot check`` (what is missing).
Pure: reads only the shipped CSV; no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TOLERANCE = 0.015


@dataclass(frozen=True)
class Claim:
    where: str
    text: str
    claimed: float
    num: tuple[str, str] | None = None  # (row label, column)
    den: tuple[str, str] | None = None
    missing: str = ""  # why it cannot be checked
    percent_faster: bool = False  # claimed is "X% faster": 1 - den/num
    at_least: bool = False  # "over X": holds only if the recomputed factor reaches X


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "abstract; Sec. 1; Sec. 4",
        "85x faster TTFT than LLaVA-OneVision at 1152 (same 0.5B LLM)",
        85,
        ("R2", "ttft_ms"),
        ("R4", "ttft_ms"),
    ),
    Claim(
        "abstract; Sec. 1; Sec. 4",
        "vision encoder 3.4x smaller than LLaVA-OneVision's (SigLIP-SO400M)",
        3.4,
        ("R2", "encoder_params_m"),
        ("R4", "encoder_params_m"),
    ),
    Claim(
        "Sec. 1 (contributions)",
        "3.6x smaller than SigLIP-SO400M",
        3.6,
        ("R2", "encoder_params_m"),
        ("R4", "encoder_params_m"),
    ),
    Claim(
        "Sec. 1 (contributions)",
        "3.2x faster TTFT than SigLIP-SO400M (controlled setup)",
        3.2,
        missing="no TTFT of a SigLIP-SO400M VLM with the same LLM and recipe in Tables 1-6",
    ),
    Claim(
        "Sec. 1 (contributions)",
        "2.3x faster TTFT than ConvNeXt (ConvLLaVA R26 vs FastVLM R28, both 1024 px, Vicuna-7B)",
        2.3,
        ("R26", "ttft_ms"),
        ("R28", "ttft_ms"),
    ),
    Claim(
        "Sec. 1 (contributions)",
        "1.7x smaller than ConvNeXt (ConvNeXt-L)",
        1.7,
        ("T4.2", "encoder_params_m"),
        ("T4.1", "encoder_params_m"),
    ),
    Claim(
        "Sec. 1",
        "FastViT generates visual tokens over 4x faster than ViT-L/14 (Table 1, 576 tokens each)",
        4.0,
        ("T1.1", "encoder_ms"),
        ("T1.4", "encoder_ms"),
        at_least=True,
    ),
    Claim(
        "Sec. 3.2",
        "FastViT is 8.7x smaller than ViT-L/14",
        8.7,
        ("T1.1", "encoder_params_m"),
        ("T1.3", "encoder_params_m"),
    ),
    Claim(
        "Sec. 3.2",
        "FastViTHD (125.1M) is 3.5x larger than the largest FastViT",
        3.5,
        ("T4.1", "encoder_params_m"),
        ("T1.3", "encoder_params_m"),
    ),
    Claim(
        "Sec. 3.2 (Table 3)",
        "FastViTHD 2.4x smaller than ViT-L/14",
        2.4,
        ("T3.1", "encoder_params_m"),
        ("T3.4", "encoder_params_m"),
    ),
    Claim(
        "Sec. 3.2 (Table 3)",
        "FastViTHD 6.9x faster than ViT-L/14",
        6.9,
        ("T3.1", "encoder_ms"),
        ("T3.4", "encoder_ms"),
    ),
    Claim(
        "Sec. 3.2 (Table 3)",
        "FastViTHD 2.7x smaller than ViTamin-L",
        2.7,
        ("T3.2", "encoder_params_m"),
        ("T3.4", "encoder_params_m"),
    ),
    Claim(
        "Sec. 3.2 (Table 3)",
        "FastViTHD 5.6x faster than ViTamin-L",
        5.6,
        ("T3.2", "encoder_ms"),
        ("T3.4", "encoder_ms"),
    ),
    Claim(
        "Sec. 3.2 (Table 4)",
        "FastViTHD as accurate as ConvNeXt-XXL while 6.8x smaller",
        6.8,
        ("T4.7", "encoder_params_m"),
        ("T4.8", "encoder_params_m"),
    ),
    Claim(
        "Sec. 3.2 (Table 4)",
        "FastViTHD as accurate as ConvNeXt-XXL while 3.3x faster (equal Avg-5 63.9, 256 tokens)",
        3.3,
        ("T4.7", "encoder_ms"),
        ("T4.8", "encoder_ms"),
    ),
    Claim(
        "Fig. 2 caption",
        "FastViTHD makes 4x fewer tokens than FastViT (at equal resolution: stride 64 vs 32)",
        4.0,
        ("T1.3", "tokens"),
        ("T4.1", "tokens"),
    ),
    Claim(
        "Fig. 1 caption",
        "more than 3x faster than prior work",
        3.0,
        missing="'prior work' is not one row; Fig. 1's curves are not printed as numbers",
    ),
    Claim(
        "Sec. 3.2.1 (Fig. 4)",
        "FastViTHD reaches a target VLM accuracy up to 3x faster than FastViT",
        3.0,
        missing="Fig. 4's Qwen2 points are not printed in Tables 1-6",
    ),
    Claim(
        "Sec. 4 (Table 6)",
        "22% faster than ConvLLaVA (R20 vs R18, 768 px, Vicuna-7B)",
        22,
        ("R18", "ttft_ms"),
        ("R20", "ttft_ms"),
        percent_faster=True,
    ),
    Claim(
        "Sec. 4 (Table 6)",
        "2x faster than ConvLLaVA (R28/R29 vs R26)",
        2.0,
        ("R26", "ttft_ms"),
        ("R28", "ttft_ms"),
    ),
    Claim(
        "Sec. 4 (Table 6)",
        "7.9x faster than Cambrian-1 (R40 vs R44)",
        7.9,
        ("R44", "ttft_ms"),
        ("R40", "ttft_ms"),
    ),
    Claim(
        "Sec. 4 (Table 6)",
        "5x fewer visual tokens than MM1 (R21 vs R38)",
        5.0,
        ("R38", "tokens"),
        ("R21", "tokens"),
    ),
    Claim(
        "Sec. 4 (Table 6)",
        "2.3x fewer visual tokens than Cambrian-1 (R41 vs R44)",
        2.3,
        ("R44", "tokens"),
        ("R41", "tokens"),
    ),
    Claim(
        "Sec. 4 (Table 6)",
        "Cambrian-1's vision encoding takes 3.2x the LLM prefill",
        3.2,
        missing="the encoder/prefill breakdown is in the appendix (Table 9), not in Tables 1-6",
    ),
)


def _cell(rows: Any, label: str, column: str) -> float:
    hit = rows[rows["label"] == label]
    if hit.empty:
        return math.nan
    return float(hit.iloc[0][column])


def _rounds_to(value: float, claimed: float) -> bool:
    """``value`` printed at the claim's precision (at least one decimal, half up) is the claim."""
    from decimal import ROUND_HALF_UP, Decimal

    text = f"{claimed:g}"
    digits = max(1, len(text.split(".")[1]) if "." in text else 0)
    q = Decimal(1).scaleb(-digits)
    return Decimal(repr(value)).quantize(q, ROUND_HALF_UP) == Decimal(text).quantize(
        q, ROUND_HALF_UP
    )


def check_claims() -> list[dict[str, Any]]:
    """One dict per claim: where, text, claimed, recomputed, verdict, how (the cells used)."""
    from harness.accuracy.paper import paper_rows

    rows = paper_rows()
    out = []
    for c in CLAIMS:
        d: dict[str, Any] = {
            "where": c.where,
            "claim": c.text,
            "claimed": c.claimed,
            "recomputed": None,
        }
        if c.num is None or c.den is None:
            d.update(verdict="cannot check", how=c.missing)
            out.append(d)
            continue
        a, b = _cell(rows, *c.num), _cell(rows, *c.den)
        if math.isnan(a) or math.isnan(b) or b == 0:
            d.update(
                verdict="cannot check", how=f"missing {c.num} or {c.den} in the shipped tables"
            )
            out.append(d)
            continue
        value = (1 - b / a) * 100 if c.percent_faster else a / b
        ok = _rounds_to(value, c.claimed) or abs(value / c.claimed - 1) <= TOLERANCE
        if c.at_least:
            ok = value >= c.claimed
        unit = "%" if c.percent_faster else "x"
        how = (
            f"1 - {c.den[0]} {c.den[1]} {b:g} / {c.num[0]} {c.num[1]} {a:g}"
            if c.percent_faster
            else f"{c.num[0]} {c.num[1]} {a:g} / {c.den[0]} {c.den[1]} {b:g}"
        )
        d.update(
            recomputed=round(value, 2),
            verdict="holds" if ok else "differs",
            how=f"{how} = {value:.2f}{unit}",
        )
        out.append(d)
    return out


def inconsistent_rows() -> list[tuple[str, str]]:
    """(source, note) for every row whose CSV note says the tables disagree with each other."""
    from harness.accuracy.paper import paper_rows

    rows = paper_rows()
    keys = ("exceeds", "below", "less than", "cannot share", "disagree", "inconsistent", "differs")
    return [
        (r["source"], r["note"])
        for _, r in rows.iterrows()
        if r["note"] and any(k in r["note"].lower() for k in keys)
    ]


def claims_markdown() -> str:
    lines = [
        "## The paper's claims, recomputed from its own tables",
        "",
        "| where | claim | paper | recomputed | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for d in check_claims():
        rec = d["how"] if d["verdict"] != "cannot check" else f"(missing: {d['how']})"
        lines.append(
            f"| {d['where']} | {d['claim']} | {d['claimed']:g} | {rec} | **{d['verdict']}** |"
        )
    inc = inconsistent_rows()
    if inc:
        lines += [
            "",
            "Rows of the paper's tables that disagree with other rows (notes of the shipped CSV):",
            "",
        ]
        lines += [f"- {src}: {note}" for src, note in inc]
    return "\n".join(lines) + "\n"


def claims_html() -> str:
    from html import escape as e

    cells = []
    for d in check_claims():
        rec = d["how"] if d["verdict"] != "cannot check" else f"missing: {d['how']}"
        color = {"holds": "#1a7f37", "differs": "#b3261e"}.get(d["verdict"], "#666")
        cells.append(
            f"<tr><td>{e(d['where'])}</td><td>{e(d['claim'])}</td><td>{d['claimed']:g}</td>"
            f"<td>{e(rec)}</td><td style='color:{color};font-weight:600'>{e(d['verdict'])}</td></tr>"
        )
    inc = "".join(f"<li>{e(src)}: {e(note)}</li>" for src, note in inconsistent_rows())
    return (
        "<h2 id=claims>The paper's claims, recomputed from its own tables</h2>"
        "<table><tr><th>where</th><th>claim</th><th>paper</th><th>recomputed</th><th>verdict</th></tr>"
        + "".join(cells)
        + "</table>"
        + (f"<h3>Rows that disagree with other rows</h3><ul class=notes>{inc}</ul>" if inc else "")
    )
