"""Runtimes as a facet: the speedup table vs fp32 eager, the backend filter, a frontier per runtime.

Pure functions over the store's measurement table (``Store.measurements()``) and the joined
points; no torch import (``choose`` uses :func:`filter_backend`).

- :func:`runtime_label`: ``backend:dtype`` (``onnxrt:int8``), the runtime a number came from;
- :func:`speedup_table`: per encoder + resolution (+ tiling) and per LLM + token count, each
  runtime's median and its speedup over fp32 eager PyTorch (``torch:float32``) measured in
  the same runs, with the parity numbers and the compile/export seconds stored with it;
  skipped and failed runtimes are listed with their reason;
- :func:`filter_backend`: the points whose encoder and LLM both ran on one runtime
  (``choose --backend``);
- :func:`frontier_per_runtime`: accuracy-vs-TTFT with one Pareto frontier per runtime.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.errors import UserError, suggest

REFERENCE = "torch:float32"
TABLE_COLUMNS = [
    "kind",
    "name",
    "size",
    "tiling",
    "runtime",
    "status",
    "median_ms",
    "reference_ms",
    "speedup",
    "parity_cosine",
    "parity_rel_err",
    "compile_s",
    "reason",
]


def runtime_label(backend: Any, dtype: Any) -> str:
    return f"{backend}:{dtype}"


def _extra(row: dict[Any, Any]) -> dict[str, Any]:
    e = row.get("extra")
    return e if isinstance(e, dict) else {}


def speedup_table(measurements: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """One row per (encoder, resolution, tiling) or (LLM, tokens) and runtime; see module doc."""
    if measurements is None or measurements.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    out: list[dict[str, Any]] = []
    df = measurements[measurements["kind"].isin(["encoder", "prefill"])]
    for row in df.to_dict("records"):
        kind = row["kind"]
        size = (
            int(row["resolution"])
            if kind == "encoder"
            else int(row["tokens"]) + int(row.get("prompt_tokens") or 0)
        )
        ex = _extra(row)
        out.append(
            {
                "kind": kind,
                "name": row["name"],
                "size": size,
                "tiling": row.get("tiling") or "none",
                "runtime": runtime_label(row["backend"], row["dtype"]),
                "status": row["status"],
                "median_ms": row.get("median_ms") if row["status"] == "ok" else math.nan,
                "parity_cosine": ex.get("parity_cosine", math.nan),
                "parity_rel_err": ex.get("parity_rel_err", math.nan),
                "compile_s": ex.get("compile_s", math.nan),
                "reason": row.get("reason") or "",
                "_created": str(row.get("created_at") or ""),
            }
        )
    t = pd.DataFrame(out)
    # the latest measurement per key (a re-run replaces an older one)
    t = t.sort_values("_created").drop_duplicates(
        ["kind", "name", "size", "tiling", "runtime"], keep="last"
    )
    ref = t[(t["runtime"] == reference) & (t["status"] == "ok")].set_index(
        ["kind", "name", "size", "tiling"]
    )["median_ms"]
    t["reference_ms"] = [
        ref.get((k, n, s, ti), math.nan)
        for k, n, s, ti in zip(t["kind"], t["name"], t["size"], t["tiling"], strict=True)
    ]
    t["speedup"] = t["reference_ms"] / t["median_ms"]
    t = t.drop(columns="_created").sort_values(
        ["kind", "name", "size", "tiling", "runtime"], kind="stable"
    )
    return t[TABLE_COLUMNS].reset_index(drop=True)


def _fmt(x: Any, spec: str) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(v) else format(v, spec)


def table_markdown(table: pd.DataFrame, reference: str = REFERENCE) -> str:
    """The speedup table as Markdown (one line per model+size and runtime)."""
    if table.empty:
        return "No encoder or prefill measurements to compare."
    lines = [
        f"Speedup vs {reference} (eager PyTorch fp32) measured in the same runs; parity vs fp32 eager.",
        "",
        "| model | size | runtime | median ms | speedup | parity cos | rel err | build s | note |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _table_rows(table)]
    return "\n".join(lines)


def _table_rows(table: pd.DataFrame) -> list[list[str]]:
    rows = []
    for r in table.to_dict("records"):
        size = f"{r['size']} px" if r["kind"] == "encoder" else f"{r['size']} tok"
        if r["tiling"] not in ("none", None):
            size += f" {r['tiling']}"
        note = (
            ""
            if r["status"] == "ok"
            else f"{r['status']}: {str(r['reason']).splitlines()[0][:120] if r['reason'] else ''}"
        )
        speed = _fmt(r["speedup"], ".2f")
        rows.append(
            [
                str(r["name"]),
                size,
                str(r["runtime"]),
                _fmt(r["median_ms"], ".1f"),
                speed + ("x" if speed != "-" else ""),
                _fmt(r["parity_cosine"], ".5f"),
                _fmt(r["parity_rel_err"], ".3g"),
                _fmt(r["compile_s"], ".1f"),
                note,
            ]
        )
    return rows


def runtimes_compared(table: pd.DataFrame) -> int:
    """How many runtimes the table holds (a report shows its section only from two on)."""
    return 0 if table.empty else int(table["runtime"].nunique())


def table_section(table: pd.DataFrame, reference: str = REFERENCE) -> tuple[str, str]:
    """The speedup table as a report section: ``(markdown, html)`` (pure; names escaped)."""
    import html

    md = "## Runtimes compared\n\n" + table_markdown(table, reference) + "\n"
    head = [
        "model",
        "size",
        "runtime",
        "median ms",
        "speedup",
        "parity cos",
        "rel err",
        "build s",
        "note",
    ]
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in _table_rows(table)
    )
    page = (
        "<h2>Runtimes compared</h2><p class=caption>Median of each runtime per encoder and "
        f"resolution and per LLM and token count; speedup over {html.escape(reference)} (eager "
        "PyTorch fp32) measured in the same runs; parity of its output against fp32 eager "
        "(docs/runtimes.md). Skipped and failed runtimes keep their reason.</p>"
        "<table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + f"</tr></thead><tbody>{body}</tbody></table>"
    )
    return md, page


def backends_of(points: pd.DataFrame) -> list[str]:
    """The runtimes points were measured with (a mixed point counts under ``enc+llm``)."""
    if "backend" not in points.columns:
        return []
    return sorted({str(b) for b in points["backend"].dropna()})


def filter_backend(points: pd.DataFrame, backend: str) -> pd.DataFrame:
    """Points whose encoder and prefill both ran on ``backend`` (UserError, did-you-mean, if none)."""
    have = backends_of(points)
    if "backend" not in points.columns:
        raise UserError(
            "these points carry no backend (e.g. --source paper); --backend needs measured points"
        )
    keep = points[points["backend"].astype(str) == backend]
    if keep.empty:
        singles = sorted({b for b in have if "+" not in b})
        raise UserError(
            suggest(backend, singles or have, "backend")
            if singles or have
            else "no point carries a backend; --backend needs measured points"
        )
    return keep.reset_index(drop=True)


def frontier_per_runtime(points: pd.DataFrame, benchmark: str = "avg5") -> Any:
    """A plotly figure: accuracy vs TTFT (log-x), one marker set and Pareto frontier per runtime."""
    import plotly.graph_objects as go

    from harness.pareto import pareto_front

    fig = go.Figure()
    rows = (
        points.dropna(subset=["ttft_ms", benchmark])
        if benchmark in points.columns
        else points.iloc[0:0]
    )
    for b, g in rows.groupby(rows["backend"].astype(str), sort=True):
        fig.add_trace(
            go.Scatter(
                x=g["ttft_ms"],
                y=g[benchmark],
                mode="markers",
                name=b,
                legendgroup=b,
                text=[
                    f"{e}@{r} + {llm}"
                    for e, r, llm in zip(g["encoder"], g["resolution"], g["llm"], strict=True)
                ],
            )
        )
        res = pareto_front(g[[benchmark, "ttft_ms"]], ((benchmark, "max"), ("ttft_ms", "min")))
        front = g.iloc[res.front].sort_values("ttft_ms")
        fig.add_trace(
            go.Scatter(
                x=front["ttft_ms"],
                y=front[benchmark],
                mode="lines",
                line_shape="hv",
                name=f"frontier: {b}",
                legendgroup=b,
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        title="Accuracy vs TTFT per runtime (one frontier each)",
        xaxis_type="log",
        xaxis_title="TTFT (ms, log)",
        yaxis_title=benchmark,
    )
    return fig


__all__ = [
    "REFERENCE",
    "backends_of",
    "filter_backend",
    "frontier_per_runtime",
    "runtime_label",
    "runtimes_compared",
    "speedup_table",
    "table_markdown",
    "table_section",
]
