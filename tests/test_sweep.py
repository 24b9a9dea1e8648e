"""The Hydra sweep: presets validate, the plan is factorized, runs resume, launchers work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.store import Store
from harness.sweep.configs import compose_sweep, presets
from harness.sweep.engine import resolve, run_sweep

ROOT = Path(__file__).resolve().parents[1]
PRESETS = [p for p in presets() if p != "config"]


def composed(name: str, overrides: list[str] | None = None):
    return compose_sweep(name, overrides)


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def test_all_expected_presets_exist():
    assert {"paper_table4", "paper_fig4", "paper_fig5", "paper_fig6", "nightly", "quick"} <= set(
        PRESETS
    )


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_validates_and_plans(name):
    cfg = composed(name)
    assert cfg.cite and cfg.recipe
    plan, _ = resolve(cfg)
    assert plan.points and plan.n_measurements <= len(plan.points) * 3


def test_default_config_is_paper_table4_and_factorized():
    cfg = composed("config")
    assert cfg.name == "paper_table4" and cfg.recipe == "llava-1.5"
    plan, specs = resolve(cfg)
    assert {(p.encoder, p.resolution) for p in plan.points} == {
        ("fastvithd", 256),
        ("fastvithd", 512),
        ("fastvithd", 768),
        ("fastvithd", 1024),
        ("convnext-l", 320),
        ("convnext-l", 512),
        ("convnext-xxl", 256),
        ("convnext-xxl", 512),
        ("fastvit", 256),
        ("fastvit", 768),
        ("vit-l-14", 336),
    }
    # Table 4/1 token counts: 16, 64, 100, 144, 256, 576 -> one prefill per distinct count
    assert sorted(t.tokens for t in plan.prefill_tasks) == [16, 64, 100, 144, 256, 576]
    assert len(plan.encoder_tasks) == 11


def test_fig4_grid_costs_far_less_than_the_product():
    plan, _ = resolve(composed("paper_fig4"))
    n_enc = len(plan.encoder_tasks)
    distinct_tokens = len({t.tokens for t in plan.encoder_tasks})
    assert len(plan.points) == n_enc * 3
    assert len(plan.prefill_tasks) == 3 * distinct_tokens < len(plan.points)


def test_fig6_tiled_token_counts():
    plan, _ = resolve(composed("paper_fig6"))
    tokens = {(t.resolution, t.tiling): t.tokens for t in plan.encoder_tasks}
    assert tokens[(2048, "2x2+overview")] == 1280  # Table 6: 2048 with 2x2 tiles + overview
    assert tokens[(2048, "2x2")] == 1024
    assert tokens[(2048, "none")] == 1024
    assert tokens[(1024, "2x2+overview")] == 5 * 64


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["encoders.fastvithd.resolutions=[100]"], "fastvithd"),
        (["encoders.fastvithd.resolutions=[]", "encoders.fastvit.resolutions=[]"], "empty grid"),
        (["prompt_tokens=-1"], "prompt_tokens"),
        (["protocol.min_runs=many"], "protocol.min_runs|min_runs"),
        (["backend.dtype=float8"], "dtype"),
        (["claim=bogus"], "claim must be a mapping"),
        (["claim={fast: {encoder: fastvithd}}"], "claim needs 'slow"),
    ],
)
def test_bad_configs_fail_before_measuring(overrides, message):
    with pytest.raises(UserError, match=message):
        resolve(composed("quick", overrides))
    r = cli("sweep", "--config-name", "quick", "backend=fake", *overrides)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "error:" in r.stderr


def test_fake_sweep_end_to_end_and_resume(db_url):
    cfg = composed("quick", ["backend=fake", f"db={db_url}", "report=false"])
    out = run_sweep(cfg, command="test")
    n = out.plan.n_measurements
    assert out.counts == {"measured": n, "reused": 0, "skipped": 0, "failed": 0}
    rows = Store(db_url).measurement_rows([out.run_id])
    assert len(rows) == n and {r["kind"] for r in rows} == {"encoder", "prefill", "projector"}
    again = run_sweep(
        composed("quick", ["backend=fake", f"db={db_url}", f"run_id={out.run_id}"]), command="test"
    )
    assert again.counts["reused"] == n and again.counts["measured"] == 0
    assert len(Store(db_url).measurement_rows([out.run_id])) == n


def test_rounds_interleave_and_accumulate_samples(db_url):
    cfg = composed("quick", ["backend=fake", f"db={db_url}", "rounds=3", "protocol.min_runs=5"])
    out = run_sweep(cfg, command="test")
    rows = Store(db_url).measurement_rows([out.run_id])
    assert all(len(r["samples_ms"]) == 15 and r["extra"]["rounds"] == 3 for r in rows)


def test_the_interval_over_rounds_has_the_protocols_confidence(db_url):
    from harness.stats import hierarchical_median_ci

    widths = {}
    for conf in (0.6, 0.99):
        cfg = composed(
            "quick",
            [
                "backend=fake",
                f"db={db_url}",
                "rounds=3",
                "protocol.min_runs=5",
                f"protocol.confidence={conf}",
            ],
        )
        out = run_sweep(cfg, command="test")
        row = Store(db_url).measurement_rows([out.run_id], kind="encoder")[0]
        sizes, s = row["extra"]["round_sizes"], row["samples_ms"]
        groups = [s[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(len(sizes))]
        assert (row["ci_low_ms"], row["ci_high_ms"]) == pytest.approx(
            hierarchical_median_ci(groups, conf)
        )
        widths[conf] = row["ci_high_ms"] - row["ci_low_ms"]
    assert widths[0.6] < widths[0.99]


def test_skipped_points_are_recorded_and_the_sweep_goes_on(db_url):
    cfg = composed("quick", ["backend=fake", "backend.encoder_backend=coreml", f"db={db_url}"])
    out = run_sweep(cfg, command="test")
    if sys.platform == "darwin":
        pytest.skip("Core ML predicts on macOS")
    assert out.counts["skipped"] == len(out.plan.encoder_tasks)
    assert out.exit_code == 0
    rows = Store(db_url).measurement_rows([out.run_id], kind="encoder")
    assert all(r["status"] == "skipped" and "macOS" in r["reason"] for r in rows)
    assert all(
        r["status"] == "ok" for r in Store(db_url).measurement_rows([out.run_id], kind="prefill")
    )


def test_cli_unknown_group_option_suggests(db_url):
    r = cli("sweep", "--config-name", "quick", "backend=torch-cpuu")
    assert r.returncode == 2
    assert "did you mean 'torch-cpu'" in r.stderr and "Traceback" not in r.stderr
    r = cli("sweep", "--config-name", "quik")
    assert r.returncode == 2 and "did you mean 'quick'" in r.stderr


def test_cli_unknown_hydra_group_option_is_one_line():
    r = cli("sweep", "--config-name", "quick", "backend=fake", "hydra/launcher=nosuch")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "unknown 'hydra/launcher' option 'nosuch'" in r.stderr and "joblib" in r.stderr


def test_cli_unknown_hydra_setting_is_one_line():
    r = cli("sweep", "--config-name", "quick", "backend=fake", "hydra.bogus=1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "Could not override 'hydra.bogus'" in r.stderr and "Traceback" not in r.stderr


def test_chdir_jobs_keep_relative_store_and_report_paths(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "harness", "--db", "rel.db", "sweep", "--config-name", "quick"]
        + ["backend=fake", "progress=false", "hydra.job.chdir=true"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    # where the user looks, not in Hydra's per-run folder
    assert (tmp_path / "rel.db").is_file() and (
        tmp_path / "reports" / "quick" / "index.html"
    ).is_file()
    assert not list((tmp_path / "outputs").rglob("rel.db"))


def test_unusable_hydra_output_folder_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = cli("sweep", "--config-name", "quick", "backend=fake", f"hydra.run.dir={tmp_path}/afile/x")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "cannot make that folder" in r.stderr


def test_cli_sweep_override_without_multirun_is_refused():
    r = cli("sweep", "--config-name", "quick", "backend=fake,torch-cpu")
    assert r.returncode == 2 and "-m" in r.stderr


def test_cli_cfg_job_prints_config():
    r = cli("sweep", "--config-name", "paper_fig5", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    assert "name: paper_fig5" in r.stdout and "qwen2-1.5b" in r.stdout


def test_cli_sweep_json_summary(db_url, tmp_path):
    r = cli(
        "--db",
        db_url,
        "sweep",
        "--config-name",
        "quick",
        "backend=fake",
        "json=true",
        f"report_dir={tmp_path}/r",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["grid_points"] == 6 and doc["counts"]["failed"] == 0 and len(doc["points"]) == 6
    assert {p["encoder"] for p in doc["points"]} == {"fastvithd", "fastvit"} and doc[
        "report"
    ].endswith("index.html")


def test_cli_fake_sweep_writes_store_and_exit_0(db_url):
    r = cli("--db", db_url, "sweep", "--config-name", "quick", "backend=fake", "report=false")
    assert r.returncode == 0, r.stderr
    assert "6 grid points ->" in r.stdout + r.stderr
    assert "ttft_ms" in r.stdout  # the TTFT table closes the run
    assert len(Store(db_url).list_runs()) == 1


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_multirun_launchers_share_one_run(db_url, launcher, tmp_path):
    args = [
        "--db",
        db_url,
        "sweep",
        "--config-name",
        "quick",
        "-m",
        "backend=fake",
        "report=false",
        "tiling=none,2x2",
        f"hydra/launcher={launcher}",
        f"hydra.sweep.dir={tmp_path}/mr",
    ]
    if launcher == "joblib":
        args.append("hydra.launcher.n_jobs=2")
    r = cli(*args, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    store = Store(db_url)
    runs = store.list_runs()
    assert len(runs) == 1  # both jobs wrote into one run
    rows = store.measurement_rows([runs[0]["id"]])
    keys = [
        (r["kind"], r["name"], r["resolution"], r["tiling"], r["tokens"], r["in_dim"]) for r in rows
    ]
    assert len(keys) == len(set(keys))  # shared measurements were taken once
    assert {r["tiling"] for r in rows if r["kind"] == "encoder"} == {"none", "2x2"}
    assert all(r["status"] == "ok" for r in rows)


def test_kill_and_resume_loses_and_repeats_nothing(db_url, tmp_path):
    """SIGKILL a real sweep mid-run, resume it, and check every measurement exists once."""
    run_id = "killme"
    args = [
        sys.executable,
        "-m",
        "harness",
        "--db",
        db_url,
        "sweep",
        "--config-name",
        "quick",
        f"run_id={run_id}",
        "report=false",
        "protocol.min_runs=3",
        "llms={}",
        "+llm@llms.tiny=tiny-qwen2",
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = Store(db_url)
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline:
        try:
            done = len(
                [m for m in store.measurement_rows([run_id], status="ok") if m["kind"] != "canary"]
            )
        except UserError:
            done = 0
        if done >= 2:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the machine-speed canary row is appended to by the resumed process (docs/noise.md)
    before = {
        r["id"]: r for r in store.measurement_rows([run_id], status="ok") if r["kind"] != "canary"
    }
    assert len(before) >= 2
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    after = store.measurement_rows([run_id])
    keys = [(m["kind"], m["name"], m["resolution"], m["tokens"], m["in_dim"]) for m in after]
    assert len(keys) == len(set(keys))
    assert all(m["status"] == "ok" for m in after)
    for rid, row in before.items():  # nothing measured before the kill was redone or lost
        kept = [m for m in after if m["id"] == rid]
        assert kept and kept[0]["samples_ms"] == row["samples_ms"]
    assert f"reused {len(before)}" in r.stdout


def test_custom_encoder_from_one_yaml_file_takes_part_in_a_sweep(db_url, tmp_path):
    """The README's worked example: a config-dir with encoder/my_encoder.yaml, one override."""
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
            str(ROOT / "examples" / "my_encoder"),
            "+encoder@encoders.mine=my_encoder",
            "backend=fake",
            f"report_dir={tmp_path}/rep",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    rows = Store(db_url).measurement_rows(kind="encoder")
    mine = {row["resolution"]: row["tokens"] for row in rows if row["name"] == "my-tiny-convnet"}
    assert mine == {
        256: 256,
        512: 1024,
    }  # the YAML's resolutions; stride 16, probed from forward passes
    assert (
        "my-tiny-convnet" in r.stdout
        and "my-tiny-convnet" in (tmp_path / "rep" / "points.csv").read_text()
    )


