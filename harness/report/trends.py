"""The nightly report's view: per-key trend figure (offline HTML) and ``summary.md``.

One panel per measured key: the median of every run with its confidence interval, markers
coloured by the run's verdict, the baseline (file) as a dashed line when one is used, and a
vertical marker at the run where the latest level shift began. plotly.js is embedded so the
file opens without a network (CI artifacts, air-gapped machines).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from harness.compare.history import KeyHistory, NightlyResult

#: Marker colour per run status (colour-blind-safe Okabe-Ito hues).
STATUS_COLORS = {
    "regression": "#D55E00",
    "suspect": "#E69F00",
    "improvement": "#009E73",
    "~": "#0072B2",
    "no-baseline": "#999999",
    "contended": "#CC79A7",
}
STATUS_WORDS = {
    "regression": "confirmed regression",
    "suspect": "suspect (one violating run)",
    "improvement": "improvement",
    "~": "no change",
    "no-baseline": "no baseline yet",
    "contended": "unreliable (contended: the machine was busy; no verdict)",
}


def trend_figure(result: NightlyResult) -> go.Figure:
    """A figure with one row per key: run medians (ms) with CI error bars, coloured by status."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    keys = result.keys
    n = max(1, len(keys))
    titles = [
        f"{k.label} [{k.context.get('backend')}/{k.context.get('device')}/{k.context.get('dtype')}]"
        f" - {STATUS_WORDS.get(k.status, k.status)}"
        for k in keys
    ] or ["no keys"]
    fig = make_subplots(rows=n, cols=1, subplot_titles=titles, vertical_spacing=min(0.08, 0.6 / n))
    shown: set[str] = set()
    for row, k in enumerate(keys, start=1):
        x = list(range(len(k.runs)))
        ticks = [f"{r.created_at[:10]}<br>{r.run_id[-6:]}" for r in k.runs]
        statuses = [s.status for s in k.steps]
        plus = [
            (h - m) if not (math.isnan(h) or math.isnan(m)) else 0.0
            for m, h in zip(k.medians_ms, k.ci_high_ms, strict=True)
        ]
        minus = [
            (m - lo) if not (math.isnan(lo) or math.isnan(m)) else 0.0
            for m, lo in zip(k.medians_ms, k.ci_low_ms, strict=True)
        ]
        hover = [
            f"run {r.run_id}<br>{r.created_at}<br>commit {str(r.git_commit or '?')[:10]}<br>"
            f"median {m:.3f} ms<br>{STATUS_WORDS.get(s, s)}"
            + (
                f"<br>ratio {st.comparison.ratio:.3f}, p {st.comparison.p_value:.2g}"
                if st.comparison
                else ""
            )
            for r, m, s, st in zip(k.runs, k.medians_ms, statuses, k.steps, strict=True)
        ]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=k.medians_ms,
                mode="lines",
                line=dict(color="#BBBBBB", width=1),
                hoverinfo="skip",
                showlegend=False,
            ),
            row=row,
            col=1,
        )
        for status in dict.fromkeys(statuses):
            idx = [i for i, s in enumerate(statuses) if s == status]
            fig.add_trace(
                go.Scatter(
                    x=[x[i] for i in idx],
                    y=[k.medians_ms[i] for i in idx],
                    mode="markers",
                    marker=dict(color=STATUS_COLORS.get(status, "#000000"), size=9),
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=[plus[i] for i in idx],
                        arrayminus=[minus[i] for i in idx],
                        thickness=1.2,
                    ),
                    name=STATUS_WORDS.get(status, status),
                    legendgroup=status,
                    showlegend=status not in shown,
                    hovertext=[hover[i] for i in idx],
                    hoverinfo="text",
                ),
                row=row,
                col=1,
            )
            shown.add(status)
        if k.baseline_median_ms is not None:
            fig.add_hline(
                y=k.baseline_median_ms,
                line=dict(dash="dash", color="#555555"),
                row=row,
                col=1,
                annotation_text="baseline file",
                annotation_position="top left",
            )
        if k.shift_index is not None:
            fig.add_vline(
                x=k.shift_index - 0.5,
                line=dict(dash="dot", color=STATUS_COLORS["regression"]),
                row=row,
                col=1,
                annotation_text="level shift",
                annotation_position="top right",
            )
        fig.update_xaxes(tickmode="array", tickvals=x, ticktext=ticks, row=row, col=1)
        fig.update_yaxes(title_text="median ms", row=row, col=1)
    fig.update_layout(
        title=f"Nightly trends, machine {result.machine_id} - run {result.run_id} (baseline: {result.baseline})",
        height=max(360, 280 * n),
        template="plotly_white",
        hovermode="closest",
    )
    return fig


