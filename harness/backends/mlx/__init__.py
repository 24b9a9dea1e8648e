"""MLX backend (LLM side): mlx-lm prefill, the way the paper timed it, float or 4/8-bit.

Real numbers need Apple silicon; ``mlx[cpu]`` on Linux runs it for correctness. The runner's
code is :mod:`.prefill`; importing this module imports no mlx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.backends.base import (
    Backend,
    LLMRunner,
    Outcome,
    ProjectorExtra,
    RunnerConfig,
    prefill_outcome,
)
from harness.errors import UserError
from harness.protocol import Protocol
from harness.tasks import PrefillTask, ProjectorTask

if TYPE_CHECKING:
    from harness.llms.zoo import LLMSpec


@dataclass
class MLXConfig(RunnerConfig):
    """``mlx_quantize_bits`` (4 or 8) quantizes the float16 model; ``prefill_step_size`` as mlx-lm."""

    PRECISIONS = ("float16", "bfloat16", "float32", "q8", "q4", "int8")
    REQUIRES = ("mlx", "mlx_lm")
    INSTALL_HINT = "pip install 'vlm-pareto[mlx]' (real numbers need Apple silicon)"

    mlx_quantize_bits: int | None = None
    prefill_step_size: int = 2048

    def validate(self) -> None:
        super().validate()
        if self.mlx_quantize_bits is not None and self.mlx_quantize_bits not in (4, 8):
            raise UserError(f"MLX quantization bits must be 4 or 8, got {self.mlx_quantize_bits!r}")
        if isinstance(self.prefill_step_size, bool) or self.prefill_step_size < 1:
            raise UserError(
                f"prefill_step_size must be a positive integer, got {self.prefill_step_size!r}"
            )

    def mlx_dtype(self) -> str:
        """The MLX dtype name with the quantization folded in (``q4`` / ``q8``)."""
        if self.mlx_quantize_bits is not None:
            return f"q{self.mlx_quantize_bits}"
        return "q8" if self.precision == "int8" else self.precision

    def key_dtype(self) -> str:
        return self.mlx_dtype()


class MLXLLM(LLMRunner):
    config: MLXConfig

    def fits(self, spec: LLMSpec, tokens: int) -> bool:
        from harness.backends.mlx.prefill import check_memory_mlx

        try:
            check_memory_mlx(spec, tokens, self.config.mlx_dtype(), spec.layers)
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
        from harness.backends.mlx.prefill import measure_prefill_mlx

        r = measure_prefill_mlx(
            spec,
            task.tokens,
            task.prompt_tokens,
            encoder_dim=in_dim,
            dtype=self.config.mlx_dtype(),
            protocol=protocol,
            seed=self.context.seed,
            prefill_step_size=self.config.prefill_step_size,
            sample_layers=sample_layers,
        )
        return prefill_outcome(r, in_dim, spec.hidden)

    def projector(self, task: ProjectorTask, spec: LLMSpec, protocol: Protocol) -> Outcome:
        from harness.backends.mlx.prefill import measure_projector_mlx

        m = measure_projector_mlx(
            task.in_dim,
            spec.hidden,
            task.tokens,
            dtype=self.config.mlx_dtype(),
            protocol=protocol,
            seed=self.context.seed,
        )[0]
        return Outcome(m, ProjectorExtra(in_dim=task.in_dim, out_dim=spec.hidden), build_s=0.0)


BACKEND = Backend(
    "mlx",
    MLXConfig,
    llm=MLXLLM,
    description="MLX + mlx-lm prefill (Apple silicon), float or 4/8-bit",
)
