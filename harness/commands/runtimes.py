"""``vlm-pareto runtimes``: deployment runtimes side by side with fp32 eager PyTorch.

Reads the store (no torch import): per encoder + resolution and per LLM + token count, every
runtime's median latency, its speedup over ``torch:float32`` measured in the same runs, the
parity with fp32 eager stored with it, and the export / compile seconds; skipped and failed
runtimes with their reason. ``--html FILE`` also writes accuracy vs TTFT with one frontier
per runtime (accuracy joined as ``vlm-pareto report`` does).
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "runtimes",
        help="runtime-comparison table: speedup vs fp32 eager per encoder+resolution and LLM+tokens",
        description="Compare deployment runtimes (onnxrt, executorch, torch-compile, bf16/int8) with fp32 eager "
        "PyTorch from the measurements in the store (e.g. a `sweep -m --config-name paper_table4_runtimes` run).",
        epilog="Example: vlm-pareto runtimes --all-runs --html reports/runtimes.html",
    )
    p.add_argument(
        "--run", dest="runs", action="append", metavar="ID", help="a run in the store (repeatable)"
    )
    p.add_argument(
        "--all-runs", action="store_true", help="every run in the store (default: the latest run)"
    )
    p.add_argument(
        "--reference",
        default="torch:float32",
        help="the baseline runtime, backend:dtype (default torch:float32)",
    )
    p.add_argument(
        "--html",
        default=None,
        metavar="FILE",
        help="also write accuracy vs TTFT, one frontier per runtime",
    )
    p.add_argument("--benchmark", default="avg5", help="accuracy axis of --html (default avg5)")
    p.add_argument("--json", action="store_true", help="print the table as JSON records")
    return p


def run(args: argparse.Namespace) -> int:
    import os

    from harness.errors import UserError
    from harness.report.runtimes import speedup_table, table_markdown
    from harness.store import Store

    store = Store(getattr(args, "db", None) or os.environ.get("VLM_PARETO_DB"), readonly=True)
    run_ids = args.runs
    if not run_ids and not args.all_runs:
        runs = store.list_runs()
        if not runs:
            raise UserError("the store has no runs; run 'vlm-pareto sweep' first")
        run_ids = [runs[-1]["id"]]  # list_runs is oldest first
    for r in run_ids or []:
        store.require_run(r)
    table = speedup_table(store.measurements(run_ids=run_ids), reference=args.reference)
    seen = sorted({str(r) for r in table["runtime"]}) if "runtime" in table else []
    if args.reference != "torch:float32" and seen and args.reference not in seen:
        from harness.errors import suggest

        raise UserError(
            suggest(args.reference, seen, "--reference runtime (backend:dtype) in these runs")
        )
    if args.json:
        print(json.dumps(table.to_dict("records"), indent=1, default=str))
    else:
        print(table_markdown(table, reference=args.reference))
    if args.html:
        from pathlib import Path

        from harness.points import add_input_args, points_from_args
        from harness.report.runtimes import frontier_per_runtime

        p = argparse.ArgumentParser()
        add_input_args(p)
        pargs = p.parse_args(
            [x for r in (run_ids or []) for x in ("--run", r)]
            + (["--all-runs"] if args.all_runs else [])
            + ["--benchmark", args.benchmark]
        )
        pargs.db = getattr(args, "db", None)
        points = points_from_args(pargs)
        fig = frontier_per_runtime(points.points, points.benchmark)
        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        fig.write_html(args.html, include_plotlyjs=True)
        print(f"figure: {args.html}")
    return 0
