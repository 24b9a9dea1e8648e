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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.llms.build import build_torch_llm, check_memory
from harness.llms.zoo import LLMSpec
from harness.protocol import Measurement, Protocol, get_protocol, measure
from harness.stats import summarize

if TYPE_CHECKING:
    from harness.llms.torch_prefill import PrefillInputs

ESTIMATOR = "t_base + (L/k) * (t_k - t_base)"


def extrapolate(base_ms: float, k_ms: float, k: int, total_layers: int) -> float:
    """Prefill time of ``total_layers`` layers from the 0-layer and k-layer times."""
    if k < 1:
        raise ValueError("k must be >= 1")
    return base_ms + (total_layers / k) * (k_ms - base_ms)


def estimated_measurement(base: Measurement, k_layers: Measurement, k: int, total_layers: int) -> Measurement:
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


def measure_sampled(
    spec: LLMSpec,
    inputs: PrefillInputs,
    k: int,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    protocol: str | Protocol = "quick",
    seed: int = 0,
    weights_dir: str | Path | None = None,
) -> SampledPrefill:
    """Build the 0-layer and k-layer models, time both, extrapolate to ``spec.layers``."""
    from harness.llms.torch_prefill import check_logits, prefill_callable, torch_synchronizer

    if not 1 <= k <= spec.layers:
        raise ValueError(f"k must be in 1..{spec.layers}")
    proto = get_protocol(protocol)
    sync = torch_synchronizer(device)
    timings: dict[int, Measurement] = {}
    build_s = 0.0
    for n in (0, k):
        built = build_torch_llm(spec, dtype=dtype, device=device, layers=n, seed=seed, weights_dir=weights_dir)
        build_s += built.build_s
        step, out = prefill_callable(built.model, inputs.visual, inputs.prompt_ids)
        timings[n] = measure(step, proto, synchronize=sync)
        check_logits(out, spec)
        del built, step, out
    est = estimated_measurement(timings[0], timings[k], k, spec.layers)
    return SampledPrefill(est, timings[0], timings[k], k, spec.layers, build_s)


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


def validate_sampling(
    spec: LLMSpec,
    visual_tokens: int,
    k: int,
    *,
    prompt_tokens: int = 16,
    protocol: str | Protocol = "quick",
    rounds: int = 5,
    dtype: str = "float32",
    seed: int = 0,
) -> SamplingCheck:
    """Time the full model and the sampled estimate interleaved over ``rounds`` (full first in
    even rounds, last in odd ones, so machine drift hits both alike) and report the median of
    the per-round errors with their spread. CPU only.
    """
    import torch

    from harness.llms.torch_prefill import prefill_callable, prepare_inputs

    if rounds < 1:
        from harness.errors import UserError

        raise UserError(f"sampling validation needs at least 1 round, got {rounds}")
    proto = get_protocol(protocol)
    check_memory(spec, visual_tokens + prompt_tokens, dtype, spec.layers + k)
    torch.set_flush_denormal(proto.flush_denormal)
    inputs = prepare_inputs(spec, visual_tokens, prompt_tokens, dtype=getattr(torch, dtype), seed=seed)
    steps = {}
    models = {}
    for n in (spec.layers, 0, k):
        models[n] = build_torch_llm(spec, dtype=dtype, layers=n, seed=seed)
        steps[n] = prefill_callable(models[n].model, inputs.visual, inputs.prompt_ids)[0]
    full: list[float] = []
    est: list[float] = []
    per_round = []
    for r in range(rounds):
        t0 = time.perf_counter()
        if r % 2 == 0:
            m_full = measure(steps[spec.layers], proto)
            m_base = measure(steps[0], proto)
            m_k = measure(steps[k], proto)
        else:
            m_base = measure(steps[0], proto)
            m_k = measure(steps[k], proto)
            m_full = measure(steps[spec.layers], proto)
        e = estimated_measurement(m_base, m_k, k, spec.layers)
        full += m_full.samples_ms
        est += e.samples_ms
        per_round.append({
            "round": r, "full_ms": m_full.stats.median_ms, "estimate_ms": e.stats.median_ms,
            "base_ms": m_base.stats.median_ms, "k_layers_ms": m_k.stats.median_ms, "wall_s": time.perf_counter() - t0,
            "contended": any(x.contended for x in (m_full, m_base, m_k)),
        })
    return SamplingCheck(spec.name, visual_tokens, prompt_tokens, k, spec.layers,
                         float(np.median(full)), float(np.median(est)), per_round)
