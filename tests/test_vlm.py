"""Open-VLM family adapters (harness/vlm): token rules, published counts, tiny models end to end, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.errors import UserError
from harness.vlm import FAMILIES, family_of, list_vlms, load_vlm, register_vlm, rules, vlm_params

REPO = Path(__file__).resolve().parents[1]
FULL = [n for n in list_vlms() if not n.startswith("tiny-")]
TINY = [n for n in list_vlms() if n.startswith("tiny-")]


def test_every_family_ships_named_sizes_and_a_tiny_config():
    fams = {load_vlm(n).family for n in FULL}
    assert fams == set(FAMILIES.names()) == {load_vlm(n).family for n in TINY}
    assert {
        "llava-onevision-0.5b",
        "llava-onevision-7b",
        "qwen2.5-vl-3b",
        "qwen2.5-vl-7b",
        "smolvlm2-256m",
        "smolvlm2-2.2b",
        "internvl3-1b",
        "gemma3-4b",
    } <= set(FULL)


# --- token rules against the families' published numbers -----------------------------------


def test_llava_onevision_tokens_match_the_paper_up_to_newlines():
    vlm = load_vlm("llava-onevision-0.5b")
    fam = family_of(vlm)
    # 1152 px: 3 x 3 grid of 384 tiles + base image = 10 x 729; transformers adds one newline
    # token per grid row (81), which the paper's 7290 (Table 6 R2) does not count.
    assert fam.tokens(vlm, 1152) == 10 * 729 + 81 == 7371
    assert vlm.published["tokens"][1152] == 7371 - 81
    assert fam.tokens(vlm, 384) == 729 + 729 + 27
    assert fam.images(vlm, 1152) == 10
    # anyres_max_9: a 6 x 6 grid (2304 px) is shrunk to about 9 tiles' worth of features
    lay = rules.llava_ov_layout(
        2304, 2304, 384, 14, [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)], 9
    )
    assert (lay["rows"], lay["feat_h"]) == (6, 81)
    assert fam.tokens(vlm, 2304) == 729 + 81 * 81 + 81


def test_best_resolution_and_unpadding_for_non_square_images():
    pins = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]
    # the smallest grid that holds a 400 x 800 image without downscaling it
    assert rules.select_best_resolution(400, 800, pins) == (768, 1152)
    h, w = rules.unpadded_shape(
        54, 54, 300, 600
    )  # a 1:2 image on a square grid: padding rows removed
    assert (h, w) == (
        28,
        54,
    )  # 27 image rows, rounded as transformers' unpad_image crops (13 off each side)


def test_qwen2_5_vl_dynamic_resolution():
    vlm = load_vlm("qwen2.5-vl-3b")
    fam = family_of(vlm)
    assert [fam.tokens(vlm, r) for r in (448, 672, 896)] == [
        256,
        576,
        1024,
    ]  # one token per 28 x 28 px
    big = 12845056  # the Qwen2.5-VL processor's max_pixels
    assert rules.smart_resize(1000, 1000, max_pixels=big) == (1008, 1008)
    assert rules.smart_resize(1000, 1000) == (
        980,
        980,
    )  # the function's own default cap (1280 tokens)
    assert rules.smart_resize(20, 20) == (56, 56)  # below min_pixels: scaled up
    h, w = rules.smart_resize(8000, 8000, max_pixels=big)  # above max_pixels: scaled down to fit
    assert h * w <= 12845056 and h % 28 == 0
    assert (
        fam.tokens_hw(vlm, 480, 640)
        == rules.qwen_tokens(*rules.smart_resize(480, 640, max_pixels=big))
        == 17 * 23
    )


def test_smolvlm_splitting_and_pixel_shuffle():
    small, large = load_vlm("smolvlm2-256m"), load_vlm("smolvlm2-2.2b")
    fam = family_of(small)
    assert fam.tokens(small, 512) == small.published["tokens_per_tile"][512] == 64
    assert fam.tokens(small, 1024) == (4 + 1) * 64  # 2 x 2 tiles + the global image
    assert fam.tokens(large, 384) == 81 and fam.tokens(large, 1536) == (16 + 1) * 81


def test_internvl_tiles_and_gemma3_pooling():
    vlm = load_vlm("internvl3-1b")
    fam = family_of(vlm)
    assert fam.tokens(vlm, 448) == vlm.published["tokens_per_tile"][448] == 256
    assert fam.tokens(vlm, 896) == (4 + 1) * 256 and fam.tokens(vlm, 1344) == 10 * 256
    assert rules.internvl_grid(448, 1344) == (3, 1)  # aspect-matched
    g = load_vlm("gemma3-4b")
    assert family_of(g).tokens(g, 896) == g.published["tokens"][896] == 256


@pytest.mark.parametrize("name", FULL)
def test_full_size_parameter_counts_match_published(name):
    vlm = load_vlm(name)
    counts = vlm_params(vlm)  # built on the meta device: nothing allocated, nothing run
    published = float(vlm.published["params_b"]) * 1e9
    assert abs(counts["total"] - published) / published < 0.025, (name, counts)


# --- tiny models end to end ----------------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
def test_tiny_family_end_to_end(name):
    from harness.backends.torch.encoder import measure_encoder
    from harness.backends.torch.prefill import measure_prefill
    from harness.protocol import Protocol
    from harness.ttft import compose_ttft

    vlm = load_vlm(name)
    fam = family_of(vlm)
    enc, llm = register_vlm(vlm)
    proto = Protocol(name="test", warmup_runs=0, min_runs=2, max_time_s=5.0)
    enc_rows, pre_rows = [], []
    sizes = fam.valid_sizes(vlm)[:2]  # Gemma 3 has one: every image is resized to it
    counts = [fam.tokens_hw(vlm, h, w) for h, w in ((sizes[-1], sizes[-1]), (300, 500), (900, 400))]
    assert all(c > 0 for c in counts)
    for size in sizes:
        r = measure_encoder(enc, size, protocol=proto, flops=False)
        assert r.tokens == fam.tokens(vlm, size) and r.out_dim == fam.out_dim(vlm)
        m = r.measurement
        enc_rows.append(
            dict(
                name=enc,
                resolution=size,
                tiling="none",
                tokens=r.tokens,
                backend="torch",
                device="cpu",
                dtype="float32",
                median_ms=m.stats.median_ms,
                samples_ms=m.samples_ms,
                extra={"out_dim": r.out_dim},
            )
        )
        p = measure_prefill(llm, r.tokens, 4, encoder_dim=r.out_dim, protocol=proto)
        pre_rows.append(
            dict(
                name=llm,
                tokens=r.tokens,
                prompt_tokens=4,
                backend="torch",
                device="cpu",
                dtype="float32",
                median_ms=p.prefill_ms,
                samples_ms=p.measurement.samples_ms,
                extra={"projector_ms": p.projector_ms, "encoder_dim": r.out_dim},
            )
        )
    ttft = compose_ttft(enc_rows, None, pre_rows)
    assert len(ttft) == len(sizes) and (ttft["ttft_ms"] > ttft["encoder_ms"]).all()


def test_tiny_vlms_sweep_pairs_each_vision_with_its_decoder_and_reports(tmp_path):
    from harness.points import load_points
    from harness.report.html import write_report
    from harness.sweep.configs import compose_sweep
    from harness.sweep.engine import run_sweep
    from harness.vlm.claim import claim_ratio

    cfg = compose_sweep(
        "vlms_quick",
        [
            "protocol.min_runs=1",
            "protocol.warmup_runs=0",
            "encoders.fastvithd.resolutions=[64]",
            f"db=sqlite:///{tmp_path}/s.db",
            "progress=false",
        ],
    )
    out = run_sweep(cfg, command="test", log=lambda m: None)
    assert out.exit_code == 0 and out.counts["failed"] == 0
    pts = load_points(db=cfg.db, run_ids=[out.run_id]).points
    pairs = set(zip(pts["encoder"], pts["llm"], strict=True))
    assert ("fastvithd", "tiny-qwen2") in pairs
    for name in TINY:
        assert {llm for enc, llm in pairs if enc == f"{name}-vision"} == {f"{name}-llm"}
    assert len(pts) == 1 + sum(len(load_vlm(n).resolutions) for n in TINY)
    r = claim_ratio(pts, {**cfg.claim, "fast": {"encoder": "fastvithd", "resolution": 64}})
    assert r["ratio"] > 0 and "tiny-llava-ov-vision@112" in r["slow"]
    paths = write_report(
        load_points(db=cfg.db, run_ids=[out.run_id]), tmp_path / "rep", static=False
    )
    assert "TTFT vs visual tokens" in paths.index_html.read_text()


def test_custom_encoder_with_pixel_shuffle_is_one_yaml(tmp_path):
    from harness.encoders.custom import register_custom_encoder

    cfg = tmp_path / "shuffled.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "tiny-vit-shuffled",
                "probe_resolution": 56,
                "token_reduction": {"pixel_shuffle": 2},
                "model": {
                    "_target_": "transformers.SiglipVisionConfig",
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                    "patch_size": 14,
                },
            }
        )
    )
    spec = register_custom_encoder(cfg)
    assert spec.stride == 28 and spec.out_dim == 4 * 32 and spec.tokens_at(112) == 16
    with pytest.raises(UserError, match="did you mean 'pixel_shuffle'"):
        register_custom_encoder(
            {
                "name": "x",
                "token_reduction": {"pixel_shufle": 2},
                "model": {"_target_": "torch.nn.Identity"},
            }
        )


# --- a real checkpoint's config.json ----------------------------------------------------------


def _checkpoint(tmp_path: Path, name: str = "llava-onevision-0.5b", edit=None) -> Path:
    data = yaml.safe_load((REPO / "sweeps" / "vlm" / f"{name}.yaml").read_text())
    cfg = data["config"]
    if edit:
        edit(cfg)
    d = tmp_path / "ckpt"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(
        json.dumps({**cfg, "architectures": ["X"], "transformers_version": "4.56.0"})
    )
    return d


def test_checkpoint_config_json_and_preprocessor(tmp_path):
    d = _checkpoint(tmp_path, "qwen2.5-vl-3b")
    (d / "preprocessor_config.json").write_text(
        json.dumps({"min_pixels": 3136, "max_pixels": 448 * 448})
    )
    vlm = load_vlm(d)
    assert vlm.family == "qwen2_5_vl" and vlm.name == "ckpt"
    assert family_of(vlm).valid_sizes(vlm)[-1] == 448
    enc, llm = register_vlm(vlm)
    from harness.encoders.zoo import encoder_tokens

    assert encoder_tokens(enc, 448) == 256


# --- bad input --------------------------------------------------------------------------------


def test_unknown_family_and_missing_field_name_it(tmp_path):
    with pytest.raises(
        UserError, match="unknown family 'llava_onevison'; did you mean 'llava_onevision'"
    ):
        load_vlm({"name": "x", "family": "llava_onevison", "config": {"model_type": "x"}})
    d = _checkpoint(tmp_path, edit=lambda c: c["vision_config"].pop("patch_size"))
    with pytest.raises(UserError, match=r"missing 'vision_config.patch_size'"):
        load_vlm(d)
    with pytest.raises(UserError, match="unknown key 'resolution'"):
        load_vlm({"name": "x", "family": "gemma3", "config": {}, "resolution": [1]})


def test_unknown_config_key_from_a_newer_transformers_is_refused(tmp_path):
    d = _checkpoint(tmp_path, edit=lambda c: c["vision_config"].update(use_rotary_2d=True))
    with pytest.raises(
        UserError, match=r"'vision_config.use_rotary_2d' is unknown to transformers"
    ):
        load_vlm(d)
    data = yaml.safe_load((REPO / "sweeps" / "vlm" / "gemma3-4b.yaml").read_text())
    data["config"]["future_knob"] = 1
    with pytest.raises(UserError, match="'future_knob'"):
        load_vlm(data)
    data["strict_keys"] = False
    assert load_vlm(data).name == "gemma3-4b"


def test_sizes_the_policy_cannot_produce_name_the_nearest():
    from harness.encoders.zoo import encoder_tokens, validate_resolution

    enc, _ = register_vlm("llava-onevision-0.5b")
    with pytest.raises(UserError, match="nearest valid sizes: 768, 1152"):
        validate_resolution(enc, 1000)
    q, _ = register_vlm("qwen2.5-vl-3b")
    with pytest.raises(UserError, match="nearest valid sizes: 448, 476"):
        encoder_tokens(q, 450)
    with pytest.raises(UserError, match="nearest valid sizes: 56, 84"):
        encoder_tokens(q, 20)
    g, _ = register_vlm("gemma3-4b")
    with pytest.raises(UserError, match="nearest valid sizes: 896"):
        encoder_tokens(g, 1024)
    with pytest.raises(UserError, match="own policy"):
        encoder_tokens(enc, 768, "2x2")


def _cli(*args: str) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_bad_vlm_input_is_one_line_exit_2():
    r = _cli(
        "sweep",
        "--config-name",
        "vlms_quick",
        "vlms.llava.resolutions=[100]",
        "db=sqlite:///:memory:",
    )
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if "error" in x]
    assert len(lines) == 1 and "nearest valid sizes: 56, 112" in lines[0]
    r = _cli(
        "sweep", "--config-name", "vlms_quick", "vlms.gemma.family=gemma4", "db=sqlite:///:memory:"
    )
    assert (
        r.returncode == 2 and "unknown family 'gemma4'" in r.stderr and "Traceback" not in r.stderr
    )
