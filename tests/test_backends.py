"""Backends as plug-ins: the registry, per-backend configs, and a user backend from a config dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.backends import BACKENDS, get_backend, names_for
from harness.backends.base import (
    Backend,
    EncoderExtra,
    Outcome,
    Parity,
    PrefillExtra,
    RunnerConfig,
    Skipped,
)
from harness.errors import UserError
from harness.store import Store
from harness.sweep.configs import BackendConfig, compose_sweep
from harness.sweep.runners import configure_backend
from harness.tasks import EncoderTask

ROOT = Path(__file__).resolve().parents[1]

TOY_MODULE = '''
"""A user backend in one module: numpy matmuls shaped like the model, timed by the protocol."""

from dataclasses import dataclass

import numpy as np

from harness.backends.base import (Backend, Built, EncoderExtra, EncoderRunner, LLMRunner, Outcome,
                                   PrefillExtra, ProjectorExtra, RunnerConfig)
from harness.protocol import measure


@dataclass
class ToyConfig(RunnerConfig):
    PRECISIONS = ("float32", "float16")
    width: int = 16


class ToyEncoder(EncoderRunner):
    def build(self, spec, resolution, tiling, weights=None):
        from harness.encoders.tiling import parse_tiling

        t = parse_tiling(tiling)
        tile = t.tile_resolution(resolution)
        n = t.images * spec.tokens_at(tile)
        x = np.ones((n, self.config.width), self.config.precision)
        w = np.ones((self.config.width, spec.out_dim), self.config.precision)
        return Built(step=lambda: x @ w, tokens=n, out_dim=spec.out_dim,
                     extra=EncoderExtra(tile_resolution=tile, images=t.images, compile_s=0.25,
                                        settings={"toy_width": self.config.width}))


class ToyLLM(LLMRunner):
    def prefill(self, task, spec, in_dim, protocol, sample_layers=None):
        x = np.ones((task.tokens + task.prompt_tokens, spec.hidden), self.config.precision)
        m = measure(lambda: x @ x.T, protocol)
        return Outcome(m, PrefillExtra(params_b=spec.params_b, total_layers=spec.layers), build_s=0.0)

    def projector(self, task, spec, protocol):
        x = np.ones((task.tokens, task.in_dim), self.config.precision)
        w = np.ones((task.in_dim, spec.hidden), self.config.precision)
        m = measure(lambda: x @ w, protocol)
        return Outcome(m, ProjectorExtra(in_dim=task.in_dim, out_dim=spec.hidden), build_s=0.0)


BACKEND = Backend("toy", ToyConfig, encoder=ToyEncoder, llm=ToyLLM, description="numpy stand-in")
'''

TOY_PRESET = """\
# A user backend: toy_backend.py next to this file, registered by name below.
name: toy
encoder_backend: toy
llm_backend: toy
device: cpu
dtype: float16
llm_dtype: float32
runtimes:
  toy: "toy_backend:BACKEND"
import_path: .
encoder_options:
  width: 8
