"""``vlm-pareto search``: an Optuna study over a space too large to sweep (see harness/search/)."""

from __future__ import annotations

import argparse
import json
import os
from typing import SupportsFloat

from harness.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "search",
        help="Optuna search of a large configuration space under a budget",
        description="Search (encoder, resolution in steps of the encoder stride, tiling, LLM) with Optuna: each "
        "proposed configuration's TTFT is measured through the sweep runners into one run of the store (tasks "
        "already measured in that run are reused); accuracy comes from known rows or, failing that, a surrogate "
        "fitted on them (labelled 'predicted'). Objectives: max accuracy and min TTFT, with the budget as a "
        "constraint. The study is kept in the store's database: --resume continues it.",
        epilog="Exit codes: 0 a feasible configuration was found, 1 none fits the budget, 2 bad input. Example: "
        "vlm-pareto search --preset paper_fig4 --backend fake --budget-ms 2000 --trials 60",
    )
    s = p.add_argument_group("space")
    s.add_argument(
        "--preset",
        default=None,
        help="take the space from a sweep preset, widened to min..max "
        "resolution in steps of each encoder's stride (e.g. paper_fig4)",
    )
    s.add_argument("--encoders", nargs="+", metavar="NAME", help="encoders (replace the preset's)")
    s.add_argument("--llms", nargs="+", metavar="NAME", help="LLMs (replace the preset's)")
    s.add_argument(
        "--resolution-range", metavar="MIN:MAX", help="resolution range in pixels, e.g. 256:1024"
    )
    s.add_argument("--tilings", nargs="+", metavar="SPEC", help="tilings, e.g. none 2x2+overview")
    m = p.add_argument_group("measurement")
    m.add_argument(
        "--backend", default=None, help="backend config: torch-cpu (default), fake, torch-cuda, ..."
    )
    m.add_argument(
        "--protocol", default=None, help="measurement protocol: quick (default), standard, rigorous"
    )
    o = p.add_argument_group("objective")
    o.add_argument(
        "--budget-ms",
        default=None,
        help="TTFT budget in ms (the constraint); omit for the whole front",
    )
    o.add_argument(
        "--by",
        choices=["ci-high", "p90", "median"],
        default=None,
        help="TTFT compared with the budget (default ci-high: the upper end of the 95%% CI)",
    )
    o.add_argument(
        "--benchmark", default=None, help="accuracy axis: avg5 (default) or gqa, textvqa, ..."
    )
    o.add_argument(
        "--recipe",
        default=None,
        help="training recipe of the accuracy (default: the preset's, else llava-1.5)",
    )
    o.add_argument(
        "--accuracy", action="append", metavar="FILE", help="tidy accuracy CSV (repeatable)"
    )
    o.add_argument(
        "--no-paper-accuracy", action="store_true", help="do not use the paper's accuracy rows"
    )
    st = p.add_argument_group("study")
    st.add_argument(
        "--trials",
        type=int,
        default=50,
        help="new configurations to evaluate in this session (default 50); "
        "re-proposals of evaluated ones are answered from the study and not counted; "
        "0 with --resume reports the stored study",
    )
    st.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    st.add_argument(
        "--study-name", default=None, help="study name (default: derived from the settings)"
    )
    st.add_argument("--resume", action="store_true", help="continue the study named --study-name")
    st.add_argument(
        "--no-prune",
        action="store_true",
        help="let Optuna's TPE propose every trial from 10 random ones and measure each (default: "
        "start from a small design that shows the cost model every encoder and LLM; then the cost "
        "model, calibrated on this search's measurements, proposes the configuration whose "
        "optimistic TTFT adds most to the front, and proposals that cannot reach the front are "
        "skipped)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--json", action="store_true", help='print {"best", "front", "counts", ...} as JSON'
    )
    out.add_argument(
        "--report", metavar="DIR", default=None, help="also write the Pareto report of the points"
    )
    out.add_argument(
        "--quiet",
        action="store_true",
        help="no progress on stderr (per-trial and per-measurement lines, or the bar on a terminal)",
    )
    return p


def _ms(x: SupportsFloat | str | None) -> str:
    return "n/a" if x is None else f"{float(x):.1f}"


