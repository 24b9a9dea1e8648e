"""Bad input found by the post-merge review: each refused in one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.errors import UserError
from harness.sweep.configs import compose_sweep


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("+protocol.retake=1", "did you mean 'retakes'"),
        ("+encoders.fastvithd.resolution=[1]", "did you mean 'resolutions'"),
        ("+backend.bogus=1", "backend.bogus"),
        ("+protocl.min_runs=1", "did you mean 'protocol'"),
    ],
)
def test_sweep_refuses_a_key_added_with_plus_that_the_schema_lacks(override, hint):
    # '+key=value' forces a key into the composed config; a typo must not be ignored silently
    with pytest.raises(UserError, match="invalid sweep config") as e:
        compose_sweep("quick", ["backend=fake", override])
    assert hint in str(e.value)


def _cli(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VLM_PARETO_DB": str(tmp_path / "s.db")}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--bogus"], "unknown sweep option '--bogus'"),
        (["--confg-name", "quick"], "did you mean '--config-name'"),
        (["--config-name"], "--config-name needs a value"),
        (["--config-name", "quick", "--config-dir"], "--config-dir needs a value"),
        (["--cfg", "bogus"], "--cfg needs one of job, hydra, all"),
    ],
)
def test_sweep_bad_flags_are_one_line_not_hydras_usage_block(argv, needle, tmp_path):
    r = _cli("sweep", *argv, tmp_path=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and needle in r.stderr and "usage" not in r.stderr
    assert not (tmp_path / "s.db").exists()


def test_sweep_json_flag_after_the_command_and_overrides_around_multirun(tmp_path):
    # '--json' after 'sweep' (as for every other command) and an override before '-m'
    r = _cli(
        "sweep",
        "backend=fake",
        "--config-name",
        "quick",
        "progress=false",
        "--json",
        tmp_path=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["counts"]["measured"] == out["measurements"] > 0
    r = _cli(
        "sweep",
        "--config-name",
        "quick",
        "backend=fake",
        "progress=false",
        "-m",
        "protocol=quick",
        f"run_id={out['run_id']}",
        tmp_path=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "Launching 1 jobs" in r.stdout and "measured 0, reused 13" in r.stdout


def test_choose_help_shows_a_single_percent_sign():
    r = subprocess.run(
        [sys.executable, "-m", "harness", "choose", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        r.returncode == 0
        and "95% confidence" in " ".join(r.stdout.split())
        and "%%" not in r.stdout
    )


def test_ingest_knows_the_names_an_open_vlm_sweep_stores(tmp_path):
    # vlms_quick / open_vlms measure '<vlm>-vision' + '<vlm>-llm'; their accuracy must ingest as is
    from harness.accuracy.known import sweep_names

    names = sweep_names()
    assert names["encoder"]["llava-onevision-0.5b-vision"] == "llava-onevision-0.5b-vision"
    assert names["llm"]["tiny-smolvlm-llm"] == "tiny-smolvlm-llm"
    (tmp_path / "vlm").mkdir()
    (tmp_path / "vlm" / "mine.yaml").write_text("name: My-VLM\nfamily: smolvlm\n")
    assert "my-vlm-vision" in sweep_names([tmp_path])["encoder"]
    csv = tmp_path / "acc.csv"
    rows = "".join(
        f"tiny-llava-ov-vision,112,tiny-llava-ov-llm,none,llava-1.5,{b},50\n"
        for b in ("gqa", "textvqa", "pope", "docvqa", "seedbench")
    )
    csv.write_text("encoder,resolution,llm,tiling,recipe,benchmark,score\n" + rows)
    r = _cli("ingest", str(csv), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "1 inserted" in r.stdout


def test_predict_a_shipped_preset_with_yaml_llms_and_open_vlms(tmp_path):
    # quick's tiny-qwen2 / tiny-llama are YAML-defined LLMs; vlms_quick adds open VLMs
    r = _cli(
        "predict",
        "--device",
        "m1-max",
        "--preset",
        "quick",
        "--tiling",
        "2x2",
        "--json",
        tmp_path=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    pts = json.loads(r.stdout)["points"]
    assert {p["llm"] for p in pts} == {"tiny-qwen2", "tiny-llama"}
    assert {p["tiling"] for p in pts} == {"2x2"}  # --tiling applies to a preset's grid too
    r = _cli("predict", "--device", "m1-max", "--preset", "vlms_quick", tmp_path=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "open-VLM point(s) of vlms_quick not predicted" in r.stderr and "tiny-qwen2" in r.stdout


def test_runtimes_refuses_a_reference_runtime_the_runs_do_not_hold(tmp_path):
    r = _cli("sweep", "--config-name", "quick", "backend=fake", "progress=false", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cli("runtimes", "--reference", "fake:float3", tmp_path=tmp_path)
    assert (
        r.returncode == 2
        and r.stderr.count("\n") == 1
        and "did you mean 'fake:float32'" in r.stderr
    )
    assert _cli("runtimes", "--reference", "fake:float32", tmp_path=tmp_path).returncode == 0
