"""The ``fake`` backend: canned latencies, for testing sweep -> store -> join -> report without torch.

The laws are in :mod:`.latencies`; this module wraps them as runners.

Latencies follow simple, documented laws anchored on REFERENCE.md's CPU medians (FastViTHD
at 256 = 355 ms, ...): encoder time grows with pixels x images, prefill with tokens x LLM
size. Samples carry a small deterministic jitter so statistics are non-degenerate. Nothing
sleeps: a fake measurement is instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

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
from harness.protocol import Protocol
from harness.tasks import EncoderTask, PrefillTask, ProjectorTask

if TYPE_CHECKING:
    from harness.encoders.zoo import EncoderSpec
    from harness.llms.zoo import LLMSpec

from harness.backends.fake.latencies import (  # noqa: F401 (the canned laws, re-exported)
    ENCODER_MS_AT_256,
    PREFILL_MS_PER_TOKEN_PER_B,
    PREFILL_OVERHEAD_MS,
    encoder_ms,
    fake_encoder,
    fake_prefill,
    fake_projector,
    prefill_ms,
)

# ------------------------------------------------------------------------------ backend


@dataclass
class FakeConfig(RunnerConfig):
    PRECISIONS = FLOAT_PRECISIONS


class FakeEncoder(EncoderRunner):
    """Nothing is built or run: the latency comes from :func:`encoder_ms`."""

    def build(
        self, spec: EncoderSpec, resolution: int, tiling: str, weights: str | None = None
    ) -> Built:
        from harness.encoders.tiling import parse_tiling

        t = parse_tiling(tiling)
        tile = t.tile_resolution(resolution)
        return Built(
            step=lambda: None,
            tokens=t.images * spec.tokens_at(tile),
            out_dim=spec.out_dim,
            extra=EncoderExtra(tile_resolution=tile, images=t.images, settings={"fake": True}),
        )

    def measure(self, task: EncoderTask, protocol: Protocol) -> Outcome:
        from harness.encoders.tiling import parse_tiling

        t = parse_tiling(task.tiling)
        tile = t.tile_resolution(task.resolution)
        m = fake_encoder(task.name, tile, t.images, protocol, self.context.round)
        extra = EncoderExtra(
            tile_resolution=tile, images=t.images, out_dim=task.out_dim, settings={"fake": True}
        )
        return Outcome(m, extra, build_s=0.0)


class FakeLLM(LLMRunner):
    SUPPORTS_LAYER_SAMPLING = False

    def prefill(
        self,
        task: PrefillTask,
        spec: LLMSpec,
        in_dim: int,
        protocol: Protocol,
        sample_layers: int | None = None,
    ) -> Outcome:
        rnd = self.context.round
        m = fake_prefill(task.llm, spec.params_b, task.tokens + task.prompt_tokens, protocol, rnd)
        proj = fake_projector(task.llm, in_dim, spec.hidden, task.tokens, protocol, rnd)
        side = Outcome(proj, ProjectorExtra(in_dim=in_dim, settings={"fake": True}))
        extra = PrefillExtra(params_b=spec.params_b, encoder_dim=in_dim, settings={"fake": True})
        return Outcome(m, extra, build_s=0.0, projector=side)

    def projector(self, task: ProjectorTask, spec: LLMSpec, protocol: Protocol) -> Outcome:
        m = fake_projector(
            task.llm, task.in_dim, spec.hidden, task.tokens, protocol, self.context.round
        )
        return Outcome(m, ProjectorExtra(in_dim=task.in_dim, settings={"fake": True}), build_s=0.0)


BACKEND = Backend(
    "fake",
    FakeConfig,
    encoder=FakeEncoder,
    llm=FakeLLM,
    description="canned latencies (no model is built); for tests and demos",
    timed_here=False,
)
