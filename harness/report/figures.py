"""Plotly figures of the report (pure: DataFrame in, figure objects out).

Every user-provided string that reaches plotly goes through :func:`esc` first: plotly renders
a small HTML subset in titles, legends, ticks and hover labels, and decodes entities, so
``&lt;script&gt;`` is shown as the literal text ``<script>`` and never parsed as a tag.
Each figure's title names the machine and backend of its latencies (one latency origin per
figure: see :mod:`harness.report.summary`).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from harness.report.axes import log_axis
from harness.report.summary import (
    SOURCE_LABELS,
    Context,
    ContextAnalysis,
    ReportAnalysis,
    benchmark_label,
    latency_contexts,
    with_defaults,
)
from harness.schema import BENCHMARK_COLUMNS

PALETTE = qualitative.D3 + qualitative.Dark24
SYMBOLS = (
    "circle",
    "square",
    "diamond",
    "triangle-up",
    "star",
    "hexagon",
    "cross",
    "x",
    "pentagon",
    "triangle-down",
)
PART_COLOURS = {"encoder": "#1f77b4", "projector": "#9467bd", "prefill": "#ff7f0e"}
BENCH_COLUMNS = BENCHMARK_COLUMNS  # harness/schema.py


def esc(value: object) -> str:
    """Escape a user-provided value for plotly text (entities, never tags)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return html.escape(str(value), quote=False)


@dataclass(frozen=True)
class FigureSpec:
    """One drawn figure: ``key`` is a file-safe stem, ``title`` plain text for headings."""

    key: str
    title: str
    figure: go.Figure
    caption: str


@dataclass(frozen=True)
class Styles:
    """Stable colour per encoder and symbol per LLM across all figures of a report."""

    colour: dict[str, str]
    symbol: dict[str, str]

    @classmethod
    def of(cls, df: pd.DataFrame) -> Styles:
        encs = sorted(df["encoder"].astype(str).unique()) if "encoder" in df else []
        llms = sorted(df["llm"].astype(str).unique()) if "llm" in df else []
        return cls(
            {e: PALETTE[i % len(PALETTE)] for i, e in enumerate(encs)},
            {m: SYMBOLS[i % len(SYMBOLS)] for i, m in enumerate(llms)},
        )


def _num(x: object, digits: int = 1) -> str:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "n/a"
    return f"{v:.{digits}f}" if math.isfinite(v) else "n/a"


def res_label(row: pd.Series) -> str:
    res = row.get("resolution")
    r = str(int(res)) if res is not None and not pd.isna(res) else "?"
    tiling = str(row.get("tiling", "none"))
    return r if tiling in ("none", "nan", "") else f"{r} {tiling}"


def hover_text(row: pd.Series, benchmark: str) -> str:
    """Every number of a point, with its CI and provenance (escaped)."""
    lines = [
        f"<b>{esc(row.get('encoder'))} + {esc(row.get('llm'))}</b>",
        f"resolution {esc(res_label(row))}, {_num(row.get('tokens'), 0)} visual tokens, recipe {esc(row.get('recipe'))}",
        f"TTFT {_num(row.get('ttft_ms'))} ms (95% CI {_num(row.get('ttft_ci_low_ms'))}-{_num(row.get('ttft_ci_high_ms'))}, p90 {_num(row.get('ttft_p90_ms'))})",
        f"= encoder {_num(row.get('encoder_ms'))} + projector {_num(row.get('projector_ms'))} + prefill {_num(row.get('prefill_ms'))} ms",
    ]
    if benchmark in row.index:
        lines.append(f"{esc(benchmark_label(benchmark))}: {_num(row.get(benchmark))}")
    scores = [
        f"{esc(benchmark_label(b))} {_num(row.get(b))}"
        for b in BENCH_COLUMNS
        if b in row.index and not pd.isna(row.get(b))
    ]
    if scores:
        lines.append(", ".join(scores))
    prov = SOURCE_LABELS.get(str(row.get("latency_source")), esc(row.get("latency_source")))
    est = " (estimated: layer-sampled)" if bool(row.get("estimated", False)) else ""
    est += " (UNRELIABLE: contended)" if str(row.get("contended")) == "True" else ""
    lines.append(f"latency: {esc(prov)}{est}, {esc(row.get('machine'))}, {esc(row.get('backend'))}")
    lines.append(f"accuracy: {esc(row.get('accuracy_source'))}")
    if "run_id" in row.index and not pd.isna(row.get("run_id")):
        lines.append(f"run {esc(row.get('run_id'))}")
    return "<br>".join(lines)


