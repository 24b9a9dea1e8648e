#!/usr/bin/env python
"""Benchmark the in-project FastViTHD / FastViT encoders on this machine.

For each resolution: median latency of the reparameterized model (harness.protocol.measure),
FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmul/conv/attention), the
achieved GFLOP/s and its ratio to the measured fp32 matmul peak, next to the timm reference
latencies recorded in shared/REFERENCE.md (same machine type, torch 2.15, 2 threads).

    python scripts/bench_fastvit.py --resolutions 256 512 --protocol quick      # seconds
    python scripts/bench_fastvit.py --protocol standard --memory-format both    # full run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from harness.encoders import fastvit as fv
from harness.peak import matmul_peak_gflops
from harness.protocol import get_protocol, measure

# shared/REFERENCE.md: timm 1.0.31, torch 2.15, fp32, batch 1, 2 threads, reparameterized.
TIMM_REFERENCE_MS = {
    "fastvithd": {256: 355.0, 512: 1061.0, 768: 2031.0, 1024: 4468.0},
    "fastvit": {256: 169.0, 768: 1481.0},
}
REFERENCE_GFLOP = {"fastvithd": {256: 29.6, 512: 119.0, 768: 270.0, 1024: 487.0}}
BUILDERS = {"fastvithd": fv.build_fastvithd, "fastvit": fv.build_fastvit_mci2}
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def _cpu_sdpa_flops(
    query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def count_gflop(model: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward as counted by PyTorch's FLOP counter, in GFLOP.

    The counter has formulas for the CUDA attention kernels but (torch 2.13) not for the CPU
    flash-attention op that SDPA dispatches to here, so that op is mapped to the same formula;
    without it FastViTHD at 1024 would miss ~14 GFLOP of attention.
    """
    mapping = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None and cpu_flash not in flop_counter.flop_registry:
        mapping[cpu_flash] = _cpu_sdpa_flops
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    overrides = {"threads": args.threads} if args.threads is not None else {}
    proto = get_protocol(args.protocol, **overrides)
    torch.set_num_threads(proto.resolved_threads)
    if proto.flush_denormal:
        torch.set_flush_denormal(True)
    t0 = time.perf_counter()
    model = BUILDERS[args.model](reparameterized=True)
    build_s = time.perf_counter() - t0
    formats = list(FORMATS) if args.memory_format == "both" else [args.memory_format]
    peak = None if args.no_peak else matmul_peak_gflops(threads=proto.resolved_threads)
    rows = []
    for res in args.resolutions:
        x = torch.rand(args.batch, 3, res, res)
        gflop = count_gflop(model, x)
        tokens = model.num_tokens(res)
        for fmt in formats:
            m = model.to(memory_format=FORMATS[fmt])
            xf = x.contiguous(memory_format=FORMATS[fmt])
            with torch.inference_mode():
                meas = measure(lambda m=m, xf=xf: m(xf), proto)
            med = meas.stats.median_ms
            ref = TIMM_REFERENCE_MS.get(args.model, {}).get(res) if args.batch == 1 else None
            achieved = gflop / (med / 1e3)
            rows.append(
                {
                    "model": args.model,
                    "resolution": res,
                    "batch": args.batch,
                    "tokens": tokens,
                    "memory_format": fmt,
                    "median_ms": med,
                    "ci_low_ms": meas.stats.ci_low_ms,
                    "ci_high_ms": meas.stats.ci_high_ms,
                    "runs": len(meas.samples_ms),
                    "noisy": meas.stats.noisy,
                    "gflop": gflop,
                    "reference_gflop": REFERENCE_GFLOP.get(args.model, {}).get(res),
                    "gflops_per_s": achieved,
                    "peak_gflops": peak,
                    "fraction_of_peak": achieved / peak if peak else None,
                    "timm_reference_ms": ref,
                    "ratio_to_reference": med / ref if ref else None,
                    "threads": meas.threads,
                    "protocol": proto.name,
                    "build_s": build_s,
                    "params_m": fv.param_counts(model).to_dict(),
                }
            )
            print(_row(rows[-1]), flush=True)
    return rows


def _row(r: dict[str, Any]) -> str:
    def f(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    return (
        f"| {r['model']} | {r['resolution']} | {r['tokens']} | {r['memory_format']} | "
        f"{r['median_ms']:.1f} [{r['ci_low_ms']:.1f}, {r['ci_high_ms']:.1f}]{' noisy' if r['noisy'] else ''} | "
        f"{r['gflop']:.1f} ({f(r['reference_gflop'], '.1f')}) | {r['gflops_per_s']:.1f} | "
        f"{f(r['fraction_of_peak'], '.2f')} | {f(r['timm_reference_ms'], '.0f')} | {f(r['ratio_to_reference'], '.2f')} |"
    )


HEADER = (
    "| model | res | tokens | memory format | median ms [95% CI] | GFLOP (REFERENCE) | "
    "GFLOP/s | of peak | timm ms | ratio |\n|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=sorted(BUILDERS), default="fastvithd")
    p.add_argument("--resolutions", type=int, nargs="+", default=[256, 512, 768, 1024])
    p.add_argument("--protocol", default="quick", help="quick | standard | rigorous")
    p.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: protocol's)"
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--memory-format", choices=[*FORMATS, "both"], default="channels_last")
    p.add_argument("--no-peak", action="store_true", help="skip measuring the matmul peak")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    print(HEADER, flush=True)
    rows = bench(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
