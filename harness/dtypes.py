"""Precision names: the one table every backend, config check and memory estimate uses.

Pure (no torch): backends map the canonical names to their own types (``harness.devices``
for torch, the MLX and Core ML backends for theirs).
"""

from __future__ import annotations

from harness.errors import UserError, suggest

#: canonical precision names; a backend supports a subset (``RunnerConfig.PRECISIONS``)
PRECISIONS: tuple[str, ...] = ("float32", "float16", "bfloat16", "int8", "q8", "q4")
#: the float precisions every torch device may run
FLOAT_PRECISIONS: tuple[str, ...] = ("float32", "float16", "bfloat16")
#: spellings users write -> canonical name
PRECISION_ALIASES: dict[str, str] = {
    "fp32": "float32",
    "float": "float32",
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "8bit": "q8",
    "4bit": "q4",
    "int4": "q4",
}
#: bytes per parameter / activation element, for memory estimates
PRECISION_BYTES: dict[str, float] = {
    "float32": 4.0,
    "float16": 2.0,
    "bfloat16": 2.0,
    "int8": 1.0,
    "q8": 1.0,
    "q4": 0.5,
}


def canonical_precision(
    name: str, allowed: tuple[str, ...] = PRECISIONS, what: str = "dtype"
) -> str:
    """``'fp16'`` -> ``'float16'``; UserError with "did you mean" if not in ``allowed``."""
    key = str(name).strip().lower()
    key = PRECISION_ALIASES.get(key, key)
    if key not in allowed:
        raise UserError(suggest(str(name), list(allowed), what))
    return key
