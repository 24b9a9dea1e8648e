"""``vlm-pareto choose --budget-ms N``: the most accurate configuration under a TTFT budget."""

from __future__ import annotations

import argparse
import json
from typing import SupportsFloat

from harness.choose import BASES, ChooseResult, Limits, check_budget, choose
from harness.errors import UserError
from harness.points import add_input_args, points_from_args


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "choose",
        help="pick the most accurate configuration under a TTFT budget",
        description="Pick the configuration with the best accuracy whose TTFT fits the budget. By default the "
        "budget is checked against the upper end of the TTFT 95% confidence interval (--by ci-high).",
        epilog="Exit codes: 0 a choice was made, 1 nothing fits the budget, 2 bad input. "
        "Example: vlm-pareto choose --source paper --budget-ms 300",
    )
    p.add_argument("--budget-ms", required=True, help="TTFT budget in milliseconds")
    p.add_argument(
        "--by",
        choices=list(BASES),
        default="ci-high",
        help="which TTFT to compare with the budget (default ci-high; falls back to p90, then median)",
    )
    p.add_argument(
        "--max-encoder-params-m", type=float, default=None, help="largest vision encoder (M params)"
    )
    p.add_argument("--max-tokens", type=int, default=None, help="most visual tokens")
    p.add_argument("--max-llm-params-b", type=float, default=None, help="largest LLM (B params)")
    p.add_argument(
        "--max-memory-gb",
        type=float,
        default=None,
        help="largest peak memory (GB, needs peak_mem_bytes)",
    )
    p.add_argument(
        "--backend",
        default=None,
        help="only points whose encoder and prefill ran on this runtime (e.g. onnxrt, torch-compile)",
    )
    p.add_argument("--alternatives", type=int, default=3, help="how many runner-up options to list")
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"choice", "alternatives", "frontier", ...} as JSON',
    )
    add_input_args(p)
    return p


def _ms(x: SupportsFloat | str | None) -> str:
    return "n/a" if x is None else f"{float(x):.1f}"


def _int(x: SupportsFloat | str | None) -> str:
    return "n/a" if x is None else str(int(float(x)))


def _label(o: dict) -> str:
    tiling = f", tiling {o.get('tiling')}" if o.get("tiling") not in (None, "none") else ""
    return f"{o.get('encoder')} @ {o.get('resolution')} px{tiling} + {o.get('llm')} (recipe {o.get('recipe')})"


def _line(o: dict) -> str:
    acc = "n/a" if o.get("accuracy") is None else f"{o['accuracy']:.2f}"
    est = (", estimated" if o.get("estimated") else "") + (
        ", UNRELIABLE: contended" if str(o.get("contended")) == "True" else ""
    )
    return (
        f"{o['benchmark']} {acc}; TTFT {_ms(o.get('ttft_ms'))} ms median, {_ms(o.get('budget_ttft_ms'))} ms "
        f"by {o.get('basis')} [latency: {o.get('latency_source')}{est}, {o.get('machine')}]"
    )


def render(r: ChooseResult) -> str:
    """The human-readable answer (plain text)."""
    out = [
        f"Budget {r.budget_ms:g} ms, checked against {r.basis_description} (--by {r.by}"
        + ("; use --by median to compare medians)" if r.by != "median" else ")")
    ]
    if r.choice is None:
        out.append("Nothing fits the budget.")
        if r.fastest:
            f = r.fastest
            out.append(f"Fastest option: {_label(f)}: {_line(f)}")
            out.append(f"It needs a budget of at least {_ms(f['budget_ttft_ms'])} ms.")
    else:
        c = r.choice
        out.append(f"Choice: {_label(c)}")
        out.append(f"  {_line(c)}")
        out.append(
            f"  TTFT = encoder {_ms(c.get('encoder_ms'))} + projector {_ms(c.get('projector_ms'))} + prefill "
            f"{_ms(c.get('prefill_ms'))} ms; {_int(c.get('tokens'))} visual tokens; 95% CI "
            f"{_ms(c.get('ttft_ci_low_ms'))}-{_ms(c.get('ttft_ci_high_ms'))} ms"
        )
        out.append(
            f"  Why: the most accurate of {r.n_fit} option(s) that fit ({r.n_eligible} eligible, {r.n_points} points)."
        )
        if r.alternatives:
            out.append("Next-best options within the budget:")
            for i, a in enumerate(r.alternatives, 2):
                out.append(f"  {i}. {_label(a)}: {_line(a)}")
        if r.next_step:
            n = r.next_step
            out.append(
                f"A little more budget: +{n.extra_ms:.1f} ms (budget {n.budget_needed_ms:.1f} ms) buys "
                f"{_label(n.option)}: {r.benchmark} {n.option['accuracy']:.2f} (+{n.accuracy_gain:.2f})."
            )
        else:
            out.append("More budget buys nothing: the choice is the most accurate eligible option.")
    for note in r.notes:
        out.append(f"note: {note}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    if args.alternatives < 0:
        raise UserError(f"--alternatives must be >= 0, got {args.alternatives}")
    budget = check_budget(args.budget_ms)  # bad budgets fail before any data is read
    points = points_from_args(args)
    if args.backend:
        import dataclasses

        from harness.report.runtimes import filter_backend

        points = dataclasses.replace(points, points=filter_backend(points.points, args.backend))
    limits = Limits(
        args.max_encoder_params_m, args.max_tokens, args.max_llm_params_b, args.max_memory_gb
    )
    result = choose(
        points.points,
        budget,
        benchmark=points.benchmark,
        by=args.by,
        limits=limits,
        n_alternatives=args.alternatives,
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        print(render(result))
    return 0 if result.choice is not None else 1
