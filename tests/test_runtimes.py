"""Deployment runtimes (ONNX Runtime, ExecuTorch XNNPACK, torch.compile, bf16, int8) on tiny
models: each stores a measurement with its parity vs float32 eager; exports that fail are
skipped points with the exporter's reason; wrong outputs are failed points with the numbers;
macOS / CUDA configs compose and refuse cleanly; bad settings exit 2 before measuring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.backends import get_backend
from harness.backends.base import RunContext, Skipped
from harness.backends.parity import THRESHOLDS, ParityError, check, compare
from harness.errors import UserError
from harness.protocol import Protocol
from harness.store import MeasurementKey, Store
from harness.sweep.configs import compose_sweep, validate
from harness.sweep.engine import resolve, run_sweep
from harness.tasks import EncoderTask, PrefillTask

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = ROOT / "examples" / "my_encoder"
#: one thread (the suite shares the CPU), two timed runs
FAST = Protocol(name="quick", warmup_runs=1, min_runs=2, max_time_s=5.0, threads=1)
pytestmark = pytest.mark.filterwarnings("ignore")


def tiny_sweep(db_url: str, backend: str, *extra: str, resolutions: str = "[64]"):
    """The example tiny conv encoder + the tiny Qwen2 under ``backend``, one thread."""
    return compose_sweep(
        "quick",
        [
            "~encoders.fastvithd",
            "~encoders.fastvit",
            "+encoder@encoders.mine=my_encoder",
            f"encoders.mine.resolutions={resolutions}",
            f"encoders.mine.import_path={EXAMPLE_DIR}",
            "~llms.tiny_llama",
            f"backend={backend}",
            f"db={db_url}",
            "report=false",
            "progress=false",
            "protocol.threads=1",
            "protocol.min_runs=2",
            *extra,
        ],
        extra_dir=EXAMPLE_DIR,
    )


def rows(db_url: str, run_id: str) -> dict[str, dict]:
    df = Store(db_url).measurements(run_ids=[run_id])
    return {r["kind"]: r for r in df.to_dict("records")}


def runner(backend: str, side: str, precision: str = "float32", **options):
    b = get_backend(backend)
    preset = {
        f"{side}_backend": backend,
        "device": "cpu",
        "dtype": precision,
        "llm_dtype": precision,
        f"{side}_options": options,
    }
    cfg = b.make_config(preset, side)  # type: ignore[arg-type]
    assert cfg.availability() is None
    ctx = RunContext()
    return b.encoder_runner(cfg, ctx) if side == "encoder" else b.llm_runner(cfg, ctx)


def store_outcome(
    db_url: str, backend: str, kind: str, name: str, dtype: str, outcome, **key
) -> dict:
    s = Store(db_url)
    run = s.create_run("test", {}, {})
    k = MeasurementKey(kind=kind, name=name, backend=backend, dtype=dtype, protocol="quick", **key)
    s.add_measurement(
        run,
        k,
        outcome.measurement,
        extra=outcome.extra_dict(),
        build_s=outcome.build_s,
        estimated=outcome.estimated,
    )
    got = s.get_measurement(run, k)
    assert got is not None and got["status"] == "ok" and got["median_ms"] > 0
    return got


def assert_parity(extra: dict, precision: str) -> None:
    min_cos, max_rel = THRESHOLDS[precision]
    assert extra["parity_ok"] is True and extra["parity_precision"] == precision
    assert extra["parity_cosine"] >= min_cos and extra["parity_rel_err"] <= max_rel
    assert extra["parity"]["reference"] == "torch-float32-eager"
    assert extra["compile_s"] > 0  # export / lowering / compile time, kept out of the latency


# ------------------------------------------------------------------------------ parity


def test_parity_compare_and_thresholds():
    ref = np.linspace(-1, 1, 100)
    ok = compare(ref + 1e-6, ref, "float32")
    assert ok.ok and ok.cosine > 0.999999 and ok.max_abs_err == pytest.approx(1e-6)
    with pytest.raises(ParityError, match=r"cosine .* max abs err"):
        check(-ref, ref, "float32", "x")
    assert not compare(np.full(100, np.nan), ref, "bfloat16").ok
    # looser thresholds for lower precisions, ordered
    assert THRESHOLDS["float32"][0] > THRESHOLDS["float16"][0] > THRESHOLDS["int8"][0]


# --------------------------------------------------------------------- ONNX Runtime


def test_onnxrt_sweep_stores_encoder_prefill_projector_with_parity(db_url, capsys):
    import json

    from harness.cli import main

    out = run_sweep(tiny_sweep(db_url, "onnxrt-cpu"), command="test")
    assert out.counts["measured"] == 3 and out.counts["failed"] == 0
    got = rows(db_url, out.run_id)
    for kind in ("encoder", "prefill", "projector"):
        r = got[kind]
        assert r["backend"] == "onnxrt" and r["dtype"] == "float32" and r["status"] == "ok"
        assert_parity(r["extra"], "float32")
        assert (
            r["extra"]["graph_optimization_level"] == "all" and r["extra"]["intra_op_threads"] >= 1
        )
        assert r["extra"]["provider"] == "CPUExecutionProvider"
    # the runtime-comparison command reads the run back (no fp32 eager here: no speedup)
    capsys.readouterr()
    assert main(["--db", db_url, "runtimes", "--run", out.run_id, "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert {(r["kind"], r["runtime"], r["status"]) for r in table} == {
        ("encoder", "onnxrt:float32", "ok"),
        ("prefill", "onnxrt:float32", "ok"),
    }


def test_main_report_compares_runtimes_measured_in_its_runs(db_url, tmp_path):
    from harness.cli import main

    a = run_sweep(tiny_sweep(db_url, "onnxrt-cpu"), command="test")
    b = run_sweep(tiny_sweep(db_url, "torch-cpu"), command="test")
    assert a.counts["failed"] == b.counts["failed"] == 0
    out = tmp_path / "rep"
    args = ["--db", db_url, "report", "--run", a.run_id, "--run", b.run_id, "--no-static"]
    assert main([*args, "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    summary = (out / "summary.md").read_text()
    assert "<h2>Runtimes compared</h2>" in page and "## Runtimes compared" in summary
    # one line per runtime of each model, with the speedup over fp32 eager of the same runs
    assert "| my-tiny-convnet | 64 px | onnxrt:float32 |" in summary
    assert "| my-tiny-convnet | 64 px | torch:float32 |" in summary and "1.00x" in summary
    # a single run with a single runtime has no comparison to show
    one = tmp_path / "one"
    assert (
        main(["--db", db_url, "report", "--run", b.run_id, "--no-static", "--out", str(one)]) == 0
    )
    assert "Runtimes compared" not in (one / "index.html").read_text()


def test_report_draws_one_frontier_per_runtime_for_measured_points():
    import pandas as pd

    from harness.report.figures import runtime_frontiers
    from harness.report.summary import with_defaults

    base = {"latency_source": "measured", "machine": "m", "recipe": "llava-1.5", "llm": "q"}
    pts = with_defaults(
        pd.DataFrame(
            [
                {**base, "encoder": "e", "resolution": r, "backend": be, "ttft_ms": t, "avg5": a}
                for be, scale in (("torch", 3.0), ("onnxrt", 1.0), ("onnxrt+torch", 2.0))
                for r, t, a in ((256, 100.0, 50.0), (512, 300.0, 60.0))
                for t in [t * scale]
            ]
        )
    )
    (spec,) = runtime_frontiers(pts, "avg5")
    names = [t.name for t in spec.figure.data]
    assert names == ["onnxrt", "frontier: onnxrt", "torch", "frontier: torch"]  # no mixed
    assert "onnxrt, torch" in spec.caption and "measured, m" in spec.figure.layout.title.text
    # one runtime only, or paper rows: no such figure
    assert runtime_frontiers(pts[pts["backend"] == "torch"], "avg5") == []
    assert runtime_frontiers(pts.assign(latency_source="paper"), "avg5") == []


def test_onnxrt_int8_prefill_is_quantized_and_within_parity(db_url):
    from harness.llms.zoo import tiny_spec

    spec = tiny_spec()
    o = runner("onnxrt", "llm", "int8").prefill(PrefillTask("t", spec.name, 32, 8), spec, 64, FAST)
    row = store_outcome(
        db_url, "onnxrt", "prefill", spec.name, "int8", o, tokens=32, prompt_tokens=8
    )
    assert_parity(row["extra"], "int8")
    assert "QInt8" in row["extra"]["quantization"]
    assert 0 < row["extra"]["parity_cosine"] < 1.0  # really quantized, not the float graph
    assert o.projector is not None and o.projector.extra.parity is not None


def test_wrong_output_is_a_failed_point_with_the_numbers(db_url, monkeypatch):
    # int8 really changes the output; demand float32-level agreement from it
    monkeypatch.setitem(THRESHOLDS, "int8", (0.9999999, 1e-7))
    out = run_sweep(tiny_sweep(db_url, "onnxrt-cpu-int8"), command="test")
    got = rows(db_url, out.run_id)
    assert out.counts["failed"] >= 1
    assert got["prefill"]["status"] == "failed"
    assert "parity failed" in got["prefill"]["reason"] and "cosine" in got["prefill"]["reason"]
    median = got["prefill"]["median_ms"]
    assert median is None or median != median  # no latency stored for a wrong output (None / NaN)


def helper_encoder_sweep(db_url, tmp_path, name: str, builder: str, *backend: str):
    """The quick preset with only tiny-qwen2 and one encoder of tests/helpers/runtime_models.py
    (``name``, built by ``builder``), declared as a YAML in a temporary config dir."""
    (tmp_path / "encoder").mkdir()
    (tmp_path / "encoder" / "helper.yaml").write_text(
        f"name: {name}\nresolutions: [32]\nimport_path: "
        + str(ROOT / "tests" / "helpers")
        + f"\nprobe_resolution: 32\nmodel:\n  _target_: runtime_models.{builder}\n"
    )
    return compose_sweep(
        "quick",
        [
            "~encoders.fastvithd",
            "~encoders.fastvit",
            "+encoder@encoders.helper=helper",
            "~llms.tiny_llama",
            *backend,
            f"db={db_url}",
            "report=false",
            "progress=false",
            "protocol.threads=1",
            "protocol.min_runs=2",
        ],
        extra_dir=tmp_path,
    )


def test_export_failure_is_a_skipped_point_with_the_exporters_reason(db_url, tmp_path):
    cfg = helper_encoder_sweep(
        db_url, tmp_path, "eigen-scaled", "build_eigen_scaled", "backend=onnxrt-cpu"
    )
    out = run_sweep(cfg, command="test")
    got = rows(db_url, out.run_id)
    assert got["encoder"]["status"] == "skipped"
    assert got["encoder"]["reason"].startswith("onnx export failed: ConversionError")
    assert got["prefill"]["status"] == "ok"  # the sweep went on


# ------------------------------------------------------------- eager low precision


def test_torch_eager_bf16_checks_parity_before_storing(db_url):
    """Eager PyTorch in bf16 is a deployment choice too: each side is compared with float32
    eager on the same inputs before its latency is stored."""
    out = run_sweep(tiny_sweep(db_url, "torch-cpu-bf16"), command="test")
    assert out.counts["failed"] == 0 and out.counts["measured"] == 3
    got = rows(db_url, out.run_id)
    min_cos, max_rel = THRESHOLDS["bfloat16"]
    for kind in ("encoder", "prefill", "projector"):
        r = got[kind]
        assert r["backend"] == "torch" and r["dtype"] == "bfloat16" and r["status"] == "ok"
        e = r["extra"]
        assert e["parity_ok"] is True and e["parity_precision"] == "bfloat16", kind
        assert e["parity_cosine"] >= min_cos and e["parity_rel_err"] <= max_rel, kind
        assert e["parity"]["reference"] == "torch-float32-eager"
        assert e["parity_cosine"] < 1.0 or e["parity_max_abs_err"] > 0  # really bf16
    # float32 eager is the reference itself: nothing to compare
    ref = run_sweep(tiny_sweep(db_url, "torch-cpu"), command="test")
    assert "parity_ok" not in rows(db_url, ref.run_id)["encoder"]["extra"]


def test_torch_eager_fp16_overflow_is_a_failed_point_with_the_numbers(db_url, tmp_path):
    cfg = helper_encoder_sweep(
        db_url,
        tmp_path,
        "overflowing",
        "build_overflowing",
        "backend=torch-cpu",
        "backend.dtype=float16",
    )
    out = run_sweep(cfg, command="test")
    enc = rows(db_url, out.run_id)["encoder"]
    assert enc["status"] == "failed" and enc["dtype"] == "float16"
    assert "parity failed" in enc["reason"] and "non-finite" in enc["reason"]
    assert enc["median_ms"] is None or enc["median_ms"] != enc["median_ms"]


# ------------------------------------------------------------------------ ExecuTorch


def test_executorch_xnnpack_encoder_and_export_failure(db_url):
    from harness.encoders.custom import register_custom_encoder

    spec = register_custom_encoder(EXAMPLE_DIR / "encoder" / "my_encoder.yaml")
    r = runner("executorch", "encoder", delegate="xnnpack")
    o = r.measure(EncoderTask("m", spec.name, 64, "none", 16, 256), FAST)
    row = store_outcome(
        db_url, "executorch", "encoder", spec.name, "float32", o, resolution=64, tokens=16
    )
    assert_parity(row["extra"], "float32")
    assert row["extra"]["delegate"] == "xnnpack" and row["extra"]["delegate_calls"] >= 1

    eig = register_custom_encoder(
        {
            "name": "eigen-scaled",
            "probe_resolution": 32,
            "import_path": str(ROOT / "tests" / "helpers"),
            "model": {"_target_": "runtime_models.build_eigen_scaled"},
        }
    )
    with pytest.raises(Skipped, match="executorch lowering .xnnpack. failed: .*eigh"):
        r.measure(EncoderTask("e", eig.name, 32, "none", 16, 16), FAST)


# -------------------------------------------------------------------- torch.compile


def tiny_vit():
    from harness.encoders.custom import register_custom_encoder

    return register_custom_encoder(
        {
            "name": "tiny-vit-runtimes",
            "probe_resolution": 28,
            "model": {
                "_target_": "transformers.CLIPVisionConfig",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "patch_size": 14,
            },
        }
    )


def test_torch_compile_bf16_encoder(db_url):
    spec = tiny_vit()
    o = runner("torch-compile", "encoder", "bfloat16").measure(
        EncoderTask("v", spec.name, 56, "none", 17, 32), FAST
    )
    row = store_outcome(
        db_url, "torch-compile", "encoder", spec.name, "bfloat16", o, resolution=56, tokens=17
    )
    assert_parity(row["extra"], "bfloat16")
    assert row["extra"]["compile"] is True and row["extra"]["compile_mode"] == "default"
    assert row["extra"]["freezing"] is True  # weights folded / pre-packed (inference)
    assert 0 < row["extra"]["parity_cosine"] < 1.0  # really bf16


def test_torch_int8_eager_quantizes_linears_and_skips_conv_only_encoders(db_url):
    from harness.encoders.custom import register_custom_encoder
    from harness.llms.zoo import tiny_spec

    spec = tiny_spec()
    r = runner("torch-compile", "llm", "int8", compile=False)
    o = r.prefill(PrefillTask("t", spec.name, 16, 4), spec, 32, FAST)
    row = store_outcome(
        db_url, "torch-compile", "prefill", spec.name, "int8", o, tokens=16, prompt_tokens=4
    )
    assert_parity(row["extra"], "int8")
    assert (
        row["extra"]["quantized_linears"] == spec.layers * 7 + 1
    )  # q,k,v,o,gate,up,down + lm_head
    conv = register_custom_encoder(EXAMPLE_DIR / "encoder" / "my_encoder.yaml")
    with pytest.raises(Skipped, match="quantizes nn.Linear layers and this model has none"):
        runner("torch-compile", "encoder", "int8").measure(
            EncoderTask("m", conv.name, 64, "none", 16, 256), FAST
        )


# ------------------------------------------------------------- configs that cannot run here


@pytest.mark.parametrize(
    "preset",
    ["onnxrt-cuda", "onnxrt-coreml", "executorch-coreml", "executorch-mps", "torch-compile-cuda"],
)
def test_macos_and_cuda_configs_compose_validate_and_refuse_cleanly(preset, db_url):
    cfg = tiny_sweep(db_url, preset)
    validate(cfg)
    resolve(cfg)  # config-time checks pass: these refuse per point, not at config time
    cfg = tiny_sweep(db_url, preset)
    out = run_sweep(cfg, command="test")
    got = rows(db_url, out.run_id)
    assert out.counts["failed"] == 0 and out.counts["measured"] == 0
    assert out.nothing_measured and out.exit_code == 1  # a sweep that measured nothing says so
    for kind in ("encoder", "prefill"):
        assert got[kind]["status"] == "skipped"
        assert any(w in got[kind]["reason"] for w in ("macOS", "CUDA", "cuda", "NVIDIA"))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["backend=onnxrt-cpu", "backend.dtype=bfloat16"], "unknown onnxrt dtype 'bfloat16'"),
        (
            ["backend=onnxrt-cpu", "backend.dtype=float16"],
            "onnxrt float16 runs on the cuda and coreml providers",
        ),
        (
            ["backend=executorch-xnnpack", "backend.llm_dtype=float16"],
            "executorch float16 runs on the coreml and mps",
        ),
        (["backend=torch-compile", "backend.dtype=q4"], "unknown torch-compile dtype 'q4'"),
        (["backend=onnxrt-cpu", "+backend.encoder_options.provder=cpu"], "did you mean 'provider'"),
        (
            ["backend=executorch-xnnpack", "backend.llm_options.delegate=xnnpak"],
            "did you mean 'xnnpack'",
        ),
    ],
)
def test_bad_runtime_settings_exit_2_at_config_time(overrides, message):
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "sweep", "--config-name", "quick", *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_runtime_not_installed_names_the_extra(monkeypatch):
    import harness.backends.base as base

    real = base.is_importable
    monkeypatch.setattr(base, "is_importable", lambda m: m != "onnxruntime" and real(m))
    with pytest.raises(
        UserError,
        match=r"needs onnxruntime, which is not installed: pip install 'vlm-pareto\[onnx\]'",
    ):
        resolve(compose_sweep("quick", ["backend=onnxrt-cpu"]))
    monkeypatch.setattr(base, "is_importable", lambda m: m != "executorch" and real(m))
    with pytest.raises(UserError, match=r"pip install 'vlm-pareto\[executorch\]'"):
        resolve(compose_sweep("quick", ["backend=executorch-xnnpack"]))


# ------------------------------------------------------------------------- reports


def _m(kind, name, size, backend, dtype, ms, status="ok", **extra):
    return {
        "kind": kind,
        "name": name,
        "resolution": size if kind == "encoder" else 0,
        "tiling": "none",
        "tokens": 0 if kind == "encoder" else size,
        "prompt_tokens": 0,
        "backend": backend,
        "dtype": dtype,
        "status": status,
        "median_ms": ms if status == "ok" else None,
        "reason": extra.pop("reason", None),
        "extra": extra,
        "created_at": "2026-12-02T10:00:00",
    }


def test_speedup_table_against_fp32_eager_with_parity_and_reasons():
    import pandas as pd

    from harness.report.runtimes import speedup_table, table_markdown

    df = pd.DataFrame(
        [
            _m("encoder", "fastvithd", 1024, "torch", "float32", 900.0),
            _m(
                "encoder",
                "fastvithd",
                1024,
                "onnxrt",
                "float32",
                300.0,
                parity_cosine=0.99998,
                compile_s=20.0,
            ),
            _m(
                "encoder",
                "fastvithd",
                1024,
                "executorch",
                "int8",
                None,
                status="skipped",
                reason="executorch lowering failed: X",
            ),
            _m("prefill", "qwen2-0.5b", 256, "torch", "float32", 4000.0),
            _m("prefill", "qwen2-0.5b", 256, "torch-compile", "int8", 1000.0, parity_cosine=0.99),
            _m("projector", "qwen2-0.5b", 256, "torch", "float32", 5.0),
        ]
    )
    t = speedup_table(df)
    got = {(r["name"], r["runtime"]): r for r in t.to_dict("records")}
    assert got[("fastvithd", "onnxrt:float32")]["speedup"] == pytest.approx(3.0)
    assert got[("qwen2-0.5b", "torch-compile:int8")]["speedup"] == pytest.approx(4.0)
    assert got[("fastvithd", "torch:float32")]["speedup"] == pytest.approx(1.0)
    assert got[("fastvithd", "executorch:int8")]["status"] == "skipped"
    assert set(t["kind"]) == {"encoder", "prefill"}  # projector rows are not a model size
    md = table_markdown(t)
    assert "| fastvithd | 1024 px | onnxrt:float32 | 300.0 | 3.00x | 0.99998 | - | 20.0 |" in md
    assert "skipped: executorch lowering failed: X" in md


def test_choose_backend_filters_points_and_suggests():
    import pandas as pd

    from harness.report.runtimes import filter_backend

    pts = pd.DataFrame({"backend": ["torch", "onnxrt", "onnxrt+torch"], "ttft_ms": [3.0, 2.0, 1.0]})
    assert filter_backend(pts, "onnxrt")["ttft_ms"].tolist() == [2.0]
    with pytest.raises(UserError, match="did you mean 'onnxrt'"):
        filter_backend(pts, "onnxrtt")


def test_removing_an_export_leaves_other_models_data_alone(tmp_path):
    """Qwen2-0.5B int8 (external data) was skipped: deleting the float export's files took the
    quantized model's ``.data`` file with it (a wildcard on the file stem)."""
    from harness.backends.graphs import remove_onnx

    names = ["m-int8.onnx", "m-int8.onnx.data", "m-int8q.onnx.data", "m-quantized.onnx.data"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    remove_onnx(tmp_path / "m-int8.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m-int8q.onnx.data",
        "m-quantized.onnx.data",
    ]