def write_trends_html(result: NightlyResult, path: str | Path) -> Path:
    """Write the trend figure as a self-contained HTML file (plotly.js embedded)."""
    p = Path(path)
    trend_figure(result).write_html(p, include_plotlyjs=True, full_html=True)
    return p


def _verdict_words(k: KeyHistory) -> str:
    words = STATUS_WORDS.get(k.status, k.status)
    return words + (" (noisy run: IQR/median > 10%)" if k.noisy else "")


def _fmt_row(k: KeyHistory) -> str:
    c = k.latest
    shift = f"`{k.shift_run.run_id}`" if k.shift_run else ""
    if c is None:
        return f"| {k.label} | {k.context.get('backend')} {k.context.get('dtype')} | - | {k.medians_ms[-1]:.3f} | - | - | - | {_verdict_words(k)} | {shift} |"
    ci = "" if math.isnan(c.ratio_ci_low) else f" [{c.ratio_ci_low:.3f}, {c.ratio_ci_high:.3f}]"
    p = f"{c.p_value:.1e}" if c.p_value < 1e-3 else f"{c.p_value:.3f}"
    return (
        f"| {k.label} | {k.context.get('backend')} {k.context.get('dtype')} | {c.baseline_median_ms:.3f} | "
        f"{c.candidate_median_ms:.3f} | {c.ratio:.3f}{ci} | {1 + c.threshold:.3f} | {p} | {_verdict_words(k)} | {shift} |"
    )


def summary_markdown(result: NightlyResult) -> str:
    """A short Markdown summary suitable for a CI comment: headline, then one table row per key."""
    if result.confirmed:
        head = f"**{len(result.confirmed)} confirmed regression(s)** (exit 1)"
    elif result.failed:
        head = f"**{len(result.failed)} point(s) failed to measure** (exit 1)"
    elif result.suspects:
        head = f"no confirmed regression; {len(result.suspects)} suspect key(s) to watch tomorrow (exit 0)"
    else:
        head = "no regression (exit 0)"
    lines = [
        f"# Nightly {result.created_at[:10]}: {head}",
        "",
        f"- run `{result.run_id}`, commit `{str(result.git_commit or '?')[:12]}`, machine `{result.machine_id}`",
        f"- baseline: {result.baseline}",
        *[f"- FAILED: {f}" for f in result.failed],
        f"- rule: regression = Mann-Whitney U p < {result.alpha:g} AND median ratio >= 1 + threshold "
        f"({result.threshold:.0%}, raised to the window's night-to-night noise where larger: column 'bar'); "
        "confirmed when two consecutive runs violate it (one run = suspect)",
        "",
    ]
    order = {"regression": 0, "suspect": 1, "improvement": 2, "~": 3, "no-baseline": 4}
    keys = sorted(result.keys, key=lambda k: (order.get(k.status, 9), k.label))
    lines += [
        "| key | backend dtype | baseline ms | this run ms | ratio [95% CI] | bar | p | verdict | shift began |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | --- | --- |",
        *(_fmt_row(k) for k in keys),
        "",
    ]
    for k in result.confirmed:
        if k.shift_run is not None:
            lines.append(
                f"- {k.label}: the level shift began at run `{k.shift_run.run_id}` "
                f"({k.shift_run.created_at[:10]}, commit `{str(k.shift_run.git_commit or '?')[:12]}`)"
            )
    if result.machine_speed:
        lines.append(f"- {result.machine_speed}")
    if result.run_to_run:
        lines.append(f"- {result.run_to_run}")
    if result.contended:
        lines.append(
            f"- {len(result.contended)} key(s) contended tonight (too few clean samples; never called a "
            "regression, kept out of later baselines): "
            + ", ".join(k.label for k in result.contended)
        )
    noisy = [k.label for k in result.keys if k.noisy]
    if noisy:
        lines.append(
            f"- {len(noisy)} key(s) measured noisily tonight (IQR/median > 10%; a busy machine?): "
            + ", ".join(noisy)
        )
    if result.missing:
        lines.append(f"- not measured in this run (present earlier): {', '.join(result.missing)}")
    lines.append("- trends: `trends.html`; all numbers: `verdicts.json`, `verdicts.csv`")
    return "\n".join(lines) + "\n"
