"""PyTorch prefill runner and layer sampling, on tiny random-weight decoders."""

from __future__ import annotations

import sys

import pytest
import torch

from harness.backends.torch.prefill import (
    analytic_prefill_flops,
    measure_prefill,
    prefill_callable,
    prepare_inputs,
    validate_sampling,
)
from harness.errors import UserError
from harness.llms import DEFAULT_PROMPT_TOKENS, PrefillResult, get_llm_spec, tiny_spec
from harness.llms.build import build_torch_llm
from harness.llms.sampling import estimated_measurement, extrapolate
from harness.protocol import get_protocol, measure

PROTO = get_protocol("quick", threads=1)


def test_prefill_measures_and_records():
    r = measure_prefill(tiny_spec(), 24, encoder_dim=48, protocol=PROTO)
    assert isinstance(r, PrefillResult)
    assert (r.llm, r.backend, r.device, r.dtype) == ("tiny-qwen2", "torch", "cpu", "float32")
    assert r.tokens == 24 and r.prompt_tokens == DEFAULT_PROMPT_TOKENS == 16
    assert r.measurement.stats.n >= 3 and r.prefill_ms > 0
    assert r.projector.stats.n >= 3 and r.projector_ms > 0  # measured on its own line
    assert r.build_s > 0 and not r.estimated and r.sampled_layers == r.total_layers == 2
    assert r.extra["input_scale"] == "projected-encoder-features" and r.extra["encoder_dim"] == 48
    assert r.extra["flush_denormal"] is True
    assert r.measurement.peak_mem_bytes and r.measurement.peak_mem_bytes > 0


def test_prefill_step_fills_cache_and_keeps_last_logits_only():
    spec = tiny_spec(arch="llama", tied=False)
    model = build_torch_llm(spec).model
    inputs = prepare_inputs(spec, 20, 7, encoder_dim=32)
    step, out = prefill_callable(model, inputs.visual, inputs.prompt_ids)
    step()
    assert out["logits"].shape == (1, 1, spec.vocab) and torch.isfinite(out["logits"]).all()
    assert out["cache"].get_seq_length() == 27
    first = out["cache"]
    step()  # a fresh cache every call: prefill always starts empty
    assert out["cache"] is not first and out["cache"].get_seq_length() == 27
    # The last-position logits equal those of a plain full forward over the same inputs.
    with torch.inference_mode():
        x = torch.cat([inputs.visual, model.get_input_embeddings()(inputs.prompt_ids)], dim=1)
        full = model(inputs_embeds=x, use_cache=False).logits[:, -1:]
    torch.testing.assert_close(out["logits"], full, rtol=1e-4, atol=1e-4)


def test_embedding_scale_inputs_are_recorded():
    r = measure_prefill(tiny_spec(), 8, 0, encoder_dim=16, protocol=PROTO, realistic_inputs=False)
    assert r.extra["input_scale"] == "embedding-scale" and r.prompt_tokens == 0
    assert r.extra["visual_embed_rms"] == pytest.approx(0.02, rel=0.3)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_prefill_low_precision(dtype):
    r = measure_prefill(tiny_spec(), 8, 4, encoder_dim=16, dtype=dtype, protocol=PROTO)
    assert r.dtype == dtype and r.prefill_ms > 0


@pytest.mark.parametrize(
    "tokens, prompt, match",
    [
        (0, 16, "visual token count"),
        (-5, 16, "visual token count"),
        (True, 16, "visual token count"),
        (8, -1, "prompt token count"),
        (4090, 16, "exceeds tiny-qwen2's context length of 4096"),
    ],
)
def test_bad_token_counts(tokens, prompt, match):
    with pytest.raises(UserError, match=match):
        measure_prefill(tiny_spec(), tokens, prompt, protocol=PROTO)


def test_bad_backend_device_dtype_and_sampling():
    from harness.backends import get_backend

    with pytest.raises(UserError, match="did you mean 'mlx'"):
        get_backend("mlxx")
    with pytest.raises(UserError, match="unknown dtype"):
        measure_prefill(tiny_spec(), 8, dtype="int3")
    with pytest.raises(UserError, match="sample_layers"):
        measure_prefill(tiny_spec(), 8, sample_layers=0)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            measure_prefill(tiny_spec(), 8, device="cuda")