def _title(main: str, origin: str) -> dict:
    # The latency origin sits on the figure itself so a PNG copied elsewhere keeps it.
    return {
        "text": f"{esc(main)}<br><sup>latencies: {esc(origin)}</sup>",
        "x": 0.01,
        "xanchor": "left",
    }


def _error_x(rows: pd.DataFrame) -> dict | None:
    lo, hi, t = rows["ttft_ci_low_ms"], rows["ttft_ci_high_ms"], rows["ttft_ms"]
    if lo.isna().all() or hi.isna().all():
        return None
    return {
        "type": "data",
        "symmetric": False,
        "thickness": 1,
        "width": 0,
        "array": (hi - t).clip(lower=0).fillna(0).tolist(),
        "arrayminus": (t - lo).clip(lower=0).fillna(0).tolist(),
    }


def accuracy_vs_ttft(ca: ContextAnalysis, benchmark: str, styles: Styles, key: str) -> FigureSpec:
    """Figs. 1 and 4: accuracy vs TTFT (log-x), frontier per encoder and overall."""
    rows = ca.context.rows
    rows = rows[rows[benchmark].notna() & rows["ttft_ms"].notna()]
    bl = benchmark_label(benchmark)
    fig = go.Figure()
    for (enc, llm), g in rows.groupby(
        [rows["encoder"].astype(str), rows["llm"].astype(str)], sort=True
    ):
        g = g.sort_values("ttft_ms")
        est = g["estimated"].astype(bool).tolist()
        fig.add_trace(
            go.Scatter(
                x=g["ttft_ms"].tolist(),
                y=g[benchmark].tolist(),
                mode="markers+text",
                name=f"{esc(enc)} + {esc(llm)}",
                legendgroup=esc(enc),
                marker={
                    "color": styles.colour[enc],
                    "symbol": [styles.symbol[llm] + ("-open" if e else "") for e in est],
                    "size": 10,
                    "line": {"width": 1, "color": "#333"},
                },
                text=[esc(res_label(r)) for _, r in g.iterrows()],
                textposition="top center",
                textfont={"size": 9},
                hovertext=[hover_text(r, benchmark) for _, r in g.iterrows()],
                hoverinfo="text",
                error_x=_error_x(g),
            )
        )
    for enc, f in sorted(ca.encoder_frontiers.items()):
        fig.add_trace(
            go.Scatter(
                x=f["ttft_ms"].tolist(),
                y=f[benchmark].tolist(),
                mode="lines",
                line_shape="hv",
                name=f"frontier: {esc(enc)}",
                legendgroup=esc(enc),
                hoverinfo="skip",
                line={"color": styles.colour.get(enc, "#777"), "dash": "dash", "width": 1.5},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=ca.frontier["ttft_ms"].tolist(),
            y=ca.frontier[benchmark].tolist(),
            mode="lines",
            line_shape="hv",
            name="overall frontier",
            hoverinfo="skip",
            line={"color": "black", "width": 2.5},
        )
    )
    fig.update_layout(
        title=_title(f"{bl} vs TTFT (recipe {ca.context.recipe})", ca.context.origin),
        xaxis=log_axis(
            [*rows["ttft_ms"], *rows["ttft_ci_low_ms"], *rows["ttft_ci_high_ms"]],
            "ms",
            "TTFT = encoder + projector + prefill (log scale; bars: 95% CI)",
        ),
        yaxis={"title": {"text": esc(bl)}},
        legend={"title": {"text": "encoder + LLM (open marker: estimated)"}},
        template="plotly_white",
        height=560,
        margin={"t": 90},
    )
    return FigureSpec(
        key,
        f"{bl} vs TTFT, {ca.context.label}",
        fig,
        "Colour: encoder; marker: LLM; label: resolution (and tiling). Dashed steps: each encoder's "
        "Pareto frontier; black: the overall frontier (best accuracy reachable within a TTFT budget).",
    )


