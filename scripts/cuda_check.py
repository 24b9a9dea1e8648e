"""One prepared check of the CUDA runtime configs, for a machine with an NVIDIA GPU.

Runs, on one encoder and one LLM prefill, interleaved with fp32 eager on the same GPU:
fp16 and bf16 eager PyTorch, torch.compile (inductor) fp16, and ONNX Runtime's CUDA
execution provider fp16 (skipped with the reason when this onnxruntime build has no
CUDAExecutionProvider: ``pip install onnxruntime-gpu``). Prints one line per runtime with the
median, the speedup over fp32 eager and the parity vs fp32 eager; ``--json`` writes them.

    python scripts/cuda_check.py                         # FastViTHD@1024 + Qwen2-0.5B @ 256 tokens
    python scripts/cuda_check.py --encoder vit-l-14@336 --llm qwen2-1.5b@512 --json cuda.json

Exit codes: 0 ran (whatever the numbers), 2 no CUDA device here. Budget: about 3-5 minutes
on one GPU (exports and compiles dominate).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])


def _time(step: Any, runs: int) -> list[float]:
    import torch

    out = []
    for _ in range(runs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def check_model(model: str, rounds: int, runs: int) -> list[dict[str, Any]]:
    import copy

    import torch

    from harness.backends.base import RunContext, Skipped
    from harness.backends.graphs import encoder_case, prefill_case
    from harness.backends.onnxrt import BACKEND as ORT
    from harness.backends.parity import compare
    from harness.backends.torch_compile import BACKEND as TC
    from harness.llms.zoo import LLMS, get_llm_spec

    name, size = model.split("@")
    case: Any
    if name in LLMS:
        side = "llm"
        case = prefill_case(get_llm_spec(name), int(size) - 16, 16, encoder_dim=3072)
        x = case.embeds
    else:
        side = "encoder"
        case = encoder_case(name, int(size))
        x = case.inputs
    ref = case.reference.numpy()
    eager32 = copy.deepcopy(case.graph).cuda()
    x32 = x.cuda()

    def eager_step() -> Any:
        with torch.inference_mode():
            return eager32(x32)

    variants: list[tuple[str, Any, str, dict[str, Any]]] = [
        ("eager-fp16", TC, "float16", {"compile": False}),
        ("eager-bf16", TC, "bfloat16", {"compile": False}),
        ("compile-fp16", TC, "float16", {}),
        ("onnxrt-cuda-fp16", ORT, "float16", {"provider": "cuda"}),
    ]
    rows = []
    for label, backend, precision, options in variants:
        preset = {
            f"{side}_backend": backend.name,
            "device": "cuda",
            "dtype": precision,
            "llm_dtype": precision,
            f"{side}_options": options,
        }
        row: dict[str, Any] = {"model": model, "runtime": label}
        try:
            cfg = backend.make_config(preset, side)
            reason = cfg.availability()
            if reason:
                raise Skipped(reason)
            runner = (
                backend.encoder_runner(cfg, RunContext())
                if side == "encoder"
                else backend.llm_runner(cfg, RunContext())
            )
            graph = copy.deepcopy(case.graph)
            compiled = runner.compile_graph(graph, (x,), f"cuda-{name}")
        except Exception as e:
            row.update(
                status="skipped", reason=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            )
            print(f"{model:20s} {label:18s} skipped: {row['reason']}", flush=True)
            rows.append(row)
            continue
        out = compiled.first_output
        out = out[0] if isinstance(out, (list, tuple)) else out
        out = out.detach().float().cpu().numpy() if hasattr(out, "detach") else out
        par = compare(out, ref, precision)
        e_s: list[float] = []
        r_s: list[float] = []
        with compiled.context():
            for _ in range(rounds):
                e_s += _time(eager_step, runs)
                r_s += _time(compiled.step, runs)
        row.update(
            status="ok" if par.ok else "parity-failed",
            eager_fp32_ms=_median(e_s),
            runtime_ms=_median(r_s),
            speedup=_median(e_s) / _median(r_s),
            parity_cosine=par.cosine,
            parity_rel_err=par.rel_err,
            compile_s=compiled.compile_s,
            gpu=torch.cuda.get_device_name(),
        )
        print(
            f"{model:20s} {label:18s} fp32 {row['eager_fp32_ms']:8.2f} ms  runtime {row['runtime_ms']:8.2f} ms  "
            f"speedup {row['speedup']:5.2f}x  cos {par.cosine:.5f}  build {compiled.compile_s:.1f} s"
            + ("" if par.ok else "  PARITY FAIL"),
            flush=True,
        )
        rows.append(row)
        del compiled, runner, graph
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="fastvithd@1024")
    p.add_argument("--llm", default="qwen2-0.5b@256")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    if not torch.cuda.is_available():
        print("cuda_check: no CUDA device (or a CPU-only torch build) here", file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    rows = []
    for m in (args.encoder, args.llm):
        rows += check_model(m, args.rounds, args.runs)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