"""


@pytest.fixture
def toy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "conf"
    (d / "backend").mkdir(parents=True)
    (d / "backend" / "toy_backend.py").write_text(TOY_MODULE)
    (d / "backend" / "toy.yaml").write_text(TOY_PRESET)
    return d


def test_a_user_backend_is_one_module_plus_one_yaml_and_runs_a_sweep_end_to_end(
    db_url, toy_dir, tmp_path
):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "--db",
            db_url,
            "sweep",
            "--config-name",
            "quick",
            "--config-dir",
            str(toy_dir),
            "backend=toy",
            f"report_dir={tmp_path}/rep",
            "json=true",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    # the machine-speed canary (harness/canary.py) is the run's own reference row, not a point
    rows = [r for r in Store(db_url).measurement_rows([summary["run_id"]]) if r["kind"] != "canary"]
    assert rows and all(row["status"] == "ok" and row["backend"] == "toy" for row in rows), rows
    enc = [row for row in rows if row["kind"] == "encoder"]
    # the side's precision is part of the key; its own setting and compile time are recorded
    assert {row["dtype"] for row in enc} == {"float16"}
    assert all(row["extra"]["toy_width"] == 8 and row["extra"]["compile_s"] == 0.25 for row in enc)
    assert {row["dtype"] for row in rows if row["kind"] != "encoder"} == {"float32"}
    assert {row["kind"] for row in rows} == {"encoder", "prefill", "projector"}
    points = (tmp_path / "rep" / "points.csv").read_text()
    assert "fastvithd" in points and "toy" in points


def test_unknown_backend_names_suggest_and_sides_are_checked():
    with pytest.raises(UserError, match="did you mean 'torch'"):
        get_backend("torhc")
    with pytest.raises(UserError, match="did you mean 'coreml'"):
        configure_backend(BackendConfig(encoder_backend="coreml2"))
    with pytest.raises(UserError, match="has no llm runner"):
        configure_backend(BackendConfig(llm_backend="coreml"))
    assert "coreml" in names_for("encoder") and "coreml" not in names_for("llm")
    assert {"torch", "fake", "mlx", "coreml"} <= set(BACKENDS.names())


def test_backend_configs_validate_their_own_settings():
    with pytest.raises(UserError, match="llm side.*did you mean 'float16'"):
        configure_backend(BackendConfig(llm_dtype="float61"))
    with pytest.raises(UserError, match="compute units"):
        configure_backend(BackendConfig(encoder_backend="coreml", compute_units="NEURAL"))
    with pytest.raises(UserError, match="did you mean 'channels_last'"):
        configure_backend(BackendConfig(encoder_options={"channels_lats": True}))
    with pytest.raises(UserError, match="4 or 8"):
        configure_backend(
            BackendConfig(llm_backend="mlx", llm_dtype="float16", mlx_quantize_bits=3)
        )
    c = configure_backend(BackendConfig(dtype="bf16", encoder_options={"compile": True}))
    assert c["encoder"].precision == "bfloat16" and c["encoder"].compile  # type: ignore[attr-defined]


def test_precision_is_part_of_the_key():
    cfg = compose_sweep("quick", ["backend=mlx", "backend.mlx_quantize_bits=4"])
    from harness.sweep.engine import resolve
    from harness.sweep.runners import Runners

    plan, specs = resolve(cfg)
    runners = Runners(cfg, specs)
    assert runners.key(plan.prefill_tasks[0]).dtype == "q4"  # not the float16 it quantizes
    assert runners.key(plan.encoder_tasks[0]).backend == "torch"


def test_an_unavailable_backend_is_skipped_with_its_reason(db_url):
    from harness.sweep.engine import run_sweep

    @dataclass
    class Missing(RunnerConfig):
        REQUIRES = ("surely_not_installed_runtime",)
        INSTALL_HINT = "pip install 'vlm-pareto[nothing]'"

    from harness.backends import register_backend
    from harness.backends.fake import FakeEncoder

    register_backend(
        "missing-rt", Backend("missing-rt", Missing, encoder=FakeEncoder), ("encoder",)
    )
    cfg = compose_sweep(
        "quick", ["backend=fake", "backend.encoder_backend=missing-rt", f"db={db_url}"]
    )
    out = run_sweep(cfg, command="t")
    rows = Store(db_url).measurement_rows([out.run_id], kind="encoder")
    assert rows and all(
        r["status"] == "skipped" and "vlm-pareto[nothing]" in r["reason"] for r in rows
    )
    assert out.exit_code == 0


def test_typed_extras_round_trip_through_the_stored_json():
    e = PrefillExtra(
        encoder_dim=3072,
        projector_ms=1.5,
        sampled_layers=2,
        total_layers=24,
        latency_source="estimated",
        parity=Parity.between([1.0, 2.0], [1.0, 2.0]),
        settings={"graph_optimization_level": "all"},
    )
    d = e.to_dict()
    assert d["graph_optimization_level"] == "all" and d["parity"]["cosine"] == pytest.approx(1.0)
    back = PrefillExtra.from_dict(json.loads(json.dumps(d)))
    assert back == e
    old = EncoderExtra.from_dict({"out_dim": 768, "params_m": 5.0, "channels_last": True})
    assert (
        old.out_dim == 768
        and old.settings == {"channels_last": True}
        and old.latency_source == "measured"
    )


def test_skipped_is_a_user_error_and_outcome_estimated_follows_the_source():
    from harness.protocol import Measurement
    from harness.stats import summarize

    assert issubclass(Skipped, UserError)
    m = Measurement([1.0, 2.0], summarize([1.0, 2.0]), "quick", 1)
    assert not Outcome(m).estimated
    assert Outcome(m, PrefillExtra(latency_source="predicted")).estimated


def test_fake_runners_need_no_torch():
    code = (
        "import sys; from harness.sweep.configs import compose_sweep; from harness.sweep.engine import resolve;"
        "from harness.sweep.runners import Runners; cfg = compose_sweep('quick', ['backend=fake']);"
        "plan, specs = resolve(cfg); r = Runners(cfg, specs);"
        "r.measure(plan.encoder_tasks[0]); r.measure(plan.prefill_tasks[0], 3072);"
        "print('torch' in sys.modules)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_encoder_runner_default_measure_checks_tokens():
    from harness.backends.base import RunContext
    from harness.backends.fake import FakeConfig
    from harness.protocol import get_protocol

    task = EncoderTask("x", "fastvithd", 256, "none", tokens=17, out_dim=3072)
    from harness.backends.base import Built, EncoderRunner

    class Wrong(EncoderRunner):
        def build(self, spec, resolution, tiling, weights=None):
            return Built(step=lambda: None, tokens=16, out_dim=3072)

    with pytest.raises(RuntimeError, match="plan expected 17"):
        Wrong(FakeConfig(name="w"), RunContext()).measure(task, get_protocol("quick"))


def test_a_predicted_part_makes_the_point_predicted_without_special_cases():
    """A latency-model backend stores its Outcome like any other; the points say 'predicted'."""
    from harness.backends.base import EncoderExtra
    from harness.stats import summarize
    from harness.ttft import compose_ttft

    def row(kind, extra, **kw):
        s = summarize([10.0, 11.0, 12.0])
        return dict(
            kind=kind,
            name=kw.pop("name"),
            resolution=kw.pop("resolution", 0),
            tiling="none",
            tokens=16,
            prompt_tokens=kw.pop("prompt_tokens", 0),
            in_dim=kw.pop("in_dim", 0),
            backend=kw.pop("backend"),
            device="cpu",
            dtype="float32",
            protocol="quick",
            status="ok",
            samples_ms=[10.0, 11.0, 12.0],
            median_ms=s.median_ms,
            p90_ms=s.p90_ms,
            ci_low_ms=s.ci_low_ms,
            ci_high_ms=s.ci_high_ms,
            estimated=True,
            extra=extra,
            machine_id="m",
            run_id="r",
        )

    e = row(
        "encoder",
        EncoderExtra(out_dim=64, params_m=1.0, latency_source="predicted").to_dict(),
        name="fastvit",
        resolution=512,
        backend="predictor",
    )
    p = row(
        "prefill",
        PrefillExtra(encoder_dim=64, projector_ms=0.5, params_b=0.5).to_dict(),
        name="qwen2-0.5b",
        prompt_tokens=16,
        backend="torch",
    )
    df = compose_ttft([e], [], [p])
    assert df.iloc[0]["latency_source"] == "predicted" and df.iloc[0]["encoder_params_m"] == 1.0
    assert df.iloc[0]["projector_ms"] == 0.5 and df.iloc[0]["llm_params_b"] == 0.5
