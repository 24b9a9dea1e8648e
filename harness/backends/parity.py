"""Parity of a deployment runtime's output with float32 eager PyTorch.

Before a runtime's latency is stored, its output on the same input is compared with the
float32 eager reference (encoder: the ``[1, N, C]`` token features; prefill: the logits of
the last position). Two numbers are kept with the measurement:

- ``cosine``: cosine similarity of the flattened outputs;
- ``max_abs_err``: the largest absolute difference, and ``rel_err`` = ``max_abs_err`` divided
  by the reference's largest magnitude (scale-free, so one threshold fits every model).

A runtime passes when ``cosine >= min_cosine`` **and** ``rel_err <= max_rel_err`` for its
precision (:data:`THRESHOLDS`, documented in docs/runtimes.md). A runtime that fails is a
*failed* point whose reason carries the numbers: a wrong output is never a fast one.

No torch import: outputs are compared as numpy arrays (tensors are converted by the caller
with ``.float().numpy()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: precision -> (min cosine, max relative max-abs error). float32 runtimes reorder
#: reductions and fuse ops (small rounding differences); bf16/fp16 keep 8/11 mantissa bits
#: through dozens of layers; int8 dynamic quantization rounds every weight and activation of
#: the quantized layers to 256 levels.
THRESHOLDS: dict[str, tuple[float, float]] = {
    "float32": (0.9999, 0.01),
    "float16": (0.99, 0.15),
    "bfloat16": (0.98, 0.25),
    "int8": (0.95, 0.5),
}


class ParityError(RuntimeError):
    """A runtime's output differs from the float32 eager reference beyond its threshold."""

    def __init__(self, message: str, result: ParityResult):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class ParityResult:
    """The comparison of one output with its reference, and the threshold it was held to."""

    cosine: float
    max_abs_err: float
    rel_err: float
    precision: str
    min_cosine: float
    max_rel_err: float
    finite: bool = True

    @property
    def ok(self) -> bool:
        return self.finite and self.cosine >= self.min_cosine and self.rel_err <= self.max_rel_err

    def to_dict(self) -> dict[str, Any]:
        return {
            "parity_cosine": self.cosine,
            "parity_max_abs_err": self.max_abs_err,
            "parity_rel_err": self.rel_err,
            "parity_precision": self.precision,
            "parity_min_cosine": self.min_cosine,
            "parity_max_rel_err": self.max_rel_err,
            "parity_ok": self.ok,
        }

    def describe(self) -> str:
        return (
            f"cosine {self.cosine:.6f} (min {self.min_cosine}), max abs err {self.max_abs_err:.4g} "
            f"= {self.rel_err:.3g} of the reference's max (max {self.max_rel_err})"
            + ("" if self.finite else ", non-finite values")
        )


def thresholds(precision: str) -> tuple[float, float]:
    """(min cosine, max relative error) for ``precision`` (int8/q8 share one row)."""
    from harness.dtypes import PRECISION_ALIASES

    key = str(precision).strip().lower()
    key = PRECISION_ALIASES.get(key, key)
    key = "int8" if key == "q8" else key  # one row for 8-bit weights, whatever the runtime
    if key not in THRESHOLDS:
        raise KeyError(f"no parity threshold for precision {precision!r}")
    return THRESHOLDS[key]


def compare(output: Any, reference: Any, precision: str) -> ParityResult:
    """Compare two array-likes (flattened, in float64) against ``precision``'s thresholds."""
    import numpy as np

    a = np.asarray(output, dtype=np.float64).ravel()
    b = np.asarray(reference, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"parity: output has {a.size} values, the reference {b.size}")
    min_cos, max_rel = thresholds(precision)
    finite = bool(np.isfinite(a).all())
    if not finite:
        return ParityResult(
            float("nan"), float("inf"), float("inf"), precision, min_cos, max_rel, False
        )
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    cos = float(a @ b / denom) if denom > 0 else (1.0 if not a.any() and not b.any() else 0.0)
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    rel = err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
    return ParityResult(cos, err, rel, precision, min_cos, max_rel, True)


def check(output: Any, reference: Any, precision: str, what: str) -> ParityResult:
    """:func:`compare`, raising :class:`ParityError` (with the numbers) when it fails."""
    result = compare(output, reference, precision)
    if not result.ok:
        raise ParityError(f"parity failed for {what} ({precision}): {result.describe()}", result)
    return result


__all__ = ["THRESHOLDS", "ParityError", "ParityResult", "check", "compare", "thresholds"]
