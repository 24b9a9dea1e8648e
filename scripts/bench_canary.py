"""Does a machine-speed canary track the slow and fast periods of a shared machine?

For ``--minutes`` the script cycles through a few encoder forwards (the workloads) and a few
candidate canaries, interleaved, a handful of samples each per cycle (median per cycle), and
records the time series. A canary that tracks the machine moves with the workloads: dividing a
workload's per-cycle median by the canary's must *shrink* its spread over time. Printed per
(workload, canary): the spread (robust standard deviation of log time, in %) raw and divided
by the canary, and the correlation of the two log series.

Candidates:

- ``mm-dw-v1``: the shipped canary (harness/canary.py; 384x384 matmuls + a depthwise conv,
  fits in L2);
- ``stream``: a 64 MiB fp32 copy (memory bandwidth, what a neighbour on other cores takes);
- ``mm1024``: one 1024x1024 fp32 matmul (compute, 2 threads);
- ``mixed``: ``mm-dw-v1`` + ``stream`` time summed.

    python scripts/bench_canary.py --minutes 8 --json canary.json

Needs an otherwise idle machine (it measures the machine, so anything else you run shows up).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _median_ms(fn: Callable[[], Any], n: int) -> float:
    fn()  # one untimed step: caches and the allocator warm
    ts = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        ts.append((time.perf_counter_ns() - t0) / 1e6)
    return float(np.median(ts))


def workloads(names: list[str]) -> dict[str, Callable[[], Any]]:
    import torch

    from harness.encoders.zoo import build_encoder

    out: dict[str, Callable[[], Any]] = {}
    for item in names:
        name, res = item.split("@")
        enc = build_encoder(name, int(res))
        x = torch.randn(1, 3, int(res), int(res))

        def step(enc: Any = enc, x: Any = x) -> None:
            with torch.inference_mode():
                enc(x)

        out[item] = step
    return out


def canaries() -> dict[str, Callable[[], Any]]:
    import torch

    from harness.canary import canary_workload

    v1 = canary_workload()
    src = torch.randn(16 * 1024 * 1024)  # 64 MiB
    dst = torch.empty_like(src)
    a = torch.randn(1024, 1024)
    b = torch.randn(1024, 1024)

    def stream() -> None:
        dst.copy_(src)

    def mm1024() -> None:
        torch.mm(a, b)

    def mixed() -> None:
        v1()
        stream()

    return {"mm-dw-v1": v1, "stream": stream, "mm1024": mm1024, "mixed": mixed}


def _spread(logs: np.ndarray) -> float:
    """Robust standard deviation (1.4826 MAD) of log times, as a percentage."""
    return float(100 * (math.exp(1.4826 * np.median(np.abs(logs - np.median(logs)))) - 1))


def analyse(series: dict[str, list[float]], work: list[str], cans: list[str]) -> list[dict]:
    out = []
    for w in work:
        lw = np.log(np.asarray(series[w]))
        for c in cans:
            lc = np.log(np.asarray(series[c]))
            corr = float(np.corrcoef(lw, lc)[0, 1]) if lw.std() > 0 and lc.std() > 0 else math.nan
            out.append(
                {
                    "workload": w,
                    "canary": c,
                    "spread_raw_pct": _spread(lw),
                    "spread_divided_pct": _spread(lw - lc),
                    "correlation": corr,
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--samples", type=int, default=5, help="samples per cycle and workload")
    ap.add_argument(
        "--workloads",
        default="fastvit@128,fastvithd@256,convnext-l@192",
        help="comma-separated encoder@resolution",
    )
    ap.add_argument("--json", default=None, help="write the series and the analysis here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    work = workloads([w.strip() for w in args.workloads.split(",") if w.strip()])
    cans = canaries()
    fns = {**work, **cans}
    series: dict[str, list[float]] = {k: [] for k in fns}
    stamps: list[float] = []
    t_end = time.time() + 60 * args.minutes
    cycle = 0
    while time.time() < t_end:
        order = list(fns) if cycle % 2 == 0 else list(reversed(fns))
        for k in order:
            series[k].append(_median_ms(fns[k], args.samples))
        stamps.append(time.time())
        cycle += 1
    res = analyse(series, list(work), list(cans))
    print(f"{cycle} cycles over {args.minutes:g} min")
    for k, v in series.items():
        a = np.asarray(v)
        print(f"  {k:16s} median {np.median(a):9.2f} ms  min {a.min():9.2f}  max {a.max():9.2f}")
    print("workload         canary     spread raw  divided   correlation")
    for r in res:
        print(
            f"  {r['workload']:16s} {r['canary']:9s} {r['spread_raw_pct']:7.1f}%  "
            f"{r['spread_divided_pct']:7.1f}%   {r['correlation']:+.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"t": stamps, "series": series, "analysis": res}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
