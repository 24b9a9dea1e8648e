#!/usr/bin/env python
"""Prefill benchmark: the harness protocol vs torch.utils.benchmark on the same model.

For each visual-token count: median prefill ms (harness protocol), tokens/s, FLOPs
(FlopCounterMode, linear layers; plus the analytic count with attention), achieved GFLOP/s
against this machine's fp32 matmul peak, and the same step timed with
``torch.utils.benchmark.Timer.blocked_autorange`` in the same process, interleaved (the
order alternates per point so drift hits both alike). ``protocol/Timer`` should be within
3% of 1. Optionally validates layer sampling against the full model.

    python scripts/bench_prefill.py --tokens 16,64,144,256,576,1024 --protocol standard
    python scripts/bench_prefill.py --validate-sampling 4 --sampling-tokens 256
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", default="qwen2-0.5b")
    ap.add_argument(
        "--tokens", default="16,64,144,256,576,1024", help="comma-separated visual token counts"
    )
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--encoder-dim", type=int, default=3072)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--protocol", default="standard")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    ap.add_argument(
        "--timer-min-run-time", type=float, default=2.0, help="seconds for blocked_autorange"
    )
    ap.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="protocol/Timer pairs per point, alternating order; the ratio is their median "
        "(one pair is at the mercy of a shared machine's fast/slow phases)",
    )
    ap.add_argument(
        "--validate-sampling",
        type=int,
        metavar="K",
        help="also compare k-layer sampling with the full model",
    )
    ap.add_argument("--sampling-tokens", type=int, default=256)
    ap.add_argument(
        "--sampling-rounds",
        type=int,
        default=5,
        help="interleaved full-vs-sampled rounds; the error reported is their median (default 5)",
    )
    ap.add_argument("--skip-points", action="store_true", help="only run the sampling validation")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args(argv)

    import torch
    from torch.utils.benchmark import Timer
    from torch.utils.flop_counter import FlopCounterMode

    from harness.backends.torch.prefill import (
        analytic_prefill_flops,
        prefill_callable,
        prepare_inputs,
        time_projector,
        validate_sampling,
    )
    from harness.llms import get_llm_spec
    from harness.llms.build import build_torch_llm, resolve_dtype
    from harness.peak import matmul_peak_gflops
    from harness.protocol import get_protocol, measure

    proto = get_protocol(args.protocol, threads=args.threads)
    threads = proto.resolved_threads
    torch.set_num_threads(threads)
    torch.set_flush_denormal(proto.flush_denormal)
    spec = get_llm_spec(args.llm)
    result: dict = {
        "llm": spec.name,
        "dtype": args.dtype,
        "threads": threads,
        "protocol": proto.to_dict(),
        "prompt_tokens": args.prompt_tokens,
        "torch": torch.__version__,
        "points": [],
    }
    print(
        f"# {spec.name} prefill, {args.dtype}, {threads} thread(s), protocol {proto.name}, "
        f"prompt {args.prompt_tokens} tokens, torch {torch.__version__}"
    )

    if not args.skip_points:
        peak = matmul_peak_gflops(threads=threads)
        result["peak_gflops"] = peak
        built = build_torch_llm(spec, dtype=args.dtype)
        result["build_s"] = built.build_s
        print(
            f"build {built.build_s:.2f} s (not part of any timing); fp32 matmul peak {peak:.0f} GFLOP/s\n"
        )
        print(
            "| visual tok | total tok | prefill ms (protocol) | 95% CI | projector ms | tok/s | GFLOP (counted / +attn) "
            "| GFLOP/s | % peak | Timer ms | protocol/Timer |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for i, n in enumerate(int(t) for t in args.tokens.split(",")):
            inputs = prepare_inputs(
                spec,
                n,
                args.prompt_tokens,
                encoder_dim=args.encoder_dim,
                dtype=resolve_dtype(args.dtype),
            )
            step, out = prefill_callable(built.model, inputs.visual, inputs.prompt_ids)
            with FlopCounterMode(display=False) as counter:
                step()
            counted = counter.get_total_flops()
            analytic = analytic_prefill_flops(spec, n + args.prompt_tokens)
            timer = Timer("step()", globals={"step": step}, num_threads=threads)

            def run_protocol(step=step):
                return measure(step, proto)

            def run_timer(timer=timer):
                return timer.blocked_autorange(min_run_time=args.timer_min_run_time)

            # Pairs in alternating order, so slow drift of a shared machine hits both alike;
            # each pair gives a ratio and the point reports the median ratio.
            ratios, pairs = [], []
            for j in range(max(1, args.pairs)):
                if (i + j) % 2 == 0:
                    m, t = run_protocol(), run_timer()
                else:
                    t, m = run_timer(), run_protocol()
                pairs.append((m, t))
                ratios.append(m.stats.median_ms / (t.median * 1e3))
            order = sorted(range(len(ratios)), key=ratios.__getitem__)
            m, t = pairs[order[len(order) // 2]]
            proj = time_projector(inputs.projector, inputs.features, proto, None)
            med = m.stats.median_ms
            timer_ms = t.median * 1e3
            gflops = counted / (med / 1e3) / 1e9
            point = {
                "tokens": n,
                "total_tokens": n + args.prompt_tokens,
                "median_ms": med,
                "ci_low_ms": m.stats.ci_low_ms,
                "ci_high_ms": m.stats.ci_high_ms,
                "n": m.stats.n,
                "iqr_ratio": m.stats.iqr_ratio,
                "projector_ms": proj.stats.median_ms,
                "tokens_per_s": (n + args.prompt_tokens) / (med / 1e3),
                "flops_counted": counted,
                "flops_analytic": analytic,
                "gflops_per_s": gflops,
                "pct_peak": 100 * gflops / peak,
                "timer_median_ms": timer_ms,
                "timer_iqr_ms": t.iqr * 1e3,
                "timer_runs": len(t.times) * t.number_per_run,
                "ratio": med / timer_ms,
                "pair_ratios": ratios,
            }
            result["points"].append(point)
            print(
                f"| {n} | {n + args.prompt_tokens} | {med:.1f} | {m.stats.ci_low_ms:.1f}-{m.stats.ci_high_ms:.1f} "
                f"| {proj.stats.median_ms:.2f} | {point['tokens_per_s']:.0f} | {counted / 1e9:.1f} / {analytic / 1e9:.1f} "
                f"| {gflops:.0f} | {point['pct_peak']:.0f}% | {timer_ms:.1f} | {point['ratio']:.3f} "
                f"(pairs {min(ratios):.3f}-{max(ratios):.3f}) |",
                flush=True,
            )
            del step, out, inputs
        del built

    if args.validate_sampling:
        t0 = time.perf_counter()
        check = validate_sampling(
            spec,
            args.sampling_tokens,
            args.validate_sampling,
            prompt_tokens=args.prompt_tokens,
            protocol=proto,
            rounds=args.sampling_rounds,
            dtype=args.dtype,
        )
        lo, q1, q3, hi = check.error_spread
        result["sampling"] = {
            **check.__dict__,
            "rel_error": check.rel_error,
            "round_errors": check.round_errors,
            "error_spread": {"min": lo, "q1": q1, "q3": q3, "max": hi},
            "contended_rounds": check.contended_rounds,
            "wall_s": time.perf_counter() - t0,
        }
        print(
            f"\nlayer sampling: k={check.k} of L={check.total_layers}, {check.tokens}+{check.prompt_tokens} tokens, "
            f"{len(check.per_round)} interleaved rounds: median error {100 * check.rel_error:+.1f}% "
            f"(IQR {100 * q1:+.1f}% to {100 * q3:+.1f}%, range {100 * lo:+.1f}% to {100 * hi:+.1f}%); "
            f"pooled full {check.full_ms:.1f} ms, estimate {check.estimate_ms:.1f} ms"
            + (f"; {check.contended_rounds} round(s) contended" if check.contended_rounds else "")
        )
        for r, err in zip(check.per_round, check.round_errors, strict=True):
            print(
                "  round {round}: full {full_ms:.1f} ms, estimate {estimate_ms:.1f} ms "
                "(base {base_ms:.2f} ms, k layers {k_layers_ms:.1f} ms)".format(**r)
                + f" error {100 * err:+.1f}%"
                + (" [contended]" if r.get("contended") else "")
            )

    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
