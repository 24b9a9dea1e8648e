"""Time the two-objective Pareto front of N random points (default 1,000,000).

    python scripts/bench_pareto.py [--n 1000000] [--repeat 7]

Prints the median and best wall time of ``pareto_front`` (NaN check, sort, sweep) and the
front size; exits 1 if the median is not under one second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from harness.pareto import pareto_front


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    # Accuracy-like and TTFT-like columns: a realistic front is small, as here.
    pts = np.column_stack([rng.uniform(40, 80, args.n), rng.lognormal(6, 1, args.n)])
    pareto_front(pts[:1000])  # warm imports and caches
    times, size = [], 0
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        res = pareto_front(pts)
        times.append(time.perf_counter() - t0)
        size = len(res)
    med = statistics.median(times)
    print(
        f"pareto_front: n={args.n:,} points, 2 objectives, front={size}: "
        f"median {med * 1e3:.1f} ms, best {min(times) * 1e3:.1f} ms over {args.repeat} runs"
    )
    return 0 if med < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
