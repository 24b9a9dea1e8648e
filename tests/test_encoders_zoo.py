"""The encoder zoo: parameter counts, token counts from real shapes, validation, custom encoders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.encoders import (
    build_encoder,
    count_params,
    encoder_out_dim,
    encoder_tokens,
    get_spec,
    list_encoders,
    register_custom_encoder,
    validate_resolution,
)
from harness.encoders.zoo import builder_call_kwargs, builder_fn, to_tokens
from harness.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "my_encoder" / "encoder" / "my_encoder.yaml"

PAPER_PARAMS_M = {
    "fastvithd": 125.1,
    "fastvit": 35.7,
    "vit-l-14": 304.0,
    "siglip-so400m": 430.0,
    "convnext-l": 200.0,
    "convnext-xxl": 846.0,
}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_param_counts_match_paper_within_2_percent(name):
    measured = count_params(name, with_head=True) / 1e6
    assert abs(measured - PAPER_PARAMS_M[name]) / PAPER_PARAMS_M[name] < 0.02, measured
    assert get_spec(name).params_include_head  # the zoo says what the count covers


def test_fastvithd_count_without_head():
    assert abs(count_params("fastvithd", with_head=False) / 1e6 - 122.7) / 122.7 < 0.02


def _meta_tokens(name: str, resolution: int) -> torch.Tensor:
    """Run the real module on meta tensors: true output shapes, no memory, no compute."""
    spec = get_spec(name)
    with torch.device("meta"):
        model = builder_fn(spec)(**builder_call_kwargs(spec, resolution, False))
        return to_tokens(model(torch.empty(1, 3, resolution, resolution)))


@pytest.mark.parametrize(
    "name,resolution,tokens",
    [
        ("fastvithd", 256, 16),
        ("fastvithd", 512, 64),
        ("fastvithd", 768, 144),
        ("fastvithd", 1024, 256),
        ("fastvit", 256, 64),
        ("fastvit", 768, 576),
        ("vit-l-14", 336, 576),
        ("siglip-so400m", 384, 729),
        ("convnext-l", 320, 100),
        ("convnext-l", 512, 256),
        ("convnext-xxl", 256, 64),
        ("convnext-xxl", 512, 256),
    ],
)
def test_token_counts_come_from_real_output_shapes(name, resolution, tokens):
    out = _meta_tokens(name, resolution)
    assert out.shape[1] == tokens
    assert encoder_tokens(name, resolution) == tokens
    assert out.shape[2] == encoder_out_dim(name)


def test_real_forward_small_resolution_fastvit():
    enc = build_encoder("fastvit", 64)
    assert enc.reparameterized
    with torch.inference_mode():
        out = enc.tokens(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, encoder_tokens("fastvit", 64), encoder_out_dim("fastvit"))
    assert torch.isfinite(out).all()


def test_aliases_and_suggestions():
    assert get_spec("FastViTHD").name == "fastvithd"
    assert get_spec("mci2").name == "fastvit"
    assert get_spec("clip-vit-l-14").name == "vit-l-14"
    assert get_spec("convnext-large").name == "convnext-l"
    with pytest.raises(UserError, match="did you mean 'convnext-xxl'"):
        get_spec("convnext-xxxl")
    names = [s.name for s in list_encoders()][:6]
    assert names == [
        "fastvithd",
        "fastvit",
        "vit-l-14",
        "siglip-so400m",
        "convnext-l",
        "convnext-xxl",
    ]


@pytest.mark.parametrize(
    "name,resolution,tiling,match",
    [
        ("fastvithd", 1000, "none", "multiple of its stride 64"),
        ("vit-l-14", 337, "none", "multiple of its stride 14"),
        ("fastvithd", 32, "none", "at least 64"),
        ("convnext-xxl", 65536, "none", "maximum"),
        ("fastvithd", 2049, "2x2+overview", "divisible by 2"),
        ("fastvithd", 0, "none", "positive integer"),
    ],
)
def test_validate_resolution_rejects(name, resolution, tiling, match):
    with pytest.raises(UserError, match=match):
        validate_resolution(name, resolution, tiling)


def test_validate_resolution_memory_estimate_and_accepts():
    with pytest.raises(UserError, match="GiB of activations"):
        validate_resolution("siglip-so400m", 1932, memory_limit_bytes=8 * 2**30)
    assert (
        validate_resolution("siglip-so400m", 384) == 384
    )  # floors 384/14 like SigLIP's valid conv
    assert validate_resolution("fastvithd", 2048, "2x2+overview") == 1024


def test_validation_happens_before_building():
    from harness.backends.torch.encoder import measure_encoder

    # A resolution XXL cannot take must fail at once, not after building 846M parameters.
    with pytest.raises(UserError, match="stride 32"):
        measure_encoder("convnext-xxl", 1000)


def test_custom_encoder_end_to_end_from_yaml():
    from harness.backends.torch.encoder import measure_encoder

    spec = register_custom_encoder(EXAMPLE)
    assert spec.name == "my-tiny-convnet" and spec.family == "custom"
    assert (spec.stride, spec.out_dim) == (16, 256)
    assert get_spec("tiny-convnet") is get_spec("my-tiny-convnet")
    assert count_params(spec.name) == spec.probed_params > 0
    # the cheap token rule agrees with a real forward pass at a resolution not probed
    enc = build_encoder(spec.name, 96)
    with torch.inference_mode():
        assert enc.tokens(torch.rand(1, 3, 96, 96)).shape[1] == encoder_tokens(spec.name, 96) == 36
    res = measure_encoder(spec.name, 128, "2x2+overview", protocol="quick")
    assert res.tokens == encoder_tokens(spec.name, 128, "2x2+overview") == 5 * 16
    assert res.out_dim == 256 and res.params_m == pytest.approx(spec.probed_params / 1e6)
    assert len(res.measurement.samples_ms) >= 3 and res.measurement.stats.median_ms > 0
    assert (
        res.extra["gflops"] > 0 and res.extra["images"] == 5 and res.extra["channels_last"] is False
    )


def test_custom_encoder_from_transformers_config_with_cls_token():
    spec = register_custom_encoder(
        {
            "name": "tiny-clip-test",
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
    assert (spec.stride, spec.extra_tokens, spec.out_dim) == (14, 1, 32)
    enc = build_encoder(spec.name, 70)
    with torch.inference_mode():
        assert enc.tokens(torch.rand(1, 3, 70, 70)).shape[1] == encoder_tokens(spec.name, 70) == 26


def test_custom_encoder_bad_config():
    with pytest.raises(UserError, match="_target_"):
        register_custom_encoder({"name": "x", "model": {"width": 3}})
    with pytest.raises(UserError, match="cannot import"):
        register_custom_encoder({"name": "x", "model": {"_target_": "no_such_module_xyz.build"}})
    with pytest.raises(UserError, match="not found"):
        register_custom_encoder("/nonexistent/encoder.yaml")
    # a built-in's name or alias would mix the built-in's costs with the custom model's tokens
    target = {"_target_": "my_encoder.build_tiny_encoder"}
    with pytest.raises(UserError, match="taken by the built-in 'fastvithd'"):
        register_custom_encoder({"name": "FastViTHD", "model": target})
    with pytest.raises(UserError, match="taken by the built-in"):
        register_custom_encoder({"name": "mine", "aliases": ["fastvithd"], "model": target})
    assert get_spec("fastvithd").family != "custom"


def test_measure_encoder_tiling_batched_and_sequential_and_dtypes():
    from harness.backends.torch.encoder import measure_encoder

    register_custom_encoder(EXAMPLE)
    seq = measure_encoder(
        "my-tiny-convnet", 128, "1x2", protocol="quick", batch_tiles=False, flops=False
    )
    assert seq.tokens == 2 * 16 and seq.extra["batch_tiles"] is False
    bf16 = measure_encoder("my-tiny-convnet", 64, protocol="quick", dtype="bfloat16", flops=False)
    assert bf16.extra["dtype"] == "bfloat16" and bf16.tokens == 16
    with pytest.raises(UserError, match="dtype"):
        measure_encoder("my-tiny-convnet", 64, dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="cuda"):
            measure_encoder("my-tiny-convnet", 64, device="cuda")


def test_weights_loading_roundtrip_and_mismatch(tmp_path):
    from safetensors.torch import save_file

    spec = register_custom_encoder(EXAMPLE)
    src = build_encoder(spec.name, 64, seed=1, reparameterize=False)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.module.state_dict().items()}, str(path))
    loaded = build_encoder(spec.name, 64, seed=2, weights=str(path), reparameterize=False)
    for k, v in src.module.state_dict().items():
        assert torch.equal(v, loaded.module.state_dict()[k])
    bad = tmp_path / "bad.pt"
    torch.save({"proj.weight": torch.zeros(1), "junk": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="unexpected junk"):
        build_encoder(spec.name, 64, weights=str(bad))


def test_custom_encoder_buffers_keep_their_values():
    """Parameters are built on meta and filled; buffers (constants, index tables, also
    non-persistent ones) keep what the module computed, never uninitialised memory."""
    from harness.encoders.custom import register_custom_encoder
    from harness.encoders.zoo import build_encoder

    spec = register_custom_encoder(
        {
            "name": "buffered-conv",
            "probe_resolution": 32,
            "import_path": str(Path(__file__).parent / "helpers"),
            "model": {"_target_": "runtime_models.build_buffered_conv"},
        }
    )
    enc = build_encoder(spec.name, 32, seed=0)
    bufs = dict(enc.module.named_buffers())
    eye = next(v for k, v in bufs.items() if k.endswith("eye"))
    order = next(v for k, v in bufs.items() if k.endswith("order"))
    scale = next(v for k, v in bufs.items() if k.endswith("scale"))
    assert torch.equal(eye, torch.eye(8))
    assert torch.equal(order, torch.arange(8).flip(0))
    assert torch.equal(scale, torch.full((8,), 0.5))
    # the parameters were filled (well-conditioned, not zeros or garbage)
    w = next(p for n, p in enc.module.named_parameters() if n.endswith("conv.weight"))
    assert torch.isfinite(w).all() and 0.01 < float(w.std()) < 1.0
