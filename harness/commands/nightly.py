"""``vlm-pareto nightly``: measure the nightly preset, compare with this machine's history, report.

Exit 1 on a confirmed regression (two consecutive violating runs), 0 otherwise, 2 on bad
input. ``--run-id`` skips the measuring step and evaluates a run already in the store.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from harness.compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD, DEFAULT_WINDOW
from harness.nightly import DEFAULT_OUT, run_nightly


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "nightly",
        help="nightly regression run against the history on this machine",
        description=(
            "Measure the sweep preset (rigorous protocol, interleaved rounds), store the run, compare "
            "every key with the previous runs on this machine (or --baseline FILE), and write "
            "<out>/<date>/ (trends.html, summary.md, verdicts.json/csv). Exit 1 on a confirmed "
            "regression, 0 otherwise, 2 on bad input."
        ),
    )
    p.add_argument("--preset", default="nightly", help="sweep preset to measure (default: nightly)")
    p.add_argument(
        "--protocol", default="rigorous", help="measurement protocol (default: rigorous)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved rounds per key (default: 5, what the noise study assumes)",
    )
    p.add_argument(
        "--run-id", default=None, help="evaluate this stored run instead of measuring a new one"
    )
    p.add_argument(
        "--baseline",
        default=None,
        metavar="FILE",
        help="compare with a committed measurements export (results/baselines/) instead of the window",
    )
    p.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        help=f"previous runs pooled into the baseline (default {DEFAULT_WINDOW})",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"minimum slowdown to flag, as a fraction (default {DEFAULT_THRESHOLD})",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help=f"Mann-Whitney U significance level (default {DEFAULT_ALPHA})",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"report root (default {DEFAULT_OUT})")
    p.add_argument("--date", default=None, help="report folder name (default: the run's UTC date)")
    p.add_argument(
        "--json", action="store_true", help="print the verdicts as JSON instead of the summary"
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress on stderr while measuring (default: a bar on a terminal, else one line "
        "per finished measurement)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    db = getattr(args, "db", None) or os.environ.get("VLM_PARETO_DB")
    result = run_nightly(
        args.preset,
        db=db,
        run_id=args.run_id,
        protocol=args.protocol,
        rounds=args.rounds,
        baseline_file=args.baseline,
        window=args.window,
        out=args.out,
        threshold=args.threshold,
        alpha=args.alpha,
        date=args.date,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=1, default=str))
    else:
        print((result.out_dir / "summary.md").read_text() if result.out_dir else "")
        print(f"report: {result.out_dir}")
    return result.exit_code