def test_protocol_config_mirrors_the_protocol_dataclass():
    """The Hydra-side protocol config and harness.protocol.Protocol have the same fields."""
    from dataclasses import fields

    from harness.protocol import Protocol
    from harness.sweep.configs import ProtocolConfig

    assert [f.name for f in fields(ProtocolConfig)] == [f.name for f in fields(Protocol)]


def test_resuming_a_finished_multi_round_run_adds_no_samples(db_url):
    cfg = composed("quick", ["backend=fake", f"db={db_url}", "rounds=2", "protocol.min_runs=5"])
    out = run_sweep(cfg, command="t")
    again = run_sweep(
        composed(
            "quick",
            [
                "backend=fake",
                f"db={db_url}",
                "rounds=2",
                "protocol.min_runs=5",
                f"run_id={out.run_id}",
            ],
        ),
        command="t",
    )
    assert again.counts["measured"] == 0
    rows = Store(db_url).measurement_rows([out.run_id])
    assert all(len(r["samples_ms"]) == 10 and r["extra"]["rounds"] == 2 for r in rows)


def test_interrupt_releases_the_claim_so_a_resume_measures_it(db_url):
    from harness.sweep.engine import Measurer
    from harness.sweep.plan import Job
    from harness.tasks import EncoderTask, MeasurementKey

    store = Store(db_url)
    run = store.create_run("t", {}, {"machine_id": "m"})
    key = MeasurementKey("encoder", "x", resolution=64)

    class Interrupted:
        round = 0

        def measure(self, task, in_dim=0):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Measurer(store, run, Interrupted(), owner="host:1").run(
            Job(key, "x", EncoderTask("x", "x", 64, "none", 1, 1))
        )
    assert store.get_measurement(run, key) is None  # no stale 'running' claim left behind


def test_a_failed_point_makes_the_run_partial_not_failed(db_url, monkeypatch):
    from harness.sweep import runners

    def boom(self, task, in_dim):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(runners.Runners, "prefill", boom)
    out = run_sweep(composed("quick", ["backend=fake", f"db={db_url}"]), command="t")
    assert out.exit_code == 1 and out.counts["failed"] == len(out.plan.prefill_tasks)
    assert Store(db_url).get_run(out.run_id)["status"] == "partial"
