"""How much does ``harness.protocol.measure`` add to what it measures?

For a ~1 ms and a ~10 ms workload (a pure-Python busy loop, and a numpy matmul), each round
runs ``measure(fn, protocol)`` and a bare ``time.perf_counter`` loop over the same function
for the same number of samples, back to back, alternating which goes first (interleaved, so
machine drift hits both alike). The overhead ratio is median(measure samples) / median(bare
samples) per round; reported: the median over rounds with a bootstrap 95% CI, and the pooled
ratio of medians. Target: within 2% (ratio in [0.98, 1.02]).

    python scripts/bench_protocol_overhead.py [--rounds 40] [--block-s 0.25] [--protocol standard] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

# One BLAS thread, set before numpy loads it: on a shared 2-core machine a multi-threaded
# matmul stalls at its barriers whenever a neighbour holds a core (0.07 ms calls took 31 ms),
# which would swamp the microseconds this script is looking for.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.protocol import get_protocol, measure  # noqa: E402
from harness.stats import bootstrap_median_ci  # noqa: E402


def _fastest_ms(fn: Callable[[], object], repeat: int = 7) -> float:
    """Fastest of a few calls: the least disturbed by neighbours, so calibration is stable."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def _calibrated_busy(target_ms: float) -> Callable[[], int]:
    """A pure-Python loop whose length is tuned to take about ``target_ms`` here."""

    def loop(n: int) -> int:
        x = 0
        for i in range(n):
            x += i * i
        return x

    n = 10_000
    dt = _fastest_ms(lambda: loop(n))
    loops = max(1, int(n * target_ms / dt))

    def busy() -> int:
        x = 0
        for i in range(loops):
            x += i * i
        return x

    return busy


def _calibrated_matmul(target_ms: float) -> Callable[[], object]:
    """A float64 square matmul sized to take about ``target_ms`` here."""
    size = 64
    while True:
        a = np.random.default_rng(0).standard_normal((size, size))
        dt = _fastest_ms(lambda a=a: a @ a, 3)
        if dt >= target_ms or size >= 2048:
            break
        size = int(size * 1.1) + 1
    return lambda: a @ a


def bare_loop(fn: Callable[[], object], n: int) -> list[float]:
    """The simplest honest timer: perf_counter around each call, no warm-up, no GC control."""
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        out.append((clock() - t0) * 1e3)
    return out


def run_case(
    name: str, fn: Callable[[], object], rounds: int, protocol: str, block_s: float | None
) -> dict:
    # Short blocks: on a shared machine the speed of the same code flips between states
    # (a neighbour on the sibling hyperthread or not) every few seconds; a paired ratio is
    # only clean when both halves of a round see the same state.
    proto = (
        get_protocol(protocol, min_time_s=block_s, warmup_min_s=0.0)
        if block_s
        else get_protocol(protocol)
    )
    for _ in range(3):
        fn()  # the bare loop has no warm-up of its own
    ratios, prot_all, bare_all = [], [], []
    for r in range(rounds):
        first_protocol = r % 2 == 0
        if first_protocol:
            m = measure(fn, proto)
            bare = bare_loop(fn, len(m.samples_ms))
        else:
            # Same count as the protocol will take is unknown in advance: use the last count.
            bare = bare_loop(fn, len(prot_all[-1]) if prot_all else 100)
            m = measure(fn, proto)
        prot_all.append(m.samples_ms)
        bare_all.append(bare)
        ratios.append(float(np.median(m.samples_ms) / np.median(bare)))
        print(
            f"  {name} round {r + 1}/{rounds}: protocol {np.median(m.samples_ms):.4f} ms (n={len(m.samples_ms)}), "
            f"bare {np.median(bare):.4f} ms (n={len(bare)}), ratio {ratios[-1]:.4f}",
            flush=True,
        )
    lo, hi = bootstrap_median_ci(ratios)
    pooled = float(np.median(np.concatenate(prot_all)) / np.median(np.concatenate(bare_all)))
    return {
        "case": name,
        "median_ms": float(np.median(np.concatenate(bare_all))),
        "rounds": rounds,
        "ratio_median": float(np.median(ratios)),
        "ratio_ci95": [lo, hi],
        "ratio_pooled": pooled,
        "ratios": ratios,
        "within_2pct": bool(0.98 <= float(np.median(ratios)) <= 1.02),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument(
        "--block-s",
        type=float,
        default=0.25,
        help="override the protocol's min_time_s (and drop its warm-up time) so rounds are short; "
        "0 keeps the preset",
    )
    p.add_argument("--protocol", default="standard")
    p.add_argument(
        "--cases",
        nargs="+",
        default=["busy-1ms", "busy-10ms", "matmul-1ms", "matmul-10ms"],
        help="which workloads (kind-<target>ms)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    makers = {"busy": _calibrated_busy, "matmul": _calibrated_matmul}
    cases = {}
    for case in args.cases:
        kind, _, target = case.partition("-")
        cases[case] = makers[kind](float(target.removesuffix("ms")))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(
        f"protocol {args.protocol} (min_time_s={args.block_s or 'preset'}), {args.rounds} interleaved rounds "
        f"per case, load average {load}"
    )
    results = [
        run_case(name, fn, args.rounds, args.protocol, args.block_s or None)
        for name, fn in cases.items()
    ]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print()
        print(
            f"{'case':<12} {'median ms':>10} {'overhead (median of rounds) [95% CI]':>40} {'pooled':>8}  within 2%"
        )
        for r in results:
            lo, hi = r["ratio_ci95"]
            print(
                f"{r['case']:<12} {r['median_ms']:>10.4f} {(r['ratio_median'] - 1) * 100:>+13.2f}% "
                f"[{(lo - 1) * 100:+.2f}%, {(hi - 1) * 100:+.2f}%]{'':>8} {(r['ratio_pooled'] - 1) * 100:>+7.2f}%  "
                f"{'yes' if r['within_2pct'] else 'NO'}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
