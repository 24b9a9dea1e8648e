"""`vlm-pareto zoo` through a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _zoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", "zoo", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_zoo_json_and_table():
    proc = _zoo("--json", "--encoder-config", "examples/my_encoder/encoder/my_encoder.yaml")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    enc = {e["name"]: e for e in data["encoders"]}
    assert list(enc)[:6] == [
        "fastvithd",
        "fastvit",
        "vit-l-14",
        "siglip-so400m",
        "convnext-l",
        "convnext-xxl",
    ]
    for e in enc.values():
        assert {"name", "params_m", "params_include_head", "stride", "out_dim", "tokens"} <= set(e)
    # by default: each encoder's paper resolutions and its native one
    assert enc["fastvithd"]["tokens"] == {"256": 16, "512": 64, "768": 144, "1024": 256}
    assert enc["vit-l-14"]["tokens"] == {"336": 576}
    assert enc["siglip-so400m"]["tokens"] == {"384": 729}
    assert enc["convnext-xxl"]["tokens"] == {"256": 64, "512": 256, "1024": 1024}
    # Table 4's ConvNeXt-L at 320 is listed; the stride-64 ConvLLaVA sizes are not, and a note says why
    assert (
        enc["convnext-l"]["tokens"] == {"320": 100, "512": 256}
        and enc["convnext-l"]["stride"] == 32
    )
    assert "ConvLLaVA" in enc["convnext-l"]["note"] and "144/256/576" in enc["convnext-l"]["note"]
    assert enc["fastvithd"]["params_m"] == 125.04 and enc["fastvit"]["params_m"] == 35.68
    assert abs(enc["convnext-xxl"]["params_m"] - 846) / 846 < 0.02
    assert "head" in enc["convnext-l"]["params_include_head"]
    assert enc["my-tiny-convnet"]["tokens"]["256"] == 256 and enc["my-tiny-convnet"]["stride"] == 16
    llms = {row["name"]: row for row in data["llms"]}
    assert {"qwen2-0.5b", "qwen2-7b", "vicuna-7b"} <= set(llms) and llms["qwen2-0.5b"][
        "hidden"
    ] == 896


def test_zoo_table_in_process(capsys):
    from harness.cli import main

    # In-process: torch is already imported by the other tests, so this costs no start-up.
    assert main(["zoo", "--resolutions", "256,1024"]) == 0
    out = capsys.readouterr().out
    assert (
        "fastvithd" in out and "1024:256" in out and "qwen2-0.5b" in out and "count covers" in out
    )
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("convnext-l "))
    assert "320(pn):100" in row and "512(p):256" in row and "768" not in row
    assert "note: convnext-l:" in out and "125.04M" in out and "35.68M" in out


def test_zoo_bad_input_is_one_line_exit_2():
    bad = _zoo("--resolutions", "big")
    assert (
        bad.returncode == 2
        and bad.stderr.startswith("vlm-pareto: error:")
        and len(bad.stderr.strip().splitlines()) == 1
    )


def test_an_unimportable_custom_target_is_one_line(tmp_path):
    cfg = tmp_path / "e1.yaml"
    cfg.write_text("name: e1\nmodel:\n  _target_: nosuch_mod_xyz.build\n")
    proc = _zoo("--encoder-config", str(cfg))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot import _target_ 'nosuch_mod_xyz.build'" in proc.stderr
