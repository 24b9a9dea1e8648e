"""`vlm-pareto ingest` accepts every name a sweep knows; an unknown one names --allow-new-names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAD = "encoder,resolution,llm,tiling,recipe,benchmark,score\n"


def ingest(tmp_path: Path, rows: str, *args: str) -> subprocess.CompletedProcess:
    csv = tmp_path / "acc.csv"
    csv.write_text(HEAD + rows)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VLM_PARETO_DB": f"sqlite:///{tmp_path / 'store.db'}",
    }
    # -X importtime: ingest must not import torch, even to learn the zoo's names
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "harness", "ingest", str(csv), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_sweep_llm_yaml_and_zoo_aliases_are_accepted(tmp_path):
    r = ingest(
        tmp_path,
        "fastvit_hd,256,tiny-llama,none,llava-1.5,gqa,50\nmci2,256,Tiny-Qwen2,none,llava-1.5,gqa,51\n",
    )
    assert r.returncode == 0, r.stderr
    assert "fastvithd@256 + tiny-llama" in r.stdout and "fastvit@256 + tiny-qwen2" in r.stdout
    assert " torch" not in r.stderr.replace(
        "torchvision", ""
    )  # importtime lines name every module imported
    from harness.store import Store

    acc = Store(f"sqlite:///{tmp_path / 'store.db'}").accuracy()
    assert sorted(acc["llm"]) == ["tiny-llama", "tiny-qwen2"]


def test_custom_encoder_from_the_config_dir_is_accepted(tmp_path):
    rows = "my-tiny-convnet,256,tiny-llama,none,llava-1.5,gqa,50\ntiny-convnet,512,tiny-llama,none,llava-1.5,gqa,52\n"
    r = ingest(tmp_path, rows, "--config-dir", str(ROOT / "examples" / "my_encoder"), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert (
        "my-tiny-convnet@256 + tiny-llama" in r.stdout
        and "my-tiny-convnet@512 + tiny-llama" in r.stdout
    )


def test_unknown_name_is_one_line_that_names_allow_new_names(tmp_path):
    r = ingest(tmp_path, "my-tiny-convnet,256,tiny-llama,none,llava-1.5,gqa,50\n")
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("vlm-pareto:")]
    assert len(err) == 1 and "unknown encoder 'my-tiny-convnet'" in err[0]
    assert "--allow-new-names" in err[0] and "--config-dir" in err[0]
    ok = ingest(
        tmp_path, "my-tiny-convnet,256,tiny-llama,none,llava-1.5,gqa,50\n", "--allow-new-names"
    )
    assert ok.returncode == 0, ok.stderr
    bad_dir = ingest(
        tmp_path,
        "fastvithd,256,tiny-llama,none,llava-1.5,gqa,50\n",
        "--config-dir",
        str(tmp_path / "nope"),
    )
    assert (
        bad_dir.returncode == 2
        and "--config-dir" in bad_dir.stderr
        and "no such folder" in bad_dir.stderr
    )
