"""PyTorch eager backend (encoder and LLM side): CPU, CUDA or MPS, float32/float16/bfloat16.

The runners' code lives in :mod:`.encoder` (vision encoders) and :mod:`.prefill` (prefill,
projector, layer sampling); this module only describes the backend, so importing it does
not import torch.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.backends.base import (
    Backend,
    Built,
    EncoderExtra,
    EncoderRunner,
    LLMRunner,
    Outcome,
    ProjectorExtra,
    RunnerConfig,
    encoder_outcome,
    prefill_outcome,
)
from harness.backends.parity import ParityResult
from harness.backends.portable import parity_of
from harness.dtypes import FLOAT_PRECISIONS, canonical_precision
from harness.errors import UserError, suggest
from harness.protocol import Protocol
from harness.tasks import EncoderTask, PrefillTask, ProjectorTask

if TYPE_CHECKING:
    from harness.encoders.zoo import EncoderSpec
    from harness.llms.zoo import LLMSpec

DEVICE_TYPES = ("cpu", "cuda", "mps")


def needs_parity(precision: str) -> bool:
    """Eager PyTorch below float32 is checked against float32 eager (``lowprec``)."""
    return canonical_precision(precision) != "float32"


@dataclass
class TorchConfig(RunnerConfig):
    """``channels_last``: None = where it helps (conv families); ``compile``: torch.compile."""

    PRECISIONS = FLOAT_PRECISIONS
    REQUIRES = ("torch",)
    INSTALL_HINT = "pip install -c constraints.txt torch"

    channels_last: bool | None = None
    compile: bool = False

    def validate(self) -> None:
        super().validate()
        if self.device.split(":")[0] not in DEVICE_TYPES:
            raise UserError(suggest(self.device, list(DEVICE_TYPES), "torch device"))


class TorchEncoder(EncoderRunner):
    config: TorchConfig

    def build(
        self, spec: EncoderSpec, resolution: int, tiling: str, weights: str | None = None
    ) -> Built:
        from harness.backends.torch.encoder import build_encoder_step

        b = build_encoder_step(
            spec,
            resolution,
            tiling,
            device=self.config.device,
            dtype=self.config.precision,
            channels_last=self.config.channels_last,
            compile=self.config.compile,
            batch_tiles=self.context.batch_tiles,
            weights=weights,
            seed=self.context.seed,
        )

        def context(protocol: Protocol) -> AbstractContextManager[Any]:
            import torch

            from harness.denormal import flush_denormal

            stack = ExitStack()
            stack.enter_context(torch.inference_mode())
            stack.enter_context(flush_denormal(protocol.flush_denormal, b.device.type))
            return stack

        extra = EncoderExtra(
            params_m=b.encoder.params() / 1e6,
            tile_resolution=b.tile,
            images=b.tiling.images,
            settings={
                "channels_last": b.channels_last,
                "compile": b.compile,
                "batch_tiles": b.batch_tiles,
                "device": str(b.device),
            },
        )
        return Built(
            step=b.step,
            tokens=b.tiling.images * b.spec.tokens_at(b.tile),
            out_dim=b.spec.out_dim,
            synchronize=b.synchronize,
            memory=b.probe,
            context=context,
            build_s=b.build_s,
            extra=extra,
        )

    def measure(self, task: EncoderTask, protocol: Protocol) -> Outcome:
        # The function API adds GFLOPs and the achieved rate to what build() records.
        from harness.backends.torch.encoder import measure_encoder

        r = measure_encoder(
            task.name,
            task.resolution,
            task.tiling,
            device=self.config.device,
            dtype=self.config.precision,
            protocol=protocol,
            channels_last=self.config.channels_last,
            compile=self.config.compile,
            batch_tiles=self.context.batch_tiles,
            weights=task.weights,
            seed=self.context.seed,
        )
        out = encoder_outcome(r, task)
        if needs_parity(self.config.precision):
            from harness.backends.torch.lowprec import encoder_parity

            _attach(
                out,
                encoder_parity(
                    task.name,
                    task.resolution,
                    task.tiling,
                    self.config.precision,
                    self.config.device,
                    seed=self.context.seed,
                    weights=task.weights,
                ),
            )
        return out


class TorchLLM(LLMRunner):
    config: TorchConfig

    def fits(self, spec: LLMSpec, tokens: int) -> bool:
        from harness.llms.build import check_memory

        try:
            check_memory(
                spec, tokens=tokens, dtype=self.config.precision, device=self.config.device
            )
        except UserError:
            return False
        return True

    def prefill(
        self,
        task: PrefillTask,
        spec: LLMSpec,
        in_dim: int,
        protocol: Protocol,
        sample_layers: int | None = None,
    ) -> Outcome:
        from harness.backends.torch.prefill import measure_prefill

        r = measure_prefill(
            spec,
            task.tokens,
            task.prompt_tokens,
            encoder_dim=in_dim,
            device=self.config.device,
            dtype=self.config.precision,
            protocol=protocol,
            sample_layers=sample_layers,
            seed=self.context.seed,
        )
        out = prefill_outcome(r, in_dim, spec.hidden)
        if needs_parity(self.config.precision):
            from harness.backends.torch.lowprec import prefill_parity

            pre, proj = prefill_parity(
                spec,
                task.tokens,
                task.prompt_tokens,
                self.config.precision,
                self.config.device,
                encoder_dim=in_dim,
                sample_layers=sample_layers,
                seed=self.context.seed,
            )
            _attach(out, pre)
            if out.projector is not None:
                _attach(out.projector, proj)
        return out

    def projector(self, task: ProjectorTask, spec: LLMSpec, protocol: Protocol) -> Outcome:
        from harness.backends.torch.prefill import time_projector_alone

        m = time_projector_alone(
            task.in_dim,
            spec.hidden,
            task.tokens,
            device=self.config.device,
            dtype=self.config.precision,
            protocol=protocol,
            seed=self.context.seed,
        )
        out = Outcome(m, ProjectorExtra(in_dim=task.in_dim, out_dim=spec.hidden), build_s=0.0)
        if needs_parity(self.config.precision):
            from harness.backends.torch.lowprec import projector_parity

            _attach(
                out,
                projector_parity(
                    task.in_dim,
                    spec.hidden,
                    task.tokens,
                    self.config.precision,
                    self.config.device,
                    seed=self.context.seed,
                ),
            )
        return out


def _attach(out: Outcome, result: ParityResult) -> None:
    """Record a passed parity check with the outcome (a failed one raised ParityError)."""
    out.extra.parity = parity_of(result)
    out.extra.settings = {**out.extra.settings, **result.to_dict()}


BACKEND = Backend(
    "torch",
    TorchConfig,
    encoder=TorchEncoder,
    llm=TorchLLM,
    description="PyTorch eager (transformers for LLMs) on cpu, cuda or mps",
)
