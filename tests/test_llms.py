"""LLM zoo, model building, memory checks and the projector."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from harness.backends.torch.prefill import measure_projector
from harness.errors import UserError
from harness.llms import LLMS, get_llm_spec, list_llms, tiny_spec
from harness.llms.build import (
    build_torch_llm,
    check_memory,
    estimate_memory,
    forward_is_finite,
    hf_config,
    resolve_dtype,
)
from harness.llms.projector import Projector, build_projector, encoder_features
from harness.llms.zoo import spec_from_config_dict
from harness.protocol import get_protocol

# One thread: on a shared 2-core machine, two OpenMP threads wait on each other for whole
# scheduler slices and tiny ops take 100x longer.
PROTO = get_protocol("quick", threads=1)
REPO = Path(__file__).resolve().parents[1]

KNOWN_SIZES = {  # parameters from the model cards (tied embeddings counted once)
    "qwen2-0.5b": 494e6,
    "qwen2-1.5b": 1.54e9,
    "qwen2-7b": 7.6e9,
    "vicuna-7b": 6.74e9,
}


def test_zoo_names_and_aliases():
    assert {"qwen2-0.5b", "qwen2-1.5b", "qwen2-7b", "vicuna-7b"} <= set(list_llms())
    assert {"qwen2.5-3b", "qwen3-0.6b", "smollm2-135m", "gemma3-4b-text"} <= set(list_llms())
    assert get_llm_spec("Qwen2-0.5B").name == "qwen2-0.5b"
    assert get_llm_spec("qwen2-0.5b-instruct").name == "qwen2-0.5b"
    assert get_llm_spec("vicuna").name == "vicuna-7b"
    assert get_llm_spec("lmsys/vicuna-7b-v1.5").arch == "llama"


def test_unknown_llm_suggests_nearest():
    with pytest.raises(UserError, match="did you mean 'qwen2-0.5b'"):
        get_llm_spec("qwen2-05b")
    with pytest.raises(UserError, match="neither a zoo name"):
        get_llm_spec("no/such/model")


def test_reference_shapes():
    q = get_llm_spec("qwen2-0.5b")
    assert (q.hidden, q.layers, q.heads, q.kv_heads, q.intermediate, q.vocab, q.tied) == (
        896,
        24,
        14,
        2,
        4864,
        151936,
        True,
    )
    v = get_llm_spec("vicuna-7b")
    assert (v.hidden, v.layers, v.heads, v.kv_heads, v.intermediate, v.vocab, v.tied) == (
        4096,
        32,
        32,
        32,
        11008,
        32000,
        False,
    )


@pytest.mark.parametrize("name", sorted(KNOWN_SIZES))
def test_param_counts_match_model_cards_and_meta_build(name):
    spec = get_llm_spec(name)
    assert spec.params_b * 1e9 == pytest.approx(KNOWN_SIZES[name], rel=0.01)
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    cls = Qwen2ForCausalLM if spec.arch == "qwen2" else LlamaForCausalLM
    with torch.device("meta"):
        model = cls(hf_config(spec))
    # parameters() counts a tied weight once, like the model cards.
    assert sum(p.numel() for p in model.parameters()) == spec.n_params


def test_config_file_directory_and_mlx_dir(tmp_path):
    cfg = {
        "model_type": "qwen2",
        "hidden_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 256,
        "vocab_size": 512,
        "tie_word_embeddings": True,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
    }
    f = tmp_path / "config.json"
    f.write_text(json.dumps(cfg))
    s_file, s_dir = get_llm_spec(str(f)), get_llm_spec(tmp_path)
    assert s_file.layers == s_dir.layers == 3 and s_dir.max_positions == 2048 and s_dir.tied
    mlx_dir = tmp_path / "mlx-model"
    mlx_dir.mkdir()
    (mlx_dir / "config.json").write_text(
        json.dumps({**cfg, "quantization": {"group_size": 64, "bits": 4}})
    )
    s_mlx = get_llm_spec(mlx_dir)
    assert s_mlx.name == "mlx-model" and s_mlx.quant_bits == 4 and s_mlx.quant_group_size == 64


@pytest.mark.parametrize(
    "content, match",
    [
        ("not json at all", "not a JSON model config"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"architectures": ["Foo"]}), "missing model_type"),
        (
            json.dumps(
                {
                    "model_type": "bert",
                    "hidden_size": 8,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 1,
                    "intermediate_size": 8,
                    "vocab_size": 8,
                }
            ),
            "not supported",
        ),
    ],
)
def test_bad_config_paths(tmp_path, content, match):
    f = tmp_path / "config.json"
    f.write_text(content)
    with pytest.raises(UserError, match=match):
        get_llm_spec(str(f))


def test_directory_without_config(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        get_llm_spec(tmp_path)


def test_spec_validation():
    with pytest.raises(UserError, match="must divide"):
        spec_from_config_dict(
            {
                "model_type": "llama",
                "hidden_size": 10,
                "num_hidden_layers": 1,
                "num_attention_heads": 3,
                "intermediate_size": 8,
                "vocab_size": 8,
            },
            name="x",
        )


def test_sweep_llm_yaml_matches_zoo():
    for name in list_llms():
        data = yaml.safe_load((REPO / "sweeps" / "llm" / f"{name}.yaml").read_text())
        spec = LLMS.get(name)
        assert data["name"] == name
        for field in (
            "arch",
            "hidden",
            "layers",
            "heads",
            "kv_heads",
            "intermediate",
            "vocab",
            "tied",
            "max_positions",
        ):
            assert data[field] == getattr(spec, field), (name, field)
        assert (
            data.get("attn_head_dim") == spec.attn_head_dim
            and data.get("sliding_window") == spec.sliding_window
        )


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_build_is_filled_tied_and_finite(arch):
    spec = tiny_spec(arch=arch, tied=(arch == "qwen2"))
    built = build_torch_llm(spec, seed=3)
    m = built.model
    assert built.layers == 2 and built.weights == "random" and not m.training
    for name, p in m.named_parameters():
        assert torch.isfinite(p).all(), name
        nonzero = p[p != 0].abs()
        assert nonzero.numel() == 0 or nonzero.min() >= torch.finfo(p.dtype).tiny, (
            f"denormal in {name}"
        )
        assert not p.requires_grad
    if spec.tied:
        assert m.lm_head.weight is m.get_input_embeddings().weight
    else:
        assert m.lm_head.weight is not m.get_input_embeddings().weight
    # Variance-preserving fill: std = 1/sqrt(fan_in); embeddings at table scale.
    w = m.model.layers[0].mlp.down_proj.weight
    assert w.std().item() == pytest.approx(1 / math.sqrt(spec.intermediate), rel=0.1)
    assert m.get_input_embeddings().weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert m.model.layers[1].input_layernorm.weight.eq(1).all()
    # inv_freq is a non-persistent buffer that to_empty leaves uninitialised.
    theta, dim = spec.rope_theta, spec.head_dim
    expected = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    torch.testing.assert_close(m.model.rotary_emb.inv_freq, expected)
    assert m.config._attn_implementation == "sdpa"
    assert forward_is_finite(m)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_build_low_precision(dtype):
    built = build_torch_llm(tiny_spec(), dtype=dtype)
    assert built.model.model.layers[0].self_attn.q_proj.weight.dtype == getattr(torch, dtype)
    assert built.model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert forward_is_finite(built.model)


def test_build_with_fewer_layers_and_seeds_differ():
    a = build_torch_llm(tiny_spec(layers=4), layers=1, seed=0).model
    b = build_torch_llm(tiny_spec(layers=4), layers=1, seed=1).model
    assert len(a.model.layers) == 1
    assert not torch.equal(
        a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight
    )


def test_real_weights_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    src = build_torch_llm(tiny_spec(), seed=5).model
    save_file(
        {k: v.contiguous() for k, v in src.state_dict().items() if k != "lm_head.weight"},
        str(tmp_path / "model.safetensors"),
    )
    built = build_torch_llm(tiny_spec(), seed=9, weights_dir=tmp_path)
    assert built.weights == str(tmp_path)
    torch.testing.assert_close(
        built.model.model.layers[1].mlp.gate_proj.weight, src.model.layers[1].mlp.gate_proj.weight
    )
    with pytest.raises(UserError, match="safetensors"):
        build_torch_llm(tiny_spec(), weights_dir=tmp_path / "missing")


def test_dtype_names():
    assert resolve_dtype("bf16") is torch.bfloat16
    with pytest.raises(UserError, match="unknown dtype"):
        resolve_dtype("float8")


def test_memory_estimate_and_refusal():
    spec = get_llm_spec("qwen2-7b")
    est = estimate_memory(spec, 1024, "float32")
    assert est.params_bytes == spec.n_params * 4
    assert est.kv_bytes == 2 * 28 * 4 * 128 * 1024 * 4
    with pytest.raises(UserError) as e:
        check_memory(spec, 1024, "float32", available=24 * 2**30)
    msg = str(e.value)
    assert (
        "qwen2-7b" in msg
        and "GiB" in msg
        and "dtype=bfloat16" in msg
        and "sample_layers=" in msg
        and "\n" not in msg
    )
    assert check_memory(spec, 1024, "bfloat16", available=24 * 2**30).total_gib < 24
    assert check_memory(spec, 1024, "float32", layers=4, available=24 * 2**30).total_gib < 10


def test_projector_shapes_and_scale():
    proj = build_projector(96, 64)
    assert isinstance(proj, Projector) and isinstance(proj.act, torch.nn.GELU)
    feats = encoder_features(10, 96)
    with torch.inference_mode():
        y = proj(feats)
    assert y.shape == (1, 10, 64) and torch.isfinite(y).all()
    assert 0.1 < y.pow(2).mean().sqrt().item() < 3.0  # O(1), far from the denormal range


def test_measure_projector_alone():
    m = measure_projector(96, 64, 12, protocol=PROTO)
    assert m.stats.n >= 3 and m.stats.median_ms > 0
    with pytest.raises(UserError):
        measure_projector(0, 64, 12)
    from harness.backends import get_backend

    with pytest.raises(UserError, match="did you mean 'torch'"):
        get_backend("torchh")


@pytest.mark.slow
def test_qwen2_0_5b_build_is_cheap_and_finite():
    import time

    from transformers import Qwen2ForCausalLM

    spec = get_llm_spec("qwen2-0.5b")
    built = build_torch_llm(spec)
    assert forward_is_finite(built.model)
    ours = built.build_s
    del built
    t0 = time.perf_counter()
    Qwen2ForCausalLM(hf_config(spec))
    plain = time.perf_counter() - t0
    assert ours < plain
