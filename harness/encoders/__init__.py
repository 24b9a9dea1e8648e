"""Vision encoders: the zoo, tiling and custom encoders (the runners are backends:
``harness.backends.torch.encoder``, ``harness.backends.coreml.encoder``).

>>> from harness.encoders import encoder_tokens
>>> encoder_tokens("fastvithd", 2048, "2x2+overview")
1280
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from harness.encoders.custom import register_custom_encoder
from harness.encoders.tiling import Tiling, parse_tiling
from harness.encoders.zoo import (
    ENCODERS,
    ZOO_RESOLUTIONS,
    EncoderSpec,
    TokenEncoder,
    build_encoder,
    count_params,
    encoder_out_dim,
    encoder_tokens,
    get_spec,
    list_encoders,
    validate_resolution,
)

if TYPE_CHECKING:
    from harness.protocol import Measurement


@dataclass
class EncoderResult:
    """One encoder timing (the runners' function API): the protocol's measurement plus what
    the encoder produced."""

    measurement: Measurement
    tokens: int
    out_dim: int
    params_m: float
    build_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["measurement"] = self.measurement.to_dict()
        return d


__all__ = [
    "ENCODERS",
    "ZOO_RESOLUTIONS",
    "EncoderResult",
    "EncoderSpec",
    "Tiling",
    "TokenEncoder",
    "build_encoder",
    "count_params",
    "encoder_out_dim",
    "encoder_tokens",
    "get_spec",
    "list_encoders",
    "parse_tiling",
    "register_custom_encoder",
    "validate_resolution",
]