def _label(o: dict) -> str:
    tiling = "" if o.get("tiling") in (None, "none") else f", tiling {o['tiling']}"
    return f"{o['encoder']} @ {o['resolution']} px{tiling} + {o['llm']}"


def _acc(o: dict) -> str:
    return f"{o['benchmark']} {o['accuracy']:.2f} ({o['accuracy_source']})"


def render(r) -> str:
    """Plain-text answer."""
    s = r.settings
    budget = "no budget" if s["budget_ms"] is None else f"budget {s['budget_ms']:g} ms by {s['by']}"
    lines = [
        f"Study {r.study_name} (run {r.run_id}): {r.trials_total} trial(s), {len(r.points)} configuration(s), "
        f"{budget}, backend {s['backend']['name']}"
    ]
    lines.append(
        f"Measurements: {r.measurements_total} in the run ({r.measurements_session} new this session); "
        f"the whole space is {r.grid_points} configurations = {r.grid_measurements} measurements"
    )
    if r.best is None:
        lines.append("No evaluated configuration fits the budget.")
    else:
        b = r.best
        lines.append(f"Best feasible: {_label(b)}: {_acc(b)}")
        lines.append(
            f"  TTFT {_ms(b['ttft_ms'])} ms median ({_ms(b['budget_ttft_ms'])} by {s['by']}) = encoder "
            f"{_ms(b['encoder_ms'])} + projector {_ms(b['projector_ms'])} + prefill {_ms(b['prefill_ms'])} ms; "
            f"{b['tokens']} visual tokens"
        )
        lines.append("Feasible Pareto front (fastest first):")
        for o in r.front:
            lines.append(f"  {_ms(o['ttft_ms']):>9} ms  {_acc(o)}  {_label(o)}")
    for n in r.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from harness.search import (
        Search,
        build_space,
        check_budget,
        load_accuracy,
        parse_range,
        sweep_config,
    )

    budget = check_budget(args.budget_ms)  # bad budgets fail before anything is built
    rng = parse_range(args.resolution_range) if args.resolution_range else None
    if args.trials < 0:
        raise UserError(f"--trials must be >= 0, got {args.trials}")
    if not 0 <= args.seed < 2**32:
        raise UserError(f"--seed must be in [0, 2**32 - 1] (a sampler seed), got {args.seed}")
    if args.trials == 0 and not args.resume:
        raise UserError(
            "--trials 0 measures nothing: give --trials N >= 1, or --resume --study-name NAME "
            "--trials 0 to report a stored study"
        )
    if args.resume and not args.study_name:
        raise UserError("--resume needs --study-name (the study to continue)")
    db = getattr(args, "db", None) or os.environ.get("VLM_PARETO_DB")
    cfg = sweep_config(
        preset=args.preset,
        encoders=args.encoders,
        llms=args.llms,
        backend=args.backend,
        protocol=args.protocol,
    )
    space = build_space(cfg, resolution_range=rng, tilings=args.tilings)
    recipe = args.recipe or cfg.recipe or "llava-1.5"
    benchmark = (args.benchmark or "avg5").lower()
    acc = load_accuracy(
        db=db,
        recipe=recipe,
        benchmark=benchmark,
        accuracy_files=args.accuracy,
        paper=not args.no_paper_accuracy,
    )
    search = Search(
        space,
        acc,
        db=db,
        study_name=args.study_name,
        resume=args.resume,
        budget_ms=budget,
        by=args.by or "ci-high",
        benchmark=benchmark,
        recipe=acc.recipe,
        seed=args.seed,
        command="vlm-pareto search",
        accuracy_notes=acc.notes,
        prune=not args.no_prune,
    )
    result = search.optimize(args.trials, progress=not (args.quiet or args.json))
    if args.report:
        from harness.points import PointsResult
        from harness.report.html import write_report

        pts = result.points.drop(columns=["budget_ttft_ms", "feasible"], errors="ignore")
        paths = write_report(
            PointsResult(pts, pts.iloc[0:0], pts.iloc[0:0], result.notes, "store", benchmark),
            args.report,
            f"vlm-pareto search: {result.study_name}",
            benchmark=benchmark,
            static=False,
        )
        result.notes.append(f"report: {paths.index_html}")
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        print(render(result))
    return result.exit_code
