"""How many measurements does `vlm-pareto search` need to recover the grid's frontier?

Space: the ``paper_fig4`` preset widened as the search widens it (FastViTHD 256..1536 in steps
of 64, FastViT 256..1024 in steps of 32, Qwen2 0.5B/1.5B/7B, no tiling: 138 configurations),
measured with the ``fake`` backend (canned, deterministic latencies, harness/backends/fake/latencies.py)
and scored with :func:`harness.search.synthetic_accuracy` (deterministic, documented there).

1. The whole grid is measured through the same evaluator (one run), giving its frontier and
   the number of unique measurements a sweep needs.
2. For each seed, a fresh study runs until the hypervolume of the frontier it has found is
   within ``--tolerance`` (default 2%) of the grid's; we record how many measurements (and
   trials) that took.

Hypervolume (harness.pareto.hypervolume_2d) is taken in (accuracy, log10 TTFT), the report's
axes, against the reference (lowest grid accuracy, highest grid TTFT). With ``--budget-ms`` both
frontiers are the *feasible* ones (TTFT by the upper CI end <= budget) and the reference TTFT is
the budget. Run:

    python scripts/bench_search.py                      # whole frontier, then a 3000 ms budget
    python scripts/bench_search.py --seeds 5 --json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.pareto import hypervolume_2d
from harness.search import Evaluator, Search, build_space, sweep_config, synthetic_accuracy
from harness.store import Store

PRUNE = True


def _hv(acc: list[float], ttft: list[float], ref: tuple[float, float]) -> float:
    if not acc:
        return 0.0
    pts = np.column_stack([acc, np.log10(ttft)])
    return hypervolume_2d(pts, (ref[0], math.log10(ref[1])))


def grid(space, db: str, budget: float | None) -> dict:
    store = Store(db)
    run_id = store.create_run("bench_search grid", {}, {"machine_id": "bench"})
    ev = Evaluator(space, store, run_id)
    rows = []
    for c in space.configs():
        row = ev.ttft(c)
        acc, _ = synthetic_accuracy(c, space.tokens(c), space.llm_params_b[c.llm])
        rows.append((acc, float(row["ttft_ms"]), float(row["ttft_ci_high_ms"])))
    return {"rows": rows, "measurements": ev.run_measurements()}


def scenario(
    space, g: dict, budget: float | None, seeds: int, max_trials: int, tol: float, tmp: Path
) -> dict:
    rows = [r for r in g["rows"] if budget is None or r[2] <= budget]
    ref = (
        min(r[0] for r in g["rows"]),
        budget if budget is not None else max(r[1] for r in g["rows"]),
    )
    hv_grid = _hv([r[0] for r in rows], [r[1] for r in rows], ref)
    runs = []
    for seed in range(seeds):
        db = f"sqlite:///{tmp / f'seed{seed}-{budget}.db'}"
        s = Search(
            space,
            synthetic_accuracy,
            db=db,
            budget_ms=budget,
            seed=seed,
            study_name=f"bench-{seed}",
            prune=PRUNE,
        )
        found_acc: list[float] = []
        found_ttft: list[float] = []
        state = {"hv": 0.0}

        def stop(rec, found_acc=found_acc, found_ttft=found_ttft, state=state) -> bool:
            if rec.state == "complete" and rec.feasible:
                found_acc.append(rec.accuracy)
                found_ttft.append(rec.ttft_ms)
                state["hv"] = _hv(found_acc, found_ttft, ref)
            return state["hv"] >= (1 - tol) * hv_grid

        t0 = time.perf_counter()
        res = s.optimize(max_trials, stop=stop)
        reached = state["hv"] >= (1 - tol) * hv_grid
        runs.append(
            {
                "seed": seed,
                "reached": reached,
                "measurements": res.measurements_total,
                "trials": res.trials_total,
                "configurations": len(res.points),
                "hv_ratio": state["hv"] / hv_grid,
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
    ok = [r for r in runs if r["reached"]]
    return {
        "budget_ms": budget,
        "grid_points": len(g["rows"]),
        "grid_measurements": g["measurements"],
        "hypervolume_grid": hv_grid,
        "tolerance": tol,
        "runs": runs,
        "median_measurements": statistics.median(r["measurements"] for r in ok) if ok else None,
        "median_trials": statistics.median(r["trials"] for r in ok) if ok else None,
        "reached": f"{len(ok)}/{len(runs)}",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-trials", type=int, default=400)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument(
        "--budget-ms",
        type=float,
        action="append",
        default=None,
        help="budget scenario(s); default: none and 3000",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--no-prune",
        action="store_true",
        help="measure every proposal (no cost-model pruning, harness/predict/prune.py)",
    )
    args = ap.parse_args(argv)
    global PRUNE
    PRUNE = not args.no_prune
    budgets = args.budget_ms if args.budget_ms else [None, 3000.0]
    space = build_space(sweep_config(preset="paper_fig4", backend="fake"))
    out = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        g = grid(space, f"sqlite:///{tmp / 'grid.db'}", None)
        for b in budgets:
            out.append(scenario(space, g, b, args.seeds, args.max_trials, args.tolerance, tmp))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for s in out:
        name = (
            "whole frontier"
            if s["budget_ms"] is None
            else f"feasible frontier, budget {s['budget_ms']:g} ms"
        )
        print(
            f"{name}: grid {s['grid_points']} configurations = {s['grid_measurements']} measurements; "
            f"search reached {100 * (1 - s['tolerance']):.0f}% of the grid hypervolume in {s['reached']} seeds, "
            f"median {s['median_measurements']} measurements ({s['median_trials']} trials)"
        )
        for r in s["runs"]:
            print(
                f"  seed {r['seed']}: {r['measurements']} measurements, {r['trials']} trials, "
                f"{r['configurations']} configurations, HV {100 * r['hv_ratio']:.1f}%, {r['wall_s']} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
