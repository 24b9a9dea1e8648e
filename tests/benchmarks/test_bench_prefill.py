"""pytest-benchmark suite for prefill (run: pytest tests/benchmarks/test_bench_prefill.py --benchmark-only).

The tiny decoder tracks per-call overhead of the prefill path (cache creation, embedding,
``logits_to_keep``); qwen2-0.5b at 64 visual + 16 prompt tokens tracks real compute.
"""

from __future__ import annotations

import pytest
import torch

from harness.backends.torch.prefill import prefill_callable, prepare_inputs
from harness.llms import get_llm_spec, tiny_spec
from harness.llms.build import build_torch_llm

pytestmark = pytest.mark.bench


def _step(spec, tokens, prompt_tokens=16, encoder_dim=3072):
    torch.set_flush_denormal(True)
    model = build_torch_llm(spec).model
    inputs = prepare_inputs(spec, tokens, prompt_tokens, encoder_dim=encoder_dim)
    step, out = prefill_callable(model, inputs.visual, inputs.prompt_ids)
    return step, out


def test_bench_prefill_tiny(benchmark):
    step, out = _step(tiny_spec(), 64, encoder_dim=64)
    benchmark(step)
    assert out["logits"].shape[1] == 1 and torch.isfinite(out["logits"]).all()


@pytest.mark.slow
def test_bench_prefill_qwen2_0_5b_64_tokens(benchmark):
    step, out = _step(get_llm_spec("qwen2-0.5b"), 64)
    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    assert out["cache"].get_seq_length() == 80 and torch.isfinite(out["logits"]).all()
