"""MLX prefill runner (mlx-lm) on tiny configs; runs on Linux with mlx[cpu]."""

from __future__ import annotations

import pytest

from harness.errors import UserError
from harness.llms import tiny_spec
from harness.protocol import get_protocol

pytestmark = pytest.mark.mlx
mx = pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")

from harness.backends.mlx.prefill import (  # noqa: E402
    build_mlx_llm,
    measure_prefill_mlx,
    prefill_step_fn,
    quantized_dtype,
)

PROTO = get_protocol("quick", threads=1)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_mlx_prefill_measures(arch):
    r = measure_prefill_mlx(
        tiny_spec(arch=arch, tied=arch == "qwen2"), 20, 6, encoder_dim=32, protocol=PROTO
    )
    assert (r.backend, r.dtype, r.tokens, r.prompt_tokens) == ("mlx", "float16", 20, 6)
    assert r.measurement.stats.n >= 3 and r.prefill_ms > 0 and r.projector_ms > 0
    assert (
        r.extra["prefill_step_size"] == 2048
        and r.extra["input_scale"] == "projected-encoder-features"
    )
    assert not r.estimated and r.total_layers == 2


def _run_step(spec, dtype, step_size, n_visual=21, n_prompt=5):
    built = build_mlx_llm(spec, dtype=dtype, seed=1)
    mx.random.seed(7)
    visual = (mx.random.normal((1, n_visual, spec.hidden)) * 0.5).astype(
        mx.float32 if dtype == "float32" else mx.float16
    )
    ids = mx.arange(n_prompt).astype(mx.int32)[None]
    step, sync, out = prefill_step_fn(built.model, visual, ids, step_size)
    step()
    sync()
    return out


def test_chunked_prefill_fills_cache_and_matches_one_shot():
    spec = tiny_spec()
    one = _run_step(spec, "float32", 4096)
    chunked = _run_step(spec, "float32", 8)  # 26 tokens in chunks of 8, 8, 8, 1 + the last one
    assert one["logits"].shape == (1, spec.vocab)
    assert all(c.offset == 26 for c in chunked["cache"]) and all(
        c.offset == 26 for c in one["cache"]
    )
    assert mx.allclose(one["logits"], chunked["logits"], atol=1e-4, rtol=1e-4).item()


@pytest.mark.parametrize(
    "dtype, bits", [("bfloat16", None), ("float32", None), ("q4", 4), ("q8", 8)]
)
def test_mlx_dtypes_and_quantization(dtype, bits):
    r = measure_prefill_mlx(
        tiny_spec(), 12, 4, encoder_dim=32, dtype=dtype, protocol=PROTO, prefill_step_size=8
    )
    assert r.dtype == dtype and r.extra["quant_bits"] == bits and r.prefill_ms > 0
    if bits:
        built = build_mlx_llm(tiny_spec(), dtype=dtype)
        import mlx.nn as nn

        assert isinstance(built.model.model.layers[0].mlp.up_proj, nn.QuantizedLinear)


def test_quantize_bits_fold_into_the_dtype():
    r = measure_prefill_mlx(
        tiny_spec(), 10, 2, encoder_dim=32, dtype=quantized_dtype("float16", 8), protocol=PROTO
    )
    assert r.backend == "mlx" and r.dtype == "q8"
    assert quantized_dtype("float16", None) == "float16"
    with pytest.raises(UserError, match="4 or 8"):
        quantized_dtype("float16", 3)


def test_mlx_layer_sampling():
    r = measure_prefill_mlx(
        tiny_spec(arch="llama", layers=4), 16, 4, encoder_dim=32, protocol=PROTO, sample_layers=2
    )
    assert r.estimated and r.sampled_layers == 2 and r.total_layers == 4
    assert r.extra["base_ms"] > 0 and r.extra["k_layers_ms"] > 0


def test_mlx_bad_input():
    with pytest.raises(UserError, match="MLX dtype"):
        measure_prefill_mlx(tiny_spec(), 8, dtype="int2", protocol=PROTO)
    with pytest.raises(UserError, match="prefill_step_size"):
        measure_prefill_mlx(tiny_spec(), 8, prefill_step_size=0, protocol=PROTO)
    with pytest.raises(UserError, match="context length"):
        measure_prefill_mlx(tiny_spec(max_positions=32), 30, 8, protocol=PROTO)
