"""Report analysis (pure) and the Markdown summary written for CI comments.

Points are split into *contexts*: rows whose latencies come from the same origin (paper /
measured / imported, machine, backend) and whose accuracy comes from the same training
recipe. Frontiers and comparisons are computed only within a context, so paper TTFTs from an
M1 Max are never ranked against CPU measurements from this machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.pareto import FrontierComparison, compare_frontiers, fronts_by_group

SOURCE_LABELS = {"measured": "measured here", "imported": "imported", "paper": "paper"}
BENCHMARK_LABELS = {
    "avg5": "Avg-5",
    "gqa": "GQA",
    "textvqa": "TextVQA",
    "pope": "POPE",
    "docvqa": "DocVQA",
    "seedbench": "SeedBench-I",
    "sqa": "ScienceQA",
    "mmmu": "MMMU",
    "mmvet": "MM-Vet",
    "vqav2": "VQAv2",
    "llava_bench": "LLaVA-Bench",
}


def benchmark_label(name: str) -> str:
    return BENCHMARK_LABELS.get(name, name)


def _text(value: object, default: str = "unknown") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return default
    s = str(value).strip()
    return s or default


def origin_label(latency_source: object, machine: object, backend: object) -> str:
    """e.g. 'measured here on <machine> (torch-cpu)' or 'paper on M1 Max (coreml+mlx)'."""
    src = SOURCE_LABELS.get(_text(latency_source), _text(latency_source))
    where, how = _text(machine, "unknown machine"), _text(backend, "unknown backend")
    if where.startswith(src):  # a prediction's machine is already 'predicted for <device>'
        return f"{where} ({how})"
    return f"{src} on {where} ({how})"


def with_defaults(points: pd.DataFrame) -> pd.DataFrame:
    """A copy with the provenance columns the report relies on always present."""
    df = points.reset_index(drop=True).copy()
    for col, default in (
        ("latency_source", "unknown"),
        ("accuracy_source", ""),
        ("machine", "unknown machine"),
        ("backend", "unknown backend"),
        ("recipe", "llava-1.5"),
        ("tiling", "none"),
        ("estimated", False),
    ):
        if col not in df.columns:
            df[col] = default
    for col in (
        "encoder_ms",
        "projector_ms",
        "prefill_ms",
        "ttft_ms",
        "ttft_ci_low_ms",
        "ttft_ci_high_ms",
        "ttft_p90_ms",
        "tokens",
        "resolution",
    ):
        if col not in df.columns:
            df[col] = np.nan
    df["estimated"] = [bool(v) if v is not None and v == v else False for v in df["estimated"]]
    df["origin"] = [
        origin_label(s, m, b)
        for s, m, b in zip(df["latency_source"], df["machine"], df["backend"], strict=True)
    ]
    return df


@dataclass(frozen=True)
class Context:
    """Rows sharing one latency origin (and, for accuracy views, one recipe)."""

    label: str
    origin: str
    recipe: str | None
    rows: pd.DataFrame


def latency_contexts(df: pd.DataFrame) -> list[Context]:
    """One context per latency origin (recipes merged: latency does not depend on them)."""
    return [
        Context(str(o), str(o), None, g.reset_index(drop=True))
        for o, g in df.groupby("origin", sort=True)
    ]


def accuracy_contexts(df: pd.DataFrame) -> list[Context]:
    """One context per (latency origin, recipe)."""
    out = []
    for (o, r), g in df.groupby(["origin", "recipe"], sort=True):
        out.append(Context(f"{o}; recipe {r}", str(o), str(r), g.reset_index(drop=True)))
    return out


@dataclass(frozen=True)
class Comparison:
    reference: str
    other: str
    result: FrontierComparison


@dataclass(frozen=True)
class ContextAnalysis:
    """Frontiers and comparisons of one accuracy context."""

    context: Context
    frontier: pd.DataFrame  # overall frontier rows, sorted by TTFT
    encoder_frontiers: dict[str, pd.DataFrame]
    comparisons: list[Comparison]
    excluded_nan: int


@dataclass(frozen=True)
class ReportAnalysis:
    benchmark: str
    contexts: list[ContextAnalysis]
    n_points: int
    n_with_accuracy: int
    notes: list[str] = field(default_factory=list)


def analyse(
    points: pd.DataFrame, benchmark: str = "avg5", reference_encoder: str = "fastvithd"
) -> ReportAnalysis:
    """Per-context frontiers (overall and per encoder) and ``reference_encoder`` vs others.

    Comparisons read "reference vs other": speedup > 1 means the reference reaches the same
    accuracy faster; gain > 0 means it is more accurate at the same TTFT.
    """
    df = with_defaults(points)
    if benchmark not in df.columns:
        df[benchmark] = np.nan
    objectives = ((benchmark, "max"), ("ttft_ms", "min"))
    out: list[ContextAnalysis] = []
    for ctx in accuracy_contexts(df):
        rows = ctx.rows
        usable = rows[benchmark].notna() & rows["ttft_ms"].notna()
        if not usable.any():
            continue
        gf = fronts_by_group(rows, "encoder", objectives)
        frontier = rows.iloc[gf.overall.front].sort_values("ttft_ms", kind="mergesort")
        enc_fronts = {
            e: rows.iloc[r.front].sort_values("ttft_ms", kind="mergesort")
            for e, r in gf.groups.items()
            if len(r)
        }
        comparisons = []
        if reference_encoder in enc_fronts:
            ref = rows[rows["encoder"].astype(str) == reference_encoder]
            for other in sorted(enc_fronts):
                if other == reference_encoder:
                    continue
                oth = rows[rows["encoder"].astype(str) == other]
                res = compare_frontiers(ref, oth, accuracy=benchmark, ttft="ttft_ms")
                comparisons.append(Comparison(reference_encoder, other, res))
        out.append(ContextAnalysis(ctx, frontier, enc_fronts, comparisons, gf.overall.excluded_nan))
    n_acc = int(df[benchmark].notna().sum())
    notes = []
    if n_acc == 0:
        notes.append(
            f"no point has {benchmark_label(benchmark)} accuracy: accuracy figures and frontiers are omitted"
        )
    encoders = sorted(set(df["encoder"].astype(str))) if "encoder" in df else []
    if encoders and reference_encoder not in encoders:
        notes.append(
            f"reference encoder {reference_encoder!r} has no points (encoders: {', '.join(encoders)}): "
            "no frontier comparisons; pass --reference-encoder"
        )
    return ReportAnalysis(benchmark, out, len(df), n_acc, notes)


# ------------------------------------------------------------------------------ Markdown


def md_escape(value: object) -> str:
    """Neutralise Markdown/HTML in user-provided names (CI comments render HTML)."""
    s = _text(value, "")
    for ch, rep in (
        ("&", "&amp;"),
        ("<", "&lt;"),
        (">", "&gt;"),
        ("|", "\\|"),
        ("`", "\\`"),
        ("*", "\\*"),
        ("_", "\\_"),
        ("[", "\\["),
        ("]", "\\]"),
    ):
        s = s.replace(ch, rep)
    return s.replace("\n", " ")


def fmt(x: object, digits: int = 1, suffix: str = "") -> str:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(v):
        return "-"
    return f"{v:.{digits}f}{suffix}"


def config_label(row: pd.Series) -> str:
    """'fastvithd @ 1024 px (2x2+overview) + qwen2-1.5b' (raw text; escape before use)."""
    res = row.get("resolution")
    res_s = f"{int(res)} px" if res is not None and not pd.isna(res) else "? px"
    tiling = _text(row.get("tiling"), "none")
    tile = f" ({tiling})" if tiling != "none" else ""
    return f"{_text(row.get('encoder'))} @ {res_s}{tile} + {_text(row.get('llm'))}"


def render_markdown(
    analysis: ReportAnalysis,
    title: str,
    *,
    notes: list[str] | None = None,
    files: dict[str, str] | None = None,
    extra_md: str = "",
) -> str:
    """summary.md: frontiers, reference-encoder comparisons and provenance, for a CI comment."""
    bl = benchmark_label(analysis.benchmark)
    lines = [f"# {md_escape(title)}", ""]
    lines.append(f"{analysis.n_points} point(s), {analysis.n_with_accuracy} with {bl} accuracy.")
    lines.append("")
    for ca in analysis.contexts:
        lines.append(
            f"## Latencies: {md_escape(ca.context.origin)}; recipe {md_escape(ca.context.recipe)}"
        )
        lines.append("")
        lines.append(f"Overall Pareto frontier ({bl} vs TTFT):")
        lines.append("")
        lines.append(f"| configuration | TTFT ms (95% CI) | {bl} | provenance |")
        lines.append("| --- | --- | --- | --- |")
        for _, r in ca.frontier.iterrows():
            ci = ""
            if not pd.isna(r.get("ttft_ci_low_ms")) and not pd.isna(r.get("ttft_ci_high_ms")):
                ci = f" ({fmt(r['ttft_ci_low_ms'])}-{fmt(r['ttft_ci_high_ms'])})"
            prov = md_escape(
                SOURCE_LABELS.get(_text(r.get("latency_source")), _text(r.get("latency_source")))
            )
            if bool(r.get("estimated", False)):
                prov += ", estimated (layer-sampled)"
            if str(r.get("contended")) == "True":
                prov += ", UNRELIABLE (contended)"
            lines.append(
                f"| {md_escape(config_label(r))} | {fmt(r['ttft_ms'])}{ci} | {fmt(r[analysis.benchmark])} | {prov} |"
            )
        lines.append("")
        if ca.comparisons:
            lines.append(
                "Frontier comparisons (speedup = other's TTFT / reference's TTFT at equal accuracy; "
                f"gain = reference's {bl} - other's at equal TTFT; hypervolume in {bl} x log10 TTFT):"
            )
            lines.append("")
            lines.append(
                "| reference vs other | speedup best (median) | gain best (median) | hypervolume ref / other |"
            )
            lines.append("| --- | --- | --- | --- |")
            for c in ca.comparisons:
                fc = c.result
                sp = (
                    f"{fmt(fc.speedup_best, 2, 'x')} ({fmt(fc.speedup_median, 2, 'x')})"
                    if fc.speedup_best
                    else "no overlap"
                )
                gn = (
                    f"{fmt(fc.gain_best, 2, '')} ({fmt(fc.gain_median, 2, '')})"
                    if fc.gain_best is not None
                    else "no overlap"
                )
                lines.append(
                    f"| {md_escape(c.reference)} vs {md_escape(c.other)} | {sp} | {gn} | "
                    f"{fmt(fc.hypervolume_a, 2)} / {fmt(fc.hypervolume_b, 2)} |"
                )
            lines.append("")
    for n in analysis.notes + list(notes or []):
        lines.append(f"- {md_escape(n)}")
    if extra_md:
        lines += ["", extra_md.rstrip()]
    if files:
        lines.append("")
        lines.append("Files: " + ", ".join(f"`{k}`" for k in files))
    return "\n".join(lines).rstrip() + "\n"
