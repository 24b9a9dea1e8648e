"""Write the report directory: index.html (offline), figures as PNG/SVG, summary.md, points.csv.

The HTML is assembled here rather than with ``plotly.io.to_html`` so that every piece of
user text is escaped in one place: HTML text through :func:`html.escape`, figure JSON with
``<``, ``>`` and ``&`` written as ``\\u003c``-style escapes (a name containing
``</script>`` cannot end the script element), and plotly text pre-escaped by
:mod:`harness.report.figures`. plotly.js is written beside the page (or inlined), never
loaded from a CDN.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report.figures import FigureSpec, build_figures
from harness.report.summary import (
    SOURCE_LABELS,
    ReportAnalysis,
    analyse,
    benchmark_label,
    fmt,
    render_markdown,
    with_defaults,
)

PLOTLY_JS = "plotly.min.js"
CHROMIUM = "/usr/bin/chromium"


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put things (``images`` may be empty: see ``notes``)."""

    out_dir: Path
    index_html: Path
    summary_md: Path
    points_csv: Path
    plotly_js: Path | None
    images: list[Path] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _safe_json(obj: Any) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _e(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return html.escape(str(value), quote=True)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
.fig{margin:1em 0 2em} .caption{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.82em} th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f4f4f4;position:sticky;top:0} td.t{text-align:left}
.notes li{color:#444} .front{font-weight:600}
"""


def _points_table(df: pd.DataFrame, benchmark: str, frontier_idx: set[int]) -> str:
    """Every point with provenance; the overall-frontier rows in bold."""
    cols = [
        ("encoder", "encoder", True),
        ("resolution", "res", False),
        ("tiling", "tiling", True),
        ("llm", "LLM", True),
        ("recipe", "recipe", True),
        ("tokens", "tokens", False),
        ("encoder_ms", "encoder ms", False),
        ("projector_ms", "projector ms", False),
        ("prefill_ms", "prefill ms", False),
        ("ttft_ms", "TTFT ms", False),
        ("_ci", "TTFT 95% CI", False),
        (benchmark, benchmark_label(benchmark), False),
        ("_lat", "latency", True),
        ("accuracy_source", "accuracy", True),
        ("machine", "machine", True),
        ("backend", "backend", True),
        ("run_id", "run", True),
    ]
    head = "".join(f"<th>{_e(h)}</th>" for _, h, _ in cols)
    body = []
    order = df.sort_values(["origin", "recipe", "ttft_ms"], kind="mergesort", na_position="last")
    for i, r in order.iterrows():
        cells = []
        for c, _, text in cols:
            if c == "_ci":
                v = (
                    f"{fmt(r['ttft_ci_low_ms'])}-{fmt(r['ttft_ci_high_ms'])}"
                    if not pd.isna(r["ttft_ci_low_ms"])
                    else ""
                )
            elif c == "_lat":
                v = SOURCE_LABELS.get(str(r["latency_source"]), str(r["latency_source"]))
                if bool(r["estimated"]):
                    v += " (estimated: layer-sampled)"
                if str(r.get("contended")) == "True":
                    v += " (UNRELIABLE: contended, machine busy)"
            elif c in ("resolution", "tokens"):
                v = "" if c not in r or pd.isna(r[c]) else str(int(r[c]))
            elif not text:
                v = fmt(r.get(c), 1) if c in r else ""
                v = "" if v == "-" else v
            else:
                v = r.get(c, "")
            cells.append(f'<td class="t">{_e(v)}</td>' if text else f"<td>{_e(v)}</td>")
        cls = ' class="front"' if i in frontier_idx else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _comparisons_html(analysis: ReportAnalysis) -> str:
    parts = []
    bl = benchmark_label(analysis.benchmark)
    for ca in analysis.contexts:
        if not ca.comparisons:
            continue
        rows = []
        for c in ca.comparisons:
            r = c.result
            rows.append(
                "<tr>"
                + "".join(
                    f'<td class="t">{_e(x)}</td>' if j < 1 else f"<td>{_e(x)}</td>"
                    for j, x in enumerate(
                        [
                            f"{c.reference} vs {c.other}",
                            f"{fmt(r.speedup_best, 2, 'x')} at {bl} {fmt(r.speedup_at_accuracy)}"
                            if r.speedup_best
                            else "no overlap",
                            fmt(r.speedup_median, 2, "x"),
                            f"{fmt(r.gain_best, 2)} at {fmt(r.gain_at_ttft_ms, 0)} ms"
                            if r.gain_best is not None
                            else "no overlap",
                            fmt(r.gain_median, 2),
                            f"{fmt(r.hypervolume_a, 2)} / {fmt(r.hypervolume_b, 2)}",
                        ]
                    )
                )
                + "</tr>"
            )
        parts.append(
            f"<h3>{_e(ca.context.label)}</h3><table><thead><tr><th>reference vs other</th>"
            "<th>best speedup at equal accuracy</th><th>median speedup</th>"
            f"<th>best {_e(bl)} gain at equal TTFT</th><th>median gain</th><th>hypervolume ref / other</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    if not parts:
        return ""
    return (
        "<h2>Frontier comparisons</h2><p class=caption>Speedup = the other encoder's TTFT / the reference's at the "
        f"same {_e(bl)} (step frontiers, over the accuracy range both reach); gain = reference minus other at the "
        "same TTFT (log-spaced budgets over the shared TTFT range); hypervolume in "
        f"{_e(bl)} x log10(TTFT) against a shared reference point.</p>" + "".join(parts)
    )


def export_static(
    specs: list[FigureSpec],
    out_dir: Path,
    formats: tuple[str, ...] = ("png", "svg"),
    timeout_s: float = 180.0,
) -> tuple[list[Path], list[str]]:
    """PNG/SVG of each figure through kaleido + chromium, in a child process with a timeout.

    A child keeps a hung browser from hanging the report; any failure becomes a note.
    """
    if not specs:
        return [], []
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return [], ["static images skipped: kaleido is not installed (pip install kaleido)"]
    browser, why = find_browser()
    if browser is None:
        return [], [why]
    env = dict(os.environ)
    env["BROWSER_PATH"] = browser  # kaleido 1.x (choreographer) takes the browser from here
    paths = [out_dir / f"{s.key}.{fmt_}" for s in specs for fmt_ in formats]
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(
            json.dumps(
                {
                    "figs": [s.figure.to_json() for s in specs for _ in formats],
                    "paths": [str(p) for p in paths],
                }
            )
        )
        code = (
            "import json,sys,plotly.io as pio\n"
            "j=json.load(open(sys.argv[1]))\n"
            "pio.write_images([pio.from_json(f) for f in j['figs']], j['paths'], width=1100, height=600)\n"
        )
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code, str(job)],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return [], [f"static images skipped: the exporter did not finish in {timeout_s:.0f} s"]
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return [], [f"static images skipped: kaleido/chromium failed ({last[:200]})"]
    made = [p for p in paths if p.exists() and p.stat().st_size > 0]
    return made, [] if len(made) == len(paths) else [
        f"static images: {len(paths) - len(made)} not written"
    ]


def render_html(
    title: str,
    specs: list[FigureSpec],
    analysis: ReportAnalysis,
    df: pd.DataFrame,
    notes: list[str],
    *,
    plotly_src: str | None,
    plotly_inline: str | None,
    extra_html: str = "",
) -> str:
    """The index.html text (pure)."""
    frontier_idx: set[int] = set()
    for ca in analysis.contexts:
        frontier_idx |= set(ca.frontier["_row"].tolist()) if "_row" in ca.frontier else set()
    script = (
        f"<script>{plotly_inline}</script>"
        if plotly_inline is not None
        else f'<script src="{_e(plotly_src)}"></script>'
    )
    figs_html = []
    calls = []
    for i, s in enumerate(specs):
        div = f"fig-{i}"
        figs_html.append(
            f'<div class="fig"><h2>{_e(s.title)}</h2><div id="{div}"></div>'
            f'<p class="caption">{_e(s.caption)}</p></div>'
        )
        # One script element per figure: an error in one must not stop the others from drawing.
        calls.append(
            f'(function(f){{Plotly.newPlot("{div}",f.data,f.layout,'
            f'{{"displaylogo":false,"responsive":true}});}})({_safe_json(s.figure.to_json())});'
        )
    boot = "".join(f"<script>{c}</script>" for c in calls)
    notes_html = "".join(f"<li>{_e(n)}</li>" for n in notes)
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)}</title><meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<style>{CSS}</style>{script}</head><body>"
        f"<h1>{_e(title)}</h1>"
        f"<p>{analysis.n_points} point(s); {analysis.n_with_accuracy} with {_e(benchmark_label(analysis.benchmark))}. "
        "TTFT = vision encoder + projector + LLM prefill (median; CI = 95% bootstrap). Latency provenance: "
        "<i>measured here</i> (this harness), <i>imported</i> (latency CSV), <i>paper</i> (FastVLM, M1 Max); "
        "<i>estimated</i> = prefill timed on a sample of layers and scaled.</p>"
        f"<ul class=notes>{notes_html}</ul>"
        + "".join(figs_html)
        + _comparisons_html(analysis)
        + extra_html
        + "<h2>All points</h2><p class=caption>Bold rows are on the overall frontier of their context.</p>"
        + _points_table(df, analysis.benchmark, frontier_idx)
        + boot
        + "</body></html>"
    )


def write_report(
    points_result: Any,
    out_dir: str | Path,
    title: str = "vlm-pareto report",
    *,
    benchmark: str = "avg5",
    reference_encoder: str = "fastvithd",
    static: bool = True,
    inline_js: bool = False,
    static_timeout_s: float = 180.0,
    sections: Sequence[tuple[str, str]] = (),
) -> ReportPaths:
    """Write the report for a :class:`harness.points.PointsResult` (or a joined-points DataFrame).

    Creates ``out_dir`` with ``index.html`` (+ ``plotly.min.js`` unless ``inline_js``),
    ``summary.md``, ``points.csv`` and, when ``static`` and kaleido + chromium work, a PNG
    and an SVG per figure. Returns the paths and notes (what was omitted or skipped, and why).
    ``sections``: extra ``(markdown, html)`` blocks (e.g. the paper's claims checked).
    """
    from plotly.offline import get_plotlyjs

    if isinstance(points_result, pd.DataFrame):
        points, notes = points_result, []
    else:
        points, notes = points_result.points, list(getattr(points_result, "notes", []) or [])
        for attr, what in (
            ("unmatched_latency", "latency row(s)"),
            ("unmatched_accuracy", "accuracy row(s)"),
        ):
            extra = getattr(points_result, attr, None)
            if extra is not None and len(extra):
                notes.append(f"{len(extra)} {what} had no partner in the join (not drawn)")
    out = Path(out_dir)
    try:  # fail before any work if the folder cannot be written
        out.mkdir(parents=True, exist_ok=True)
        # one probe per process: multirun jobs writing one folder at once must not race
        probe = out / f".vlm-pareto-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        from harness.errors import UserError

        raise UserError(
            f"cannot write the report to {out}: {e.strerror or e}; pass --out elsewhere"
        ) from e
    df = with_defaults(points)
    df["_row"] = range(len(df))
    analysis = analyse(df, benchmark, reference_encoder)
    specs, fig_notes = build_figures(df, analysis)
    notes = notes + analysis.notes + fig_notes

    images: list[Path] = []
    if static:
        images, img_notes = export_static(specs, out, timeout_s=static_timeout_s)
        notes += img_notes
    else:
        notes.append("static images not requested")

    js_path = None
    if inline_js:
        page = render_html(
            title,
            specs,
            analysis,
            df,
            notes,
            plotly_src=None,
            plotly_inline=get_plotlyjs(),
            extra_html="".join(h for _, h in sections),
        )
    else:
        js_path = out / PLOTLY_JS
        js_path.write_text(get_plotlyjs(), encoding="utf-8")
        page = render_html(
            title,
            specs,
            analysis,
            df,
            notes,
            plotly_src=PLOTLY_JS,
            plotly_inline=None,
            extra_html="".join(h for _, h in sections),
        )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    csv_path = out / "points.csv"
    df.drop(columns=["_row", "origin"]).to_csv(csv_path, index=False)
    files = {p.name: str(p) for p in [index, csv_path, *images]}
    summary = out / "summary.md"
    summary.write_text(
        render_markdown(
            analysis, title, notes=notes, files=files, extra_md="\n".join(m for m, _ in sections)
        ),
        encoding="utf-8",
    )
    return ReportPaths(
        out, index, summary, csv_path, js_path, images, [s.key for s in specs], notes
    )


#: the one line printed when no browser can be had (what to install, and what still works)
NO_BROWSER = (
    "static images skipped: no Chrome/Chromium for kaleido; install one (Debian/Ubuntu: "
    "'sudo apt-get install chromium'; elsewhere: 'plotly_get_chrome') or set BROWSER_PATH, then run "
    "'vlm-pareto report' again (index.html is written)"
)


def _is_exe(path: str | Path) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK)


def find_browser() -> tuple[str | None, str]:
    """A Chrome/Chromium for kaleido, or ``(None, one line saying what to install)``.

    Looks at ``$BROWSER_PATH``, Debian's ``/usr/bin/chromium``, then choreographer's own search
    (Chrome, Chromium, Edge, Brave on ``PATH`` and their usual install paths, and a browser
    downloaded by ``plotly_get_chrome``).
    """
    env = os.environ.get("BROWSER_PATH")
    if env:
        if _is_exe(env):
            return env, ""
        return None, (
            f"static images skipped: BROWSER_PATH={env!r} is not an executable; point it at Chrome/"
            "Chromium or unset it (index.html is written)"
        )
    if _is_exe(CHROMIUM):
        return CHROMIUM, ""
    try:
        from choreographer.browsers.chromium import Chromium

        found = Chromium.find_browser(skip_local=False)
    except Exception:  # an older/newer choreographer: fall back to PATH
        found = next(
            (
                w
                for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
                if (w := shutil.which(n))
            ),
            None,
        )
    if found and _is_exe(found):
        return str(found), ""
    return None, NO_BROWSER


def chromium_path() -> str | None:
    """Debian's chromium if present (used by tests and by the static exporter)."""
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
