"""Benchmark the encoder zoo on this machine and check the paper's Table 4 ordering.

For each encoder at each resolution: latency (median and CI), visual tokens, forward GFLOPs
(counted by FlopCounterMode on the meta device), achieved GFLOP/s and its ratio to this
machine's measured fp32 matmul peak (``harness.peak``). Then, for every pair of Table 4 rows
in the same token group, the measured latency ratio next to the paper's (M1 Max, Core ML),
and whether the order agrees.

    python scripts/bench_encoders.py                              # all six, paper resolutions
    python scripts/bench_encoders.py --encoders fastvithd --resolutions 256,512
    python scripts/bench_encoders.py --table4 --protocol standard --json results/bench_encoders.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import Any

#: Table 4 (FastVLM, CVPR 2025): rows grouped by visual-token budget; encoder latency in ms.
TABLE4_GROUPS: list[list[tuple[str, int, float]]] = [
    [
        ("fastvithd", 256, 10.1),
        ("convnext-l", 320, 34.4),
        ("convnext-xxl", 256, 89.9),
        ("fastvithd", 512, 33.5),
        ("fastvithd", 768, 122.6),
    ],
    [("convnext-l", 512, 71.9), ("convnext-xxl", 512, 397.1), ("fastvithd", 1024, 235.6)],
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--encoders", default="fastvithd,fastvit,vit-l-14,siglip-so400m,convnext-l,convnext-xxl"
    )
    p.add_argument(
        "--resolutions",
        default="paper",
        help="'paper' (each encoder's paper resolutions) or R,R,...",
    )
    p.add_argument(
        "--points",
        default=None,
        help="explicit encoder@resolution list, e.g. fastvithd@512,convnext-xxl@256",
    )
    p.add_argument(
        "--table4",
        action="store_true",
        help="measure exactly Table 4's rows and check their ordering",
    )
    p.add_argument("--protocol", default="quick", choices=["quick", "standard", "rigorous"])
    p.add_argument("--tiling", default="none")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> list[tuple[str, int]]:
    from harness.encoders import get_spec

    if args.points:
        pts = [p.split("@") for p in args.points.split(",")]
        return [(get_spec(n).name, int(r)) for n, r in pts]
    if args.table4:
        return [(n, r) for group in TABLE4_GROUPS for n, r, _ in group]
    points = []
    for name in args.encoders.split(","):
        spec = get_spec(name.strip())
        if args.resolutions == "paper":
            res = spec.paper_resolutions or (spec.native_resolution,)
        else:
            res = tuple(int(x) for x in args.resolutions.split(","))
        points += [(spec.name, r) for r in res]
    return points


def table4_check(latency: dict[tuple[str, int], float]) -> list[dict[str, Any]]:
    """Pairwise ratios within each Table 4 group, measured vs paper (only pairs both measured)."""
    rows = []
    for group in TABLE4_GROUPS:
        for (a, ra, pa), (b, rb, pb) in itertools.combinations(group, 2):
            if (a, ra) not in latency or (b, rb) not in latency:
                continue
            from harness.encoders import encoder_tokens

            measured = latency[(a, ra)] / latency[(b, rb)]
            paper = pa / pb
            rows.append(
                {
                    "a": f"{a}@{ra}",
                    "b": f"{b}@{rb}",
                    "tokens_a": encoder_tokens(a, ra),
                    "tokens_b": encoder_tokens(b, rb),
                    "ratio_measured": measured,
                    "ratio_paper": paper,
                    "order_agrees": (measured < 1) == (paper < 1),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from harness.backends.torch.encoder import measure_encoder
    from harness.protocol import get_protocol

    proto = get_protocol(args.protocol, threads=args.threads)
    peak = None
    if not args.no_peak and args.device == "cpu":
        from harness.peak import matmul_peak_gflops

        peak = matmul_peak_gflops(threads=args.threads)
        print(f"fp32 matmul peak: {peak:.0f} GFLOP/s ({proto.resolved_threads} threads)")
    rows: list[dict[str, Any]] = []
    header = f"{'encoder':<14}{'res':>6}{'tiling':>14}{'tokens':>8}{'median ms':>11}{'95% CI ms':>22}{'GFLOP':>8}{'GFLOP/s':>9}{'% peak':>8}{'build s':>9}"
    print(header)
    print("-" * len(header))
    for name, res in plan(args):
        r = measure_encoder(
            name, res, args.tiling, device=args.device, dtype=args.dtype, protocol=proto
        )
        s = r.measurement.stats
        g, gps = r.extra["gflops"], r.extra["gflops_per_s"]
        frac = gps / peak * 100 if gps and peak else None
        rows.append(
            {
                "encoder": name,
                "resolution": res,
                "tiling": args.tiling,
                "tokens": r.tokens,
                "median_ms": s.median_ms,
                "ci_low_ms": s.ci_low_ms,
                "ci_high_ms": s.ci_high_ms,
                "noisy": s.noisy,
                "gflops": g,
                "gflops_per_s": gps,
                "peak_fraction": frac / 100 if frac else None,
                "build_s": r.build_s,
                "n": len(r.measurement.samples_ms),
                "threads": r.measurement.threads,
                "params_m": r.params_m,
            }
        )
        ci = f"[{s.ci_low_ms:.1f}, {s.ci_high_ms:.1f}]"
        print(
            f"{name:<14}{res:>6}{args.tiling:>14}{r.tokens:>8}{s.median_ms:>11.1f}{ci:>22}"
            f"{(g or float('nan')):>8.1f}{(gps or float('nan')):>9.1f}{(frac or float('nan')):>8.1f}{r.build_s:>9.1f}",
            flush=True,
        )
    check = table4_check(
        {(r["encoder"], r["resolution"]): r["median_ms"] for r in rows if r["tiling"] == "none"}
    )
    if check:
        print("\nTable 4 ordering (ratio = latency a / latency b; < 1 means a is faster)")
        for c in check:
            flag = "agrees" if c["order_agrees"] else "DISAGREES"
            print(
                f"  {c['a']:<18} ({c['tokens_a']:>4} tok) vs {c['b']:<18} ({c['tokens_b']:>4} tok): "
                f"measured {c['ratio_measured']:.2f}  paper {c['ratio_paper']:.2f}  {flag}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"peak_gflops": peak, "rows": rows, "table4": check, "protocol": proto.to_dict()},
                f,
                indent=2,
            )
    return 0 if all(c["order_agrees"] for c in check) else 1


if __name__ == "__main__":
    sys.exit(main())
