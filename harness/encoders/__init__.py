"""Vision encoders: the zoo, tiling, custom encoders and the PyTorch / Core ML runners.

Importing this package does not import torch; the runners are loaded on first attribute use.

>>> from harness.encoders import encoder_tokens
>>> encoder_tokens("fastvithd", 2048, "2x2+overview")
1280
"""

from __future__ import annotations

from typing import Any

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

_LAZY = {
    "measure_encoder": "harness.encoders.torch_runner",
    "EncoderResult": "harness.encoders.torch_runner",
    "count_gflops": "harness.encoders.torch_runner",
    "register_custom_encoder": "harness.encoders.custom",
    "convert_coreml": "harness.encoders.coreml_runner",
    "measure_coreml": "harness.encoders.coreml_runner",
}

__all__ = [
    "ENCODERS", "ZOO_RESOLUTIONS", "EncoderSpec", "Tiling", "TokenEncoder", "build_encoder",
    "count_params", "encoder_out_dim", "encoder_tokens", "get_spec", "list_encoders",
    "parse_tiling", "validate_resolution", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness.encoders' has no attribute {name!r}")