def _latency_rows(ctx: Context) -> pd.DataFrame:
    rows = ctx.rows
    return rows.drop_duplicates(["encoder", "resolution", "llm", "tiling"]).sort_values(
        ["encoder", "llm", "tiling", "resolution"], kind="mergesort"
    )


def latency_breakdown(ctx: Context, key: str) -> FigureSpec | None:
    """Fig. 5: stacked encoder / projector / prefill per (encoder, LLM) and resolution."""
    rows = _latency_rows(ctx)
    rows = rows[rows["encoder_ms"].notna() & rows["prefill_ms"].notna()]
    if rows.empty:
        return None
    # One category per bar, in sorted order: plotly's two-level axis orders child labels
    # (the resolutions) by first appearance across groups, which scrambles them.
    x = [f"{esc(r['encoder'])} {esc(res_label(r))}<br>{esc(r['llm'])}" for _, r in rows.iterrows()]
    hover = [hover_text(r, "") for _, r in rows.iterrows()]
    fig = go.Figure()
    for part in ("encoder", "projector", "prefill"):
        fig.add_trace(
            go.Bar(
                x=x,
                y=rows[f"{part}_ms"].fillna(0).tolist(),
                name=f"{part} (ms)",
                marker_color=PART_COLOURS[part],
                hovertext=hover,
                hoverinfo="text+name",
            )
        )
    fig.update_layout(
        barmode="stack",
        title=_title("TTFT breakdown: encoder / projector / prefill", ctx.origin),
        yaxis={"title": {"text": "ms"}},
        xaxis={
            "title": {"text": "encoder, resolution / LLM"},
            "categoryorder": "array",
            "categoryarray": x,
        },
        template="plotly_white",
        height=520,
        margin={"t": 90},
    )
    return FigureSpec(
        key,
        f"TTFT breakdown, {ctx.label}",
        fig,
        "Vision latency grows with resolution and dominates at high resolution (paper Fig. 5).",
    )


def static_vs_tiled(ctx: Context, benchmark: str, styles: Styles, key: str) -> FigureSpec | None:
    """Fig. 6: static resolution vs tiled (AnyRes) inputs for encoders that have both kinds."""
    rows = ctx.rows
    tiled_encs = set(rows.loc[rows["tiling"].astype(str) != "none", "encoder"].astype(str))
    if not tiled_encs:
        return None
    rows = rows[rows["encoder"].astype(str).isin(tiled_encs) & rows["ttft_ms"].notna()]
    use_acc = benchmark in rows and rows[benchmark].notna().sum() >= 2
    if use_acc:
        rows = rows[rows[benchmark].notna()]
    fig = go.Figure()
    dash_cycle = ("solid", "dash", "dot", "dashdot", "longdash")
    tilings = sorted(rows["tiling"].astype(str).unique(), key=lambda t: (t != "none", t))
    for (enc, llm, tiling), g in rows.groupby(
        [rows["encoder"].astype(str), rows["llm"].astype(str), rows["tiling"].astype(str)],
        sort=True,
    ):
        g = g.sort_values("ttft_ms" if use_acc else "resolution")
        kind = "static" if tiling == "none" else f"tiled {tiling}"
        fig.add_trace(
            go.Scatter(
                x=(g["ttft_ms"] if use_acc else g["resolution"]).tolist(),
                y=(g[benchmark] if use_acc else g["ttft_ms"]).tolist(),
                mode="lines+markers+text",
                name=f"{esc(enc)} + {esc(llm)}, {esc(kind)}",
                line={
                    "color": styles.colour[enc],
                    "dash": dash_cycle[tilings.index(tiling) % len(dash_cycle)],
                },
                marker={"symbol": styles.symbol[llm], "size": 9},
                text=[esc(res_label(r)) for _, r in g.iterrows()],
                textposition="top center",
                textfont={"size": 9},
                hovertext=[hover_text(r, benchmark) for _, r in g.iterrows()],
                hoverinfo="text",
            )
        )
    bl = benchmark_label(benchmark)
    if use_acc:
        axes = {
            "xaxis": log_axis(rows["ttft_ms"], "ms", "TTFT (log scale)"),
            "yaxis": {"title": {"text": esc(bl)}},
        }
        main = f"Static vs tiled input: {bl} vs TTFT"
    else:
        axes = {
            "xaxis": {"title": {"text": "total input resolution (px)"}},
            "yaxis": log_axis(rows["ttft_ms"], "ms", "TTFT (log scale)"),
        }
        main = "Static vs tiled input: TTFT vs resolution (no accuracy for tiled points)"
    fig.update_layout(
        title=_title(main, ctx.origin),
        template="plotly_white",
        height=520,
        margin={"t": 90},
        **axes,
    )
    return FigureSpec(
        key,
        f"Static vs tiled, {ctx.label}",
        fig,
        "Solid: static resolution; other dashes: tiled grids (resolution = total input side).",
    )


