"""Deployment runtimes vs fp32 eager PyTorch: speedup and parity, per encoder and for prefill.

For every model (FastViTHD@1024, ViT-L/14@336, ConvNeXt-L@512, Qwen2-0.5B prefill of 256
tokens) and every runtime that runs here (torch eager bf16 / int8, torch.compile fp32 / bf16
/ int8, ONNX Runtime fp32 / int8, ExecuTorch XNNPACK fp32 / int8), the runtime is built once
(export / lowering / compile time printed separately), its output is compared with fp32
eager (cosine, max abs error relative to the reference's max), and then it is timed
**interleaved with fp32 eager**: ``--rounds`` rounds of (eager, runtime), so each speedup is a
ratio of medians taken in the same minutes. A runtime that cannot export the model prints
the exporter's reason; one whose output is outside its parity threshold prints FAIL and the
numbers (its speed is not a result).

Then the Table 4 ordering at equal tokens: FastViTHD@1024 vs ConvNeXt-L@512 and
ConvNeXt-XXL@512 (256 tokens each) -- does FastViTHD stay faster under each runtime?

    python scripts/bench_runtimes.py                 # full (long: big exports; ~8 GB peak for the LLM)
    python scripts/bench_runtimes.py --fast          # small sizes, 6 runtimes: a check, ~5 min on 2 idle cores
    python scripts/bench_runtimes.py --runtimes onnxrt-fp32,compile-bf16 --models fastvithd@1024
    python scripts/bench_runtimes.py --json out.json # also write every number

Targets (issue 14): the fastest runtime >= 3x fp32 eager for the prefill, >= 2x for
FastViTHD@1024, with parity inside the thresholds (docs/runtimes.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: runtime label -> (backend registry name, precision, options)
RUNTIMES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "eager-bf16": ("torch-compile", "bfloat16", {"compile": False}),
    "eager-int8": ("torch-compile", "int8", {"compile": False}),
    "compile-fp32": ("torch-compile", "float32", {}),
    "compile-bf16": ("torch-compile", "bfloat16", {}),
    "compile-int8": ("torch-compile", "int8", {}),
    "onnxrt-fp32": ("onnxrt", "float32", {}),
    "onnxrt-int8": ("onnxrt", "int8", {}),
    "executorch-fp32": ("executorch", "float32", {"delegate": "xnnpack"}),
    "executorch-int8": ("executorch", "int8", {"delegate": "xnnpack"}),
}
FULL_MODELS = ["fastvithd@1024", "vit-l-14@336", "convnext-l@512", "qwen2-0.5b@256"]
FAST_MODELS = ["fastvithd@256", "qwen2-0.5b@64"]
FULL_TABLE4 = ["fastvithd@1024", "convnext-l@512", "convnext-xxl@512"]
FAST_TABLE4 = ["fastvithd@256", "convnext-l@128"]
#: --fast leaves out the slowest builds (compile fp32 / int8 and ExecuTorch int8 add little)
FAST_RUNTIMES = [
    "eager-bf16",
    "eager-int8",
    "compile-bf16",
    "onnxrt-fp32",
    "onnxrt-int8",
    "executorch-fp32",
]
CONV = ("fastvithd", "fastvit", "convnext-l", "convnext-xxl")


@dataclass
class Row:
    model: str
    runtime: str
    status: str  # ok | skipped | failed
    eager_ms: float | None = None
    runtime_ms: float | None = None
    speedup: float | None = None
    compile_s: float | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _runner(backend: str, side: str, precision: str, options: dict[str, Any]) -> Any:
    from harness.backends import get_backend
    from harness.backends.base import RunContext

    b = get_backend(backend)
    preset = {
        f"{side}_backend": backend,
        "device": "cpu",
        "dtype": precision,
        "llm_dtype": precision,
        f"{side}_options": options,
    }
    cfg = b.make_config(preset, side)  # type: ignore[arg-type]
    reason = cfg.availability()
    if reason:
        raise RuntimeError(reason)
    return (
        b.encoder_runner(cfg, RunContext())
        if side == "encoder"
        else b.llm_runner(cfg, RunContext())
    )


def _case(model: str, llm_layers: int | None, prompt_tokens: int) -> tuple[str, Any]:
    """(side, case) for ``name@size``: an encoder at a resolution or an LLM at a token count."""
    from harness.backends.graphs import encoder_case, prefill_case
    from harness.llms.zoo import LLMS, get_llm_spec

    name, size = model.split("@")
    if name in LLMS:
        spec = get_llm_spec(name)
        return "llm", prefill_case(
            spec, int(size) - prompt_tokens, prompt_tokens, encoder_dim=3072, layers=llm_layers
        )
    return "encoder", encoder_case(name, int(size), channels_last=False)


def _eager_step(model: str, case: Any) -> Any:
    """fp32 eager as the torch runner times it (channels_last for conv encoders)."""
    import torch

    if hasattr(case, "embeds"):
        graph, x = case.graph, case.embeds
    else:
        graph, x = case.graph, case.inputs
        if model.split("@")[0] in CONV:
            graph = graph.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

    def step() -> Any:
        with torch.inference_mode():
            return graph(x)

    return step


def _time(step: Any, runs: int, threads: int) -> list[float]:
    from harness.protocol import Protocol, measure

    proto = Protocol(name="bench", warmup_runs=1, min_runs=runs, max_time_s=600.0, threads=threads)
    import torch

    with torch.inference_mode():
        return list(measure(step, proto).samples_ms)


def bench_model(model: str, runtimes: list[str], args: argparse.Namespace) -> list[Row]:
    import torch

    from harness.backends.base import Skipped
    from harness.backends.parity import compare

    side, case = _case(model, args.llm_layers, args.prompt_tokens)
    reference = case.reference
    eager = _eager_step(model, case)
    for _ in range(2):  # warm
        eager()
    rows: list[Row] = []
    for label in runtimes:
        backend, precision, options = RUNTIMES[label]
        t0 = time.perf_counter()
        try:
            runner = _runner(backend, side, precision, options)
            # every runtime converts a fresh copy of the float32 graph (conversions are in place)
            _, fresh = _case(model, args.llm_layers, args.prompt_tokens)
            inputs = (fresh.embeds,) if side == "llm" else (fresh.inputs,)
            compiled = runner.compile_graph(fresh.graph, inputs, f"bench-{model.replace('@', '-')}")
            del fresh
        except Skipped as e:
            rows.append(
                Row(model, label, "skipped", reason=str(e), compile_s=time.perf_counter() - t0)
            )
            print(f"  {model:18s} {label:16s} skipped: {e}", flush=True)
            continue
        except Exception as e:  # a runtime crashing on one model must not stop the benchmark
            rows.append(
                Row(
                    model,
                    label,
                    "failed",
                    reason=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}",
                )
            )
            print(f"  {model:18s} {label:16s} failed: {rows[-1].reason}", flush=True)
            continue
        out = compiled.first_output
        out = out[0] if isinstance(out, (list, tuple)) else out
        out = out.detach().float().numpy() if hasattr(out, "detach") else out
        par = compare(out, reference.numpy(), precision)
        row = Row(
            model,
            label,
            "ok" if par.ok else "failed",
            compile_s=compiled.compile_s,
            parity={
                "cosine": par.cosine,
                "rel_err": par.rel_err,
                "max_abs_err": par.max_abs_err,
                "ok": par.ok,
            },
        )
        if not par.ok:
            row.reason = f"parity: {par.describe()}"
        e_s: list[float] = []
        r_s: list[float] = []
        with compiled.context():
            for _ in range(args.rounds):
                e_s += _time(eager, args.runs, args.threads)
                r_s += _time(compiled.step, args.runs, args.threads)
        row.eager_ms, row.runtime_ms = _median(e_s), _median(r_s)
        row.speedup = row.eager_ms / row.runtime_ms if row.runtime_ms else None
        rows.append(row)
        flag = "" if par.ok else f"  PARITY FAIL ({par.describe()})"
        print(
            f"  {model:18s} {label:16s} eager {row.eager_ms:9.1f} ms  runtime {row.runtime_ms:9.1f} ms  "
            f"speedup {row.speedup:5.2f}x  cos {par.cosine:.5f} rel {par.rel_err:.3g}  "
            f"build {compiled.compile_s:6.1f} s{flag}",
            flush=True,
        )
        if compiled.close:
            compiled.close()
        del compiled, runner
        gc.collect()
        torch._dynamo.reset()
    del case, eager
    gc.collect()
    return rows


def _bench_in_child(model: str, runtimes: list[str], args: argparse.Namespace) -> list[Row]:
    """:func:`bench_model` in a fresh interpreter (same settings); its rows come back as JSON.

    Compiled graphs, inductor caches and runtime sessions are not all freed when a model is
    done: in one process the full benchmark grew to 24 GB and was OOM-killed at the LLM."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "rows.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--models",
            model,
            "--runtimes",
            ",".join(runtimes),
            "--no-table4",
            "--rounds",
            str(args.rounds),
            "--runs",
            str(args.runs),
            "--threads",
            str(args.threads),
            "--prompt-tokens",
            str(args.prompt_tokens),
            "--json",
            str(out),
        ]
        if args.llm_layers is not None:
            cmd += ["--llm-layers", str(args.llm_layers)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("  "):  # the per-runtime lines; the child's summary is redone here
                print(line, flush=True)
        if proc.returncode != 0 or not out.exists():
            reason = f"benchmark process exited {proc.returncode} (killed for memory if -9)"
            print(f"  {model:18s} every runtime failed: {reason}", flush=True)
            return [Row(model, r, "failed", reason=reason) for r in runtimes]
        data = json.loads(out.read_text())
    return [Row(**r) for r in data["rows"]]


def table4(rows: list[Row], models: list[str], runtimes: list[str]) -> list[dict[str, Any]]:
    """Per runtime: is the first model (FastViTHD) faster than every other at equal tokens?"""
    out = []
    by = {(r.model, r.runtime): r for r in rows}
    for label in ["eager-fp32", *runtimes]:
        ms = {}
        for m in models:
            if label == "eager-fp32":
                e = [r.eager_ms for r in rows if r.model == m and r.eager_ms]
                ms[m] = _median(e) if e else None
            else:
                r = by.get((m, label))
                ms[m] = r.runtime_ms if r and r.status == "ok" else None
        first, others = models[0], models[1:]
        known = ms[first] is not None and all(ms[o] is not None for o in others)
        holds = known and all(ms[first] < ms[o] for o in others)  # type: ignore[operator]
        out.append({"runtime": label, "ms": ms, "holds": holds if known else None})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="small sizes (FastViTHD@256, Qwen2-0.5B 2 layers @64 tokens, ConvNeXt-L@128), 6 runtimes",
    )
    p.add_argument(
        "--models", default=None, help="comma list of name@size (encoder@resolution, llm@tokens)"
    )
    p.add_argument("--runtimes", default=None, help=f"comma list from {', '.join(RUNTIMES)}")
    p.add_argument("--no-table4", action="store_true", help="skip the Table 4 ordering check")
    p.add_argument(
        "--table4",
        default=None,
        metavar="GROUPS",
        help="Table 4 groups at equal tokens, ';'-separated, each a comma list whose first model "
        "should be the fastest (default: "
        + ",".join(FULL_TABLE4)
        + "; --fast: "
        + ",".join(FAST_TABLE4)
        + ")",
    )
    p.add_argument(
        "--llm-layers",
        type=int,
        default=None,
        help="build k of the LLM's layers (default: all; --fast: 2)",
    )
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="interleaved (eager, runtime) rounds")
    p.add_argument("--runs", type=int, default=3, help="timed runs per round")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores)")
    p.add_argument("--json", default=None, help="write every number to this file")
    p.add_argument(
        "--no-isolate",
        action="store_true",
        help="benchmark every model in this process (default: one child process per model, "
        "so one model's compiled graphs and runtime sessions never hold memory during the next)",
    )
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")
    if args.fast:
        args.rounds = min(args.rounds, 2)
        args.runs = min(args.runs, 2)
        if args.llm_layers is None:
            args.llm_layers = 2
    models = args.models.split(",") if args.models else (FAST_MODELS if args.fast else FULL_MODELS)
    runtimes = (
        args.runtimes.split(",")
        if args.runtimes
        else (FAST_RUNTIMES if args.fast else list(RUNTIMES))
    )
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad:
        print(
            f"bench_runtimes: unknown runtime {bad[0]!r} (known: {', '.join(RUNTIMES)})",
            file=sys.stderr,
        )
        return 2
    groups = (
        []
        if args.no_table4
        else [g.split(",") for g in args.table4.split(";") if g]
        if args.table4
        else [FAST_TABLE4 if args.fast else FULL_TABLE4]
    )
    t4 = [m for g in groups for m in g]
    t_start = time.perf_counter()
    print(
        f"runtimes vs fp32 eager ({'fast' if args.fast else 'full'}; {args.rounds} rounds x {args.runs} runs, "
        f"threads={args.threads or os.cpu_count()}, llm layers={args.llm_layers or 'all'})",
        flush=True,
    )
    rows: list[Row] = []
    todo = list(dict.fromkeys(models + t4))
    for m in todo:
        if args.no_isolate or len(todo) == 1:
            rows += bench_model(m, runtimes, args)
        else:
            rows += _bench_in_child(m, runtimes, args)
    print("\nspeedup vs fp32 eager (higher is faster; x = export/parity problem):")
    header = f"{'model':18s}" + "".join(f"{r:>17s}" for r in runtimes)
    print(header)
    for m in dict.fromkeys(models + t4):
        cells = []
        for r in runtimes:
            row = next((x for x in rows if x.model == m and x.runtime == r), None)
            if row is None or row.status == "skipped":
                cells.append(f"{'skipped':>17s}")
            elif row.status == "failed" and row.speedup is None:
                cells.append(f"{'failed':>17s}")
            else:
                cells.append(f"{row.speedup:>15.2f}x{'' if row.status == 'ok' else '!':1s}")
        print(f"{m:18s}" + "".join(cells))
    for m in models:
        ok = [x for x in rows if x.model == m and x.status == "ok" and x.speedup]
        if ok:
            best = max(ok, key=lambda x: x.speedup or 0)
            print(
                f"fastest for {m}: {best.runtime} {best.speedup:.2f}x (parity cos {best.parity['cosine']:.5f})"
            )
    order = []
    for group in groups:
        o_group = table4(rows, group, runtimes)
        order += [{**o, "group": group} for o in o_group]
        print(f"\nTable 4 ordering at equal tokens ({' < '.join(group)}?):")
        for o in o_group:
            line = "  ".join(f"{k}={v:.1f}ms" if v else f"{k}=n/a" for k, v in o["ms"].items())
            verdict = {True: "holds", False: "DOES NOT HOLD", None: "n/a"}[o["holds"]]
            print(f"  {o['runtime']:16s} {verdict:14s} {line}")
    print(f"\nwall {time.perf_counter() - t_start:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"rows": [asdict(r) for r in rows], "table4": order, "args": vars(args)},
                indent=1,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
