"""Measured machine peaks (never hard-coded): fp32 matmul GFLOP/s for 'achieved vs peak'."""

from __future__ import annotations

import functools

from harness.protocol import Protocol, measure


@functools.lru_cache(maxsize=8)
def matmul_peak_gflops(
    n: int = 2048, threads: int = 0, dtype: str = "float32", device: str = "cpu"
) -> float:
    """Median GFLOP/s of an ``n x n @ n x n`` matmul on this machine (cached per process)."""
    import torch

    a = torch.randn(n, n, dtype=getattr(torch, dtype), device=device)
    b = torch.randn(n, n, dtype=getattr(torch, dtype), device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    proto = Protocol(
        "peak",
        warmup_runs=2,
        warmup_min_s=0.2,
        min_runs=5,
        min_time_s=1.0,
        max_time_s=20.0,
        threads=threads,
    )
    with torch.inference_mode():
        m = measure(lambda: a @ b, proto, synchronize=sync)
    return 2.0 * n**3 / (m.stats.median_ms / 1e3) / 1e9
