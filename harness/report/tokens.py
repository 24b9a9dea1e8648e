"""TTFT against the visual tokens a point actually produced (pure: rows in, figure out).

Open VLMs pick their own token counts (AnyRes grids, dynamic resolution, pixel shuffle,
pooling), so their resolutions are not comparable with FastViTHD's; the tokens that reach the
LLM are. One line per (encoder, LLM) pair, each marker labelled with its input side.
"""

from __future__ import annotations

import plotly.graph_objects as go

from harness.report.figures import FigureSpec, Styles, _title, esc, hover_text, res_label
from harness.report.summary import Context


def ttft_vs_tokens(ctx: Context, styles: Styles, key: str) -> FigureSpec | None:
    """TTFT (log) vs visual tokens (log); None when fewer than two token counts exist."""
    rows = ctx.rows[ctx.rows["ttft_ms"].notna() & ctx.rows["tokens"].notna()]
    if rows.empty or rows["tokens"].nunique() < 2:
        return None
    fig = go.Figure()
    for (enc, llm), g in rows.groupby([rows["encoder"].astype(str), rows["llm"].astype(str)], sort=True):
        g = g.drop_duplicates(["resolution", "tiling"]).sort_values("tokens")
        fig.add_trace(go.Scatter(
            x=g["tokens"].tolist(), y=g["ttft_ms"].tolist(), mode="lines+markers+text", name=esc(f"{enc} + {llm}"),
            text=[esc(res_label(r)) for _, r in g.iterrows()], textposition="top center",
            marker={"color": styles.colour.get(str(enc)), "symbol": styles.symbol.get(str(llm)), "size": 9},
            line={"color": styles.colour.get(str(enc))},
            hovertext=[hover_text(r, "") for _, r in g.iterrows()], hoverinfo="text",
        ))
    fig.update_layout(
        title=_title("TTFT vs visual tokens produced (labels: input side, px)", ctx.origin), template="plotly_white",
        height=520, margin={"t": 90}, xaxis={"type": "log", "title": {"text": "visual tokens (log)"}},
        yaxis={"type": "log", "title": {"text": "TTFT (ms, log scale)"}},
    )
    return FigureSpec(key, f"TTFT vs visual tokens, {ctx.label}", fig,
                      "Each model at the token counts its own resolution policy produces (docs/vlms.md).")