def encoder_scaling(ctx: Context, styles: Styles, key: str) -> FigureSpec | None:
    """Fig. 3 / Table 4: encoder latency and visual tokens vs resolution, per encoder."""
    rows = ctx.rows[ctx.rows["encoder_ms"].notna()]
    static = rows[rows["tiling"].astype(str) == "none"]
    rows = (static if not static.empty else rows).drop_duplicates(
        ["encoder", "resolution", "tiling"]
    )
    if rows.empty:
        return None
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("encoder latency (ms, log)", "visual tokens (log)")
    )
    for enc, g in rows.groupby(rows["encoder"].astype(str), sort=True):
        g = g.sort_values("resolution")
        hover = [hover_text(r, "") for _, r in g.iterrows()]
        common = {
            "mode": "lines+markers",
            "legendgroup": esc(enc),
            "marker": {"color": styles.colour[enc], "size": 8},
            "line": {"color": styles.colour[enc]},
            "hovertext": hover,
            "hoverinfo": "text",
        }
        fig.add_trace(
            go.Scatter(
                x=g["resolution"].tolist(), y=g["encoder_ms"].tolist(), name=esc(enc), **common
            ),
            1,
            1,
        )
        fig.add_trace(
            go.Scatter(
                x=g["resolution"].tolist(),
                y=g["tokens"].tolist(),
                name=esc(enc),
                showlegend=False,
                **common,
            ),
            1,
            2,
        )
    fig.update_yaxes(log_axis(rows["encoder_ms"], "ms"), row=1, col=1)
    fig.update_yaxes(log_axis(rows["tokens"], ""), row=1, col=2)
    fig.update_xaxes(title_text="input resolution (px)")
    fig.update_layout(
        title=_title("Encoder latency and token count vs resolution", ctx.origin),
        template="plotly_white",
        height=480,
        margin={"t": 110},
    )
    return FigureSpec(
        key,
        f"Encoder scaling, {ctx.label}",
        fig,
        "Static resolution only when available. Fewer tokens shorten prefill; the paper's Fig. 3 and Table 4.",
    )


def ttft_vs_tokens(ctx: Context, styles: Styles, key: str) -> FigureSpec | None:
    """TTFT (log) vs visual tokens (log); None when fewer than two token counts exist."""
    rows = ctx.rows[ctx.rows["ttft_ms"].notna() & ctx.rows["tokens"].notna()]
    if rows.empty or rows["tokens"].nunique() < 2:
        return None
    fig = go.Figure()
    for (enc, llm), g in rows.groupby(
        [rows["encoder"].astype(str), rows["llm"].astype(str)], sort=True
    ):
        g = g.drop_duplicates(["resolution", "tiling"]).sort_values("tokens")
        fig.add_trace(
            go.Scatter(
                x=g["tokens"].tolist(),
                y=g["ttft_ms"].tolist(),
                mode="lines+markers+text",
                name=esc(f"{enc} + {llm}"),
                text=[esc(res_label(r)) for _, r in g.iterrows()],
                textposition="top center",
                marker={
                    "color": styles.colour.get(str(enc)),
                    "symbol": styles.symbol.get(str(llm)),
                    "size": 9,
                },
                line={"color": styles.colour.get(str(enc))},
                hovertext=[hover_text(r, "") for _, r in g.iterrows()],
                hoverinfo="text",
            )
        )
    fig.update_layout(
        title=_title("TTFT vs visual tokens produced (labels: input side, px)", ctx.origin),
        template="plotly_white",
        height=520,
        margin={"t": 90},
        xaxis=log_axis(rows["tokens"], "", "visual tokens (log scale)"),
        yaxis=log_axis(rows["ttft_ms"], "ms", "TTFT (log scale)"),
    )
    return FigureSpec(
        key,
        f"TTFT vs visual tokens, {ctx.label}",
        fig,
        "Each model at the token counts its own resolution policy produces (docs/vlms.md).",
    )


