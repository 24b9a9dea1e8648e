"""The ``fake`` backend: canned latencies, for testing sweep -> store -> join -> report without torch.

Latencies follow simple, documented laws anchored on REFERENCE.md's CPU medians (FastViTHD
at 256 = 355 ms, ...): encoder time grows with pixels x images, prefill with tokens x LLM
size. Samples carry a small deterministic jitter so statistics are non-degenerate. Nothing
sleeps: a fake measurement is instant.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.backends.base import (
    Backend,
    Built,
    EncoderExtra,
    EncoderRunner,
    LLMRunner,
    Outcome,
    PrefillExtra,
    ProjectorExtra,
    RunnerConfig,
)
from harness.dtypes import FLOAT_PRECISIONS
from harness.protocol import Measurement, Protocol
from harness.stats import summarize
from harness.tasks import EncoderTask, PrefillTask, ProjectorTask

if TYPE_CHECKING:
    from harness.encoders.zoo import EncoderSpec
    from harness.llms.zoo import LLMSpec

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
    return Measurement(samples_ms=samples, stats=summarize(samples), protocol=protocol.name, threads=protocol.resolved_threads)


def encoder_ms(name: str, tile_resolution: int, images: int) -> float:
    return ENCODER_MS_AT_256.get(name, 300.0) * (tile_resolution / 256) ** 2 * images


def prefill_ms(params_b: float, tokens: int) -> float:
    return PREFILL_OVERHEAD_MS + PREFILL_MS_PER_TOKEN_PER_B * params_b * tokens


def fake_encoder(name: str, tile_resolution: int, images: int, protocol: Protocol, round_: int = 0) -> Measurement:
    return _measurement(encoder_ms(name, tile_resolution, images), protocol, f"enc/{name}/{tile_resolution}/{images}/{round_}")


def fake_prefill(llm: str, params_b: float, tokens: int, protocol: Protocol, round_: int = 0) -> Measurement:
    return _measurement(prefill_ms(params_b, tokens), protocol, f"pre/{llm}/{tokens}/{round_}")


def fake_projector(llm: str, in_dim: int, hidden: int, tokens: int, protocol: Protocol, round_: int = 0) -> Measurement:
    # two matmuls at ~100 GFLOP/s
    flops = 2 * tokens * (in_dim * hidden + hidden * hidden)
    return _measurement(0.05 + flops / 1e8, protocol, f"proj/{llm}/{in_dim}/{tokens}/{round_}")


# ------------------------------------------------------------------------------ backend


@dataclass
class FakeConfig(RunnerConfig):
    PRECISIONS = FLOAT_PRECISIONS


class FakeEncoder(EncoderRunner):
    """Nothing is built or run: the latency comes from :func:`encoder_ms`."""

    def build(self, spec: EncoderSpec, resolution: int, tiling: str, weights: str | None = None) -> Built:
        from harness.encoders.tiling import parse_tiling

        t = parse_tiling(tiling)
        tile = t.tile_resolution(resolution)
        return Built(step=lambda: None, tokens=t.images * spec.tokens_at(tile), out_dim=spec.out_dim,
                     extra=EncoderExtra(tile_resolution=tile, images=t.images, settings={"fake": True}))

    def measure(self, task: EncoderTask, protocol: Protocol) -> Outcome:
        from harness.encoders.tiling import parse_tiling

        t = parse_tiling(task.tiling)
        tile = t.tile_resolution(task.resolution)
        m = fake_encoder(task.name, tile, t.images, protocol, self.context.round)
        extra = EncoderExtra(tile_resolution=tile, images=t.images, out_dim=task.out_dim, settings={"fake": True})
        return Outcome(m, extra, build_s=0.0)


class FakeLLM(LLMRunner):
    SUPPORTS_LAYER_SAMPLING = False

    def prefill(self, task: PrefillTask, spec: LLMSpec, in_dim: int, protocol: Protocol,
                sample_layers: int | None = None) -> Outcome:
        rnd = self.context.round
        m = fake_prefill(task.llm, spec.params_b, task.tokens + task.prompt_tokens, protocol, rnd)
        proj = fake_projector(task.llm, in_dim, spec.hidden, task.tokens, protocol, rnd)
        side = Outcome(proj, ProjectorExtra(in_dim=in_dim, settings={"fake": True}))
        extra = PrefillExtra(params_b=spec.params_b, encoder_dim=in_dim, settings={"fake": True})
        return Outcome(m, extra, build_s=0.0, projector=side)

    def projector(self, task: ProjectorTask, spec: LLMSpec, protocol: Protocol) -> Outcome:
        m = fake_projector(task.llm, task.in_dim, spec.hidden, task.tokens, protocol, self.context.round)
        return Outcome(m, ProjectorExtra(in_dim=task.in_dim, settings={"fake": True}), build_s=0.0)


BACKEND = Backend("fake", FakeConfig, encoder=FakeEncoder, llm=FakeLLM,
                  description="canned latencies (no model is built); for tests and demos")
