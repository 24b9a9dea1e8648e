"""pytest-benchmark suite for the FastViT encoders (reparameterized, channels-last, 2 threads).

Run: ``pytest tests/benchmarks/test_bench_fastvit.py --benchmark-only`` (add ``-m slow`` for the
512 and 1024 FastViTHD points). Full-resolution tables: ``scripts/bench_fastvit.py``.
"""

from __future__ import annotations

import pytest
import torch

from harness.encoders import fastvit as fv

pytestmark = pytest.mark.bench


def _step(build, resolution: int, threads: int = 2):
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    fmt = fv.FastViT.preferred_memory_format
    model = build(reparameterized=True).to(memory_format=fmt)
    x = torch.rand(1, 3, resolution, resolution).contiguous(memory_format=fmt)

    @torch.inference_mode()
    def step() -> torch.Tensor:
        return model(x)

    return model, step


@pytest.mark.parametrize("resolution", [128, 256])
def test_bench_fastvithd(benchmark, resolution: int) -> None:
    model, step = _step(fv.build_fastvithd, resolution)
    out = benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    assert out.shape == (1, 3072, resolution // 64, resolution // 64)
    assert torch.isfinite(out).all()


def test_bench_fastvit_mci2_256(benchmark) -> None:
    model, step = _step(fv.build_fastvit_mci2, 256)
    out = benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    assert out.shape == (1, 1280, 8, 8)


@pytest.mark.slow
@pytest.mark.parametrize("resolution", [512, 1024])
def test_bench_fastvithd_large(benchmark, resolution: int) -> None:
    model, step = _step(fv.build_fastvithd, resolution)
    out = benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
    assert fv.images_to_tokens(out).shape == (1, (resolution // 64) ** 2, 3072)
