"""LLM side of TTFT: the zoo, the projector, and prefill runners (PyTorch, MLX).

Importing this package is cheap (no torch, no mlx). The runners are backends:

- ``harness.backends.torch.prefill.measure_prefill`` (PyTorch + transformers)
- ``harness.backends.mlx.prefill.measure_prefill_mlx`` (MLX + mlx-lm)
- ``harness.llms.sampling``: the layer-sampling estimator both use for models too big to
  build whole
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.errors import UserError
from harness.llms.zoo import LLMS, LLMSpec, get_llm_spec, list_llms, tiny_spec

if TYPE_CHECKING:
    from harness.protocol import Measurement

#: Prompt length used when none is given: a short instruction such as "Describe the image in
#: detail." plus the chat-template tokens around it comes to about 16 tokens with the Qwen2
#: and LLaMA tokenizers. No tokenizer is available offline, so the count is fixed here.
DEFAULT_PROMPT_TOKENS = 16

#: Encoder channels fed to the projector by default: FastViTHD's 3072-channel output.
DEFAULT_ENCODER_DIM = 3072


@dataclass
class PrefillResult:
    """One prefill measurement: the LLM forward (``measurement``) and, on its own line, the
    projector that produced its visual tokens (``projector``).

    ``estimated`` is true for layer-sampled results (``sampled_layers`` of ``total_layers``
    built and timed; see ``harness.llms.sampling``). ``build_s`` is model construction time,
    never part of the measured latency.
    """

    llm: str
    backend: str
    device: str
    dtype: str
    measurement: Measurement
    projector: Measurement
    tokens: int
    prompt_tokens: int
    build_s: float
    estimated: bool
    sampled_layers: int
    total_layers: int
    params_b: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prefill_ms(self) -> float:
        return self.measurement.stats.median_ms

    @property
    def projector_ms(self) -> float:
        return self.projector.stats.median_ms

    def store_records(self) -> list[dict[str, Any]]:
        """Rows for ``Store.add_measurement``: key fields (DESIGN.md names), the Measurement,
        and ``extra``/``build_s``/``estimated``. One 'prefill' row, one 'projector' row.

        Projector rows use ``name`` = the LLM (its output size) with the encoder channels in
        ``extra["in_dim"]``, so TTFT composition can match them to an encoder.
        """
        common = dict(
            resolution=0,
            tiling="none",
            backend=self.backend,
            device=self.device,
            dtype=self.dtype,
            protocol=self.measurement.protocol,
        )
        prefill_extra = {
            **self.extra,
            "projector_ms": self.projector_ms,
            "sampled_layers": self.sampled_layers,
            "total_layers": self.total_layers,
            "params_b": self.params_b,
        }
        return [
            dict(
                kind="prefill",
                name=self.llm,
                tokens=self.tokens,
                prompt_tokens=self.prompt_tokens,
                measurement=self.measurement,
                extra=prefill_extra,
                build_s=self.build_s,
                estimated=self.estimated,
                **common,
            ),
            dict(
                kind="projector",
                name=self.llm,
                tokens=self.tokens,
                prompt_tokens=0,
                measurement=self.projector,
                extra={
                    "in_dim": self.extra.get("encoder_dim"),
                    "out_dim": self.extra.get("hidden"),
                },
                build_s=0.0,
                estimated=False,
                **common,
            ),
        ]


def check_tokens(spec: LLMSpec, visual_tokens: Any, prompt_tokens: Any) -> tuple[int, int]:
    """Validate token counts against the model's context; UserError otherwise."""
    for what, value, low in (
        ("visual token count", visual_tokens, 1),
        ("prompt token count", prompt_tokens, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"{what} must be an integer >= {low}, got {value!r}")
    total = visual_tokens + prompt_tokens
    if total > spec.max_positions:
        raise UserError(
            f"{visual_tokens} visual + {prompt_tokens} prompt tokens = {total} exceeds {spec.name}'s "
            f"context length of {spec.max_positions} tokens"
        )
    return visual_tokens, prompt_tokens


__all__ = [
    "DEFAULT_ENCODER_DIM",
    "DEFAULT_PROMPT_TOKENS",
    "LLMS",
    "LLMSpec",
    "PrefillResult",
    "get_llm_spec",
    "check_tokens",
    "list_llms",
    "tiny_spec",
]