def runtime_frontiers(df: pd.DataFrame, benchmark: str) -> list[FigureSpec]:
    """Accuracy vs TTFT with one frontier per runtime, per (machine, recipe) whose measured
    points span at least two runtimes. Mixed points (encoder and prefill on different
    runtimes, ``backend`` = ``enc+llm``) stay in the per-origin figures and the table."""
    from harness.report.runtimes import frontier_per_runtime

    if benchmark not in df.columns:
        return []
    rows = df[
        (df["latency_source"].astype(str) == "measured")
        & ~df["backend"].astype(str).str.contains("+", regex=False)
    ].dropna(subset=["ttft_ms", benchmark])
    specs: list[FigureSpec] = []
    for (machine, recipe), g in rows.groupby(["machine", "recipe"], sort=True):
        runtimes = sorted(g["backend"].astype(str).unique())
        if len(runtimes) < 2:
            continue
        fig = frontier_per_runtime(g, benchmark)
        bl = benchmark_label(benchmark)
        fig.update_layout(
            title=_title(f"{bl} vs TTFT per runtime (recipe {recipe})", f"measured, {machine}")
        )
        fig.update_layout(
            xaxis=log_axis(g["ttft_ms"], "ms", "TTFT (log)"),
            yaxis_title=bl,
            legend_title_text="runtime",
        )
        specs.append(
            FigureSpec(
                f"runtimes_{len(specs) + 1}",
                f"{bl} vs TTFT per runtime, {machine}, recipe {recipe}",
                fig,
                f"One Pareto frontier per runtime ({', '.join(runtimes)}); each point's encoder "
                "and prefill ran on that runtime. Accuracy is the configuration's, whatever the "
                "runtime: check the parity columns of the runtimes table before trusting a "
                "low-precision point's accuracy.",
            )
        )
    return specs


def build_figures(
    points: pd.DataFrame, analysis: ReportAnalysis
) -> tuple[list[FigureSpec], list[str]]:
    """All report figures for ``points``; figures without data are listed as notes instead."""
    df = with_defaults(points)
    styles = Styles.of(df)
    specs: list[FigureSpec] = []
    notes: list[str] = []
    bench = analysis.benchmark
    if bench not in df.columns:
        df[bench] = np.nan
    if not analysis.contexts:
        notes.append(
            f"accuracy vs TTFT omitted: no point has both {benchmark_label(bench)} and TTFT"
        )
    for i, ca in enumerate(analysis.contexts, 1):
        specs.append(accuracy_vs_ttft(ca, bench, styles, f"accuracy_vs_ttft_{i}"))
    specs += runtime_frontiers(df, bench)
    lat = latency_contexts(df)
    drawn = {"breakdown": 0, "tiling": 0, "scaling": 0, "tokens": 0}
    for i, ctx in enumerate(lat, 1):
        for kind, make in (
            ("breakdown", lambda c, k: latency_breakdown(c, k)),
            ("tiling", lambda c, k: static_vs_tiled(c, bench, styles, k)),
            ("scaling", lambda c, k: encoder_scaling(c, styles, k)),
            ("tokens", lambda c, k: ttft_vs_tokens(c, styles, k)),
        ):
            spec = make(ctx, f"{kind}_{i}")
            if spec is not None:
                specs.append(spec)
                drawn[kind] += 1
    reasons = {
        "breakdown": "latency breakdown omitted: no point has separate encoder and prefill latencies",
        "tiling": "static vs tiled omitted: no tiled (AnyRes) point",
        "scaling": "encoder scaling omitted: no point has an encoder latency",
        "tokens": "TTFT vs visual tokens omitted: fewer than two token counts",
    }
    notes += [reasons[k] for k, n in drawn.items() if n == 0]
    return specs, notes
