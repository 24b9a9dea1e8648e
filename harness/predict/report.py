"""Report sections of the predict package: the paper's claims checked, and a device's
validation (predicted vs known, log-log, with the identity line)."""

from __future__ import annotations

import json
from html import escape

from harness.predict.claims import claims_html, claims_markdown


def validation_figure_json(held: list, title: str) -> str:
    """A plotly figure (JSON) of leave-one-out predictions against known latencies."""
    import plotly.graph_objects as go  # type: ignore[import-untyped]

    fig = go.Figure()
    parts = sorted({h.part for h in held})
    for part in parts:
        hs = [h for h in held if h.part == part]
        fig.add_trace(
            go.Scatter(
                x=[h.known_ms for h in hs],
                y=[h.predicted_ms for h in hs],
                mode="markers",
                name=part,
                text=[f"{h.label}: {h.rel_error * 100:+.0f}%" for h in hs],
                hoverinfo="text",
            )
        )
    if held:
        lo = min(min(h.known_ms, h.predicted_ms) for h in held) * 0.8
        hi = max(max(h.known_ms, h.predicted_ms) for h in held) * 1.25
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[lo, hi],
                mode="lines",
                name="identity (y = x)",
                line={"dash": "dash", "color": "#888"},
            )
        )
    fig.update_layout(
        title=title,
        xaxis={"type": "log", "title": "known latency (ms)"},
        yaxis={"type": "log", "title": "predicted, leave-one-out (ms)"},
        height=480,
    )
    return fig.to_json()


def device_section(device: str, db: str | None = None) -> tuple[str, str]:
    from harness.predict.apply import predictor_for
    from harness.predict.validate import format_summary, summarize

    pred = predictor_for(device, db)
    name = pred.profile.name
    if not pred.calibrated:
        text = (
            f"Latencies predicted for {name}: uncalibrated (spec-sheet roofline with default efficiencies); "
            "no error band is claimed."
        )
        return (
            f"## Predicted for {name}\n\n{text}\n",
            f"<h2>Predicted for {escape(name)}</h2><p>{escape(text)}</p>",
        )
    held = pred.validation()
    lines = format_summary(summarize(held), "leave-one-out")
    outl = [f"{lbl} ({e * 100:+.0f}%)" for lbl, e in (pred.fit.outliers if pred.fit else [])]
    md = [
        f"## Predicted for {name}: validation",
        "",
        f"Calibrated on {len(pred.known_rows())} known latencies; each row below was predicted by a fit without it.",
        "",
        "```",
        *lines,
        "```",
    ]
    if outl:
        md += ["", "Rows the calibration distrusts (kept at low weight): " + "; ".join(outl)]
    fig = validation_figure_json(held, f"{name}: predicted (leave-one-out) vs known")
    div = "pred-validation"
    html = (
        f"<h2>Predicted for {escape(name)}: validation</h2><pre>{escape(chr(10).join(lines))}</pre>"
        + (f"<p>Distrusted rows: {escape('; '.join(outl))}</p>" if outl else "")
        + f'<div class="fig"><div id="{div}"></div></div>'
        + f'<script>(function(f){{Plotly.newPlot("{div}",f.data,f.layout);}})({json.dumps(json.loads(fig))});</script>'
    )
    return "\n".join(md) + "\n", html


def report_sections(
    *, paper: bool, device: str | None, db: str | None = None
) -> list[tuple[str, str]]:
    out = []
    if paper:
        out.append((claims_markdown(), claims_html()))
    if device:
        out.append(device_section(device, db))
    return out
