"""Layer-sampled prefill: estimate an L-layer model's prefill from k built layers.

Decoder layers of these models are identical in shape, so prefill time is affine in the
layer count: ``t(n) = t_base + n * t_layer``, where ``t_base`` is everything outside the
layer stack (prompt embedding lookup, rotary tables and mask, final norm, LM head on the
last position). Two models are built and timed on the same inputs:

- the *base* model: embedding, final norm and LM head with **0** layers -> ``t_base``;
- the *k-layer* model: the same plus k decoder layers -> ``t_k``.

The estimator is ``t_L = t_base + (L / k) * (t_k - t_base)``. It uses a measured base
instead of assuming it is zero (the LM head alone is a vocab x hidden matmul) and instead of
fitting two layer counts, whose difference would amplify noise by ``L / (k2 - k1)``.
Each timed sample of the k-layer model becomes one estimated sample (with the base at its
median), so the estimate's interval carries the k-layer noise scaled by ``L/k``.
Results are marked ``estimated=True`` with k and L recorded.

This module is the runtime-independent part (the estimator and its result types); the
runners build and time the models: ``harness.backends.torch.prefill.measure_sampled`` and
``validate_sampling`` for PyTorch, ``harness.backends.mlx.prefill`` for MLX.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.protocol import Measurement
from harness.stats import summarize

ESTIMATOR = "t_base + (L/k) * (t_k - t_base)"


def extrapolate(base_ms: float, k_ms: float, k: int, total_layers: int) -> float:
    """Prefill time of ``total_layers`` layers from the 0-layer and k-layer times."""
    if k < 1:
        raise ValueError("k must be >= 1")
    return base_ms + (total_layers / k) * (k_ms - base_ms)


def estimated_measurement(
    base: Measurement, k_layers: Measurement, k: int, total_layers: int
) -> Measurement:
    """A Measurement whose samples are per-sample extrapolations of the k-layer samples."""
    b = base.stats.median_ms
    est = [extrapolate(b, t, k, total_layers) for t in k_layers.samples_ms]
    return Measurement(
        samples_ms=est,
        stats=summarize(est),
        protocol=k_layers.protocol,
        threads=k_layers.threads,
        warmup_ms=[],
        peak_mem_bytes=None,  # the full model never existed: its peak is unknown
        memory_probe=None,
        capped=k_layers.capped or base.capped,
        wall_s=base.wall_s + k_layers.wall_s,
    )


@dataclass
class SampledPrefill:
    """The estimate and the two measurements it came from."""

    estimate: Measurement
    base: Measurement
    k_layers: Measurement
    k: int
    total_layers: int
    build_s: float

    @property
    def per_layer_ms(self) -> float:
        return (self.k_layers.stats.median_ms - self.base.stats.median_ms) / self.k

    def extra(self) -> dict[str, Any]:
        return {
            "estimator": ESTIMATOR,
            "sampled_layers": self.k,
            "total_layers": self.total_layers,
            "base_ms": self.base.stats.median_ms,
            "k_layers_ms": self.k_layers.stats.median_ms,
            "per_layer_ms": self.per_layer_ms,
        }


@dataclass
class SamplingCheck:
    """Sampled vs full prefill on one model, interleaved over ``rounds``."""

    llm: str
    tokens: int
    prompt_tokens: int
    k: int
    total_layers: int
    full_ms: float
    estimate_ms: float
    per_round: list[dict[str, float]] = field(default_factory=list)

    @property
    def round_errors(self) -> list[float]:
        """(estimate - full) / full of each round (both timed back to back in that round)."""
        return [r["estimate_ms"] / r["full_ms"] - 1.0 for r in self.per_round if r.get("full_ms")]

    @property
    def rel_error(self) -> float:
        """Median over rounds of (estimate - full) / full; one busy round cannot swing it."""
        errs = self.round_errors
        return float(np.median(errs)) if errs else self.estimate_ms / self.full_ms - 1.0

    @property
    def error_spread(self) -> tuple[float, float, float, float]:
        """(min, q1, q3, max) of the per-round errors."""
        e = np.asarray(self.round_errors or [self.rel_error], dtype=float)
        q1, q3 = np.quantile(e, [0.25, 0.75])
        return float(e.min()), float(q1), float(q3), float(e.max())

    @property
    def contended_rounds(self) -> int:
        return sum(1 for r in self.per_round if r.get("contended"))
