"""``vlm-pareto report``: the Pareto report (index.html, PNG/SVG, summary.md, points.csv)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from harness.errors import UserError, suggest
from harness.points import add_input_args, points_from_args


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="write the Pareto report (HTML, figures, summary.md, CSV)",
        description="Join latency and accuracy, draw accuracy-vs-TTFT frontiers, the TTFT breakdown, static vs "
        "tiled inputs and encoder scaling, and write an offline report directory.",
        epilog="Examples: vlm-pareto report --source paper --out reports/paper ; vlm-pareto report --all-runs ; "
        "vlm-pareto report --latency-csv phone.csv --accuracy acc.csv --out reports/phone",
    )
    add_input_args(p)
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help="output directory (default: reports/<name>/)")
    o.add_argument(
        "--name", default=None, help="report name (default: the run id, 'paper' or 'imported')"
    )
    o.add_argument("--title", default=None, help="page title")
    o.add_argument(
        "--reference-encoder",
        default="fastvithd",
        help="encoder whose frontier the others are compared with (default: fastvithd)",
    )
    o.add_argument(
        "--no-static", action="store_true", help="skip PNG/SVG export (kaleido + chromium)"
    )
    o.add_argument(
        "--inline-js",
        action="store_true",
        help="embed plotly.js in index.html (one self-contained file)",
    )
    o.add_argument(
        "--json",
        action="store_true",
        help="print the written paths, the notes and the joined points as JSON",
    )
    return p


def _name(args: argparse.Namespace) -> str:
    if args.name:
        name = args.name
    elif args.source == "paper":
        name = "paper"
    elif args.latency_csv:
        name = "imported"
    elif args.runs:
        name = "+".join(args.runs)
    elif args.all_runs:
        name = "all-runs"
    else:
        name = "latest"
    # The name becomes a directory: keep it to a safe character set.
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-.")
    if not safe:
        raise UserError(f"report name {name!r} has no usable characters; pass --name")
    return safe


def _runtimes_section(db: str | None, run_ids: list[str] | None) -> list[tuple[str, str]]:
    """The runtime-comparison table, when the reported runs measured two runtimes or more."""
    from harness.report.runtimes import runtimes_compared, speedup_table, table_section
    from harness.store import Store

    store = Store(db, readonly=True)
    table = speedup_table(store.measurements(run_ids=run_ids))
    return [table_section(table)] if runtimes_compared(table) >= 2 else []


def run(args: argparse.Namespace) -> int:
    from harness.report.html import write_report

    result = points_from_args(args)
    if result.points.empty:
        raise UserError(
            "no points to report (nothing joined); see 'vlm-pareto runs' and 'vlm-pareto ingest'"
        )
    _check_reference(args.reference_encoder, result.points)
    name = _name(args)
    out = Path(args.out) if args.out else Path("reports") / name
    title = args.title or f"vlm-pareto report: {name}"
    sections = []
    if args.source == "paper" or getattr(args, "device", None):
        from harness.predict.report import report_sections

        sections = report_sections(
            paper=args.source == "paper",
            device=getattr(args, "device", None),
            db=getattr(args, "db", None),
        )
    if result.source == "store":
        sections.extend(_runtimes_section(getattr(args, "db", None), result.run_ids))
    paths = write_report(
        result,
        out,
        title,
        benchmark=result.benchmark,
        reference_encoder=args.reference_encoder,
        static=not args.no_static,
        inline_js=args.inline_js,
        sections=sections,
    )
    if args.json:
        import json

        points = json.loads(result.points.to_json(orient="records"))
        print(
            json.dumps(
                {
                    "index_html": str(paths.index_html),
                    "summary_md": str(paths.summary_md),
                    "points_csv": str(paths.points_csv),
                    "images": [str(p) for p in paths.images],
                    "figures": list(paths.figures),
                    "notes": list(paths.notes),
                    "points": points,
                    "unmatched_latency": len(result.unmatched_latency),
                    "unmatched_accuracy": len(result.unmatched_accuracy),
                },
                indent=2,
            )
        )
        return 0
    print(f"report: {paths.index_html}")
    print(f"summary: {paths.summary_md}")
    print(f"points: {paths.points_csv} ({len(result.points)} rows)")
    print(f"figures: {len(paths.figures)}; static images: {len(paths.images)}")
    for n in paths.notes:
        print(f"note: {n}")
    return 0


def _check_reference(reference: str, points: Any) -> None:
    """A reference encoder must be one of the points' encoders or a zoo name (did-you-mean);
    a zoo encoder absent from these points is only a note in the report."""
    from harness.encoders.zoo import list_encoders

    known = {str(e) for e in points["encoder"].dropna().unique()} if "encoder" in points else set()
    for spec in list_encoders():
        known.update((spec.name, *spec.aliases))
    if reference not in known:
        raise UserError(suggest(reference, sorted(known), "--reference-encoder"))