def test_zoo_model_too_big_is_refused_before_building():
    # qwen2-7b in float32 needs ~30 GiB: refused unless the machine has that much free.
    import psutil

    if psutil.virtual_memory().available > 40 * 2**30:
        pytest.skip("machine has enough memory for a 7B fp32 model")
    with pytest.raises(UserError, match="sample_layers="):
        measure_prefill("qwen2-7b", 64, protocol=PROTO)


def test_mlx_missing_is_a_user_error(monkeypatch):
    # Simulate a machine without mlx: a None entry in sys.modules makes the import fail.
    monkeypatch.setitem(sys.modules, "mlx", None)
    monkeypatch.setitem(sys.modules, "mlx.core", None)
    with pytest.raises(UserError, match="backend 'mlx' needs mlx"):
        from harness.backends.mlx.prefill import measure_prefill_mlx

        measure_prefill_mlx(tiny_spec(), 8, protocol=PROTO)


def test_store_records():
    r = measure_prefill(tiny_spec(), 12, 3, encoder_dim=40, protocol=PROTO)
    pre, proj = r.store_records()
    assert (
        pre["kind"] == "prefill"
        and pre["name"] == "tiny-qwen2"
        and pre["tokens"] == 12
        and pre["prompt_tokens"] == 3
    )
    assert (
        pre["resolution"] == 0
        and pre["tiling"] == "none"
        and pre["extra"]["projector_ms"] == r.projector_ms
    )
    assert pre["extra"]["total_layers"] == 2 and pre["protocol"] == "quick"
    assert (
        proj["kind"] == "projector"
        and proj["extra"] == {"in_dim": 40, "out_dim": 64}
        and proj["measurement"] is r.projector
    )


def test_extrapolation_formula():
    assert extrapolate(2.0, 12.0, 4, 24) == pytest.approx(2.0 + 6 * 10.0)
    assert extrapolate(1.0, 5.0, 24, 24) == 5.0


def test_estimated_measurement_scales_samples():
    base = measure(lambda: None, PROTO)
    k_m = measure(lambda: sum(range(20000)), PROTO)
    est = estimated_measurement(base, k_m, 2, 8)
    b = base.stats.median_ms
    assert est.samples_ms == pytest.approx([b + 4 * (t - b) for t in k_m.samples_ms])
    assert est.peak_mem_bytes is None


def test_layer_sampled_prefill_is_estimated():
    spec = tiny_spec(layers=6)
    r = measure_prefill(spec, 16, 4, encoder_dim=32, protocol=PROTO, sample_layers=2)
    assert r.estimated and r.sampled_layers == 2 and r.total_layers == 6
    e = r.extra
    assert e["estimator"].startswith("t_base") and e["base_ms"] > 0
    assert r.prefill_ms == pytest.approx(
        extrapolate(e["base_ms"], e["k_layers_ms"], 2, 6), rel=0.25
    )
    assert r.store_records()[0]["estimated"] is True
    # k >= L measures the whole model.
    full = measure_prefill(spec, 16, 4, encoder_dim=32, protocol=PROTO, sample_layers=6)
    assert not full.estimated and full.sampled_layers == 6


def test_analytic_flops_match_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    spec = tiny_spec(hidden=128, heads=4, kv_heads=2, intermediate=256, vocab=512)
    model = build_torch_llm(spec).model
    inputs = prepare_inputs(spec, 40, 8, encoder_dim=32)
    step, _ = prefill_callable(model, inputs.visual, inputs.prompt_ids)
    with FlopCounterMode(display=False) as counter:
        step()
    # FlopCounterMode does not count the CPU flash-attention kernel: compare linear layers.
    assert counter.get_total_flops() == pytest.approx(
        analytic_prefill_flops(spec, 48, attention=False), rel=0.01
    )
    assert analytic_prefill_flops(spec, 48) > analytic_prefill_flops(spec, 48, attention=False)


@pytest.mark.slow
def test_layer_sampling_within_5_percent_on_qwen2_0_5b():
    check = validate_sampling(
        get_llm_spec("qwen2-0.5b"), 256, 4, protocol=get_protocol("quick", threads=1), rounds=2
    )
    assert abs(check.rel_error) < 0.05, check
