"""A runner with canned latencies, for testing sweep -> store -> join -> report without torch.

Latencies follow simple, documented laws anchored on REFERENCE.md's CPU medians (FastViTHD
at 256 = 355 ms, ...): encoder time grows with pixels x images, prefill with tokens x LLM
size. Samples carry a small deterministic jitter so statistics are non-degenerate. Nothing
sleeps: a fake measurement is instant.
"""

from __future__ import annotations

import zlib

import numpy as np

from harness.protocol import Measurement, Protocol
from harness.stats import summarize

#: ms at 256x256 for one image (CPU, fp32, 2 threads; REFERENCE.md), else a default
ENCODER_MS_AT_256 = {
    "fastvithd": 355.0,
    "fastvit": 169.0,
    "vit-l-14": 1100.0,
    "siglip-so400m": 1400.0,
    "convnext-l": 470.0,
    "convnext-xxl": 1952.0,
}
#: ms per token per billion parameters (prefill), plus a fixed overhead
PREFILL_MS_PER_TOKEN_PER_B = 9.0
PREFILL_OVERHEAD_MS = 20.0


def _samples(median: float, n: int, seed_text: str) -> list[float]:
    rng = np.random.default_rng(zlib.crc32(seed_text.encode()))
    return [float(median * (1.0 + 0.01 * x)) for x in rng.standard_normal(n)]


def _measurement(median: float, protocol: Protocol, seed_text: str) -> Measurement:
    samples = _samples(median, max(protocol.min_runs, 5), seed_text)
    return Measurement(
        samples_ms=samples,
        stats=summarize(samples),
        protocol=protocol.name,
        threads=protocol.resolved_threads,
    )


def encoder_ms(name: str, tile_resolution: int, images: int) -> float:
    return ENCODER_MS_AT_256.get(name, 300.0) * (tile_resolution / 256) ** 2 * images


def prefill_ms(params_b: float, tokens: int) -> float:
    return PREFILL_OVERHEAD_MS + PREFILL_MS_PER_TOKEN_PER_B * params_b * tokens


def fake_encoder(
    name: str, tile_resolution: int, images: int, protocol: Protocol, round_: int = 0
) -> Measurement:
    return _measurement(
        encoder_ms(name, tile_resolution, images),
        protocol,
        f"enc/{name}/{tile_resolution}/{images}/{round_}",
    )


def fake_prefill(
    llm: str, params_b: float, tokens: int, protocol: Protocol, round_: int = 0
) -> Measurement:
    return _measurement(prefill_ms(params_b, tokens), protocol, f"pre/{llm}/{tokens}/{round_}")


def fake_projector(
    llm: str, in_dim: int, hidden: int, tokens: int, protocol: Protocol, round_: int = 0
) -> Measurement:
    # two matmuls at ~100 GFLOP/s
    flops = 2 * tokens * (in_dim * hidden + hidden * hidden)
    return _measurement(0.05 + flops / 1e8, protocol, f"proj/{llm}/{in_dim}/{tokens}/{round_}")
