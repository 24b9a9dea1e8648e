"""Prefill latency with PyTorch + transformers: the LLM half of TTFT.

What is timed (one sample): embed the prompt token ids, concatenate them after the visual
tokens (already projected), and run one forward pass with a fresh KV cache
(``use_cache=True``) that returns logits for the last position only
(``logits_to_keep=1``), i.e. exactly the work before the first token can be sampled. The
projector is timed as its own step on the same inputs (``PrefillResult.projector``).

Inputs are at the scale the real pipeline produces: by default, standard-normal encoder
features pushed through the projector (``input_scale="projected-encoder-features"``); with
``realistic_inputs=False``, embedding-table-scale values (``"embedding-scale"``). Input
scale matters on CPUs because values drifting into the denormal range slow arithmetic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.denormal import set_flush_denormal
from harness.devices import resolve_device, torch_synchronizer
from harness.errors import UserError
from harness.llms import DEFAULT_ENCODER_DIM, DEFAULT_PROMPT_TOKENS, PrefillResult, check_tokens
from harness.llms.build import (
    build_torch_llm,
    check_device,
    check_memory,
    dtype_name,
    resolve_dtype,
)
from harness.llms.projector import Projector, build_projector, encoder_features
from harness.llms.sampling import SampledPrefill, SamplingCheck, estimated_measurement
from harness.llms.zoo import LLMSpec, get_llm_spec
from harness.protocol import Measurement, Protocol, get_protocol, measure
from harness.stats import summarize


def prompt_token_ids(spec: LLMSpec, prompt_tokens: int, device: str = "cpu") -> torch.Tensor:
    """Deterministic stand-in prompt ids spread over the vocabulary (``1 x prompt_tokens``)."""
    ids = (torch.arange(prompt_tokens, dtype=torch.long) * 7919 + 1000) % spec.vocab
    return ids.unsqueeze(0).to(device)


@dataclass
class PrefillInputs:
    """Everything fed to a prefill: visual embeddings, prompt ids, and the projector step."""

    visual: torch.Tensor  # 1 x tokens x hidden, already projected
    prompt_ids: torch.Tensor  # 1 x prompt_tokens
    projector: Projector
    features: torch.Tensor  # 1 x tokens x encoder_dim
    input_scale: str


@torch.inference_mode()
def prepare_inputs(
    spec: LLMSpec,
    visual_tokens: int,
    prompt_tokens: int,
    *,
    encoder_dim: int = DEFAULT_ENCODER_DIM,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    realistic_inputs: bool = True,
    seed: int = 0,
) -> PrefillInputs:
    """Build the projector and the prefill inputs (see the module docstring for scales)."""
    if isinstance(encoder_dim, bool) or not isinstance(encoder_dim, int) or encoder_dim <= 0:
        raise UserError(f"encoder_dim must be a positive integer, got {encoder_dim!r}")
    projector = build_projector(encoder_dim, spec.hidden, dtype=dtype, device=device, seed=seed + 1)
    features = encoder_features(
        visual_tokens, encoder_dim, dtype=dtype, device=device, seed=seed + 2
    )
    if realistic_inputs:
        visual, scale = projector(features), "projected-encoder-features"
    else:
        gen = torch.Generator(device="cpu").manual_seed(seed + 3)
        visual = (torch.randn(1, visual_tokens, spec.hidden, generator=gen) * 0.02).to(
            device=device, dtype=dtype
        )
        scale = "embedding-scale"
    return PrefillInputs(
        visual.contiguous(),
        prompt_token_ids(spec, prompt_tokens, device),
        projector,
        features,
        scale,
    )


def prefill_callable(
    model: torch.nn.Module, visual: torch.Tensor, prompt_ids: torch.Tensor
) -> tuple[Callable[[], None], dict[str, Any]]:
    """The timed step, and a dict where it leaves the last logits (checked after timing)."""
    from transformers import DynamicCache

    hf: Any = model  # a transformers model (torch's Module.__getattr__ types hide its methods)
    embed = hf.get_input_embeddings()
    config = hf.config
    out: dict[str, Any] = {}

    def step() -> None:
        with torch.inference_mode():
            x = torch.cat([visual, embed(prompt_ids)], dim=1) if prompt_ids.shape[1] else visual
            cache = DynamicCache(config=config)  # fresh each call: prefill starts from empty
            result = model(inputs_embeds=x, past_key_values=cache, use_cache=True, logits_to_keep=1)
            out["logits"] = result.logits
            out["cache"] = result.past_key_values

    return step, out


def analytic_prefill_flops(
    spec: LLMSpec, tokens: int, layers: int | None = None, attention: bool = True
) -> float:
    """Matmul + attention FLOPs of one prefill of ``tokens`` tokens (2 per multiply-add).

    Attention scores are counted over the full T x T matrix (causal kernels may skip about
    half). ``attention=False`` gives the linear layers only, which is what
    ``torch.utils.flop_counter.FlopCounterMode`` sees on CPU: it has no formula for the
    CPU flash-attention kernel that SDPA dispatches to. The LM head runs on the last
    position only.
    """
    k = spec.layers if layers is None else layers
    h, kv = spec.hidden, spec.kv_heads * spec.head_dim
    per_token_layer = 2 * (2 * h * h + 2 * h * kv + 3 * h * spec.intermediate)
    attn = 2 * 2 * tokens * tokens * h if attention else 0  # QK^T and AV
    return float(k * (tokens * per_token_layer + attn) + 2 * h * spec.vocab)


def _apply_denormal_policy(proto: Protocol, device: str) -> bool:
    # measure() sets threads but not the denormal mode; on CPU flush denormals to zero as the
    # protocol asks, so stray tiny values cannot slow a sample down.
    if torch.device(device).type == "cpu":
        return set_flush_denormal(proto.flush_denormal)
    return False


def time_projector(
    projector: Projector, features: torch.Tensor, proto: Protocol, sync: Callable[[], None] | None
) -> Measurement:
    """Time the projector on the visual tokens' encoder features."""

    def step() -> None:
        with torch.inference_mode():
            projector(features)

    return measure(step, proto, synchronize=sync)


def measure_prefill(
    llm: str | LLMSpec,
    visual_tokens: int,
    prompt_tokens: int | None = None,
    *,
    encoder_dim: int = DEFAULT_ENCODER_DIM,
    device: str = "cpu",
    dtype: str = "float32",
    protocol: str | Protocol = "quick",
    sample_layers: int | None = None,
    realistic_inputs: bool = True,
    seed: int = 0,
    weights_dir: str | Path | None = None,
) -> PrefillResult:
    """Measure prefill latency of ``llm`` for ``visual_tokens`` + ``prompt_tokens`` tokens.

    ``prompt_tokens`` defaults to :data:`harness.llms.DEFAULT_PROMPT_TOKENS` (16).
    ``sample_layers=k`` builds and times k of the L decoder layers and extrapolates
    (result ``estimated=True``; see :mod:`harness.llms.sampling`). The MLX runner is
    :func:`harness.backends.mlx.prefill.measure_prefill_mlx`. Raises UserError for bad names,
    token counts, dtypes, devices, and when the model would not fit in memory.
    """
    spec = get_llm_spec(llm)
    prompt_tokens = DEFAULT_PROMPT_TOKENS if prompt_tokens is None else prompt_tokens
    check_tokens(spec, visual_tokens, prompt_tokens)
    if sample_layers is not None and (
        isinstance(sample_layers, bool) or not isinstance(sample_layers, int) or sample_layers < 1
    ):
        raise UserError(f"sample_layers must be a positive integer, got {sample_layers!r}")
    device = check_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    proto = get_protocol(protocol)
    sampled = sample_layers is not None and sample_layers < spec.layers
    k: int = sample_layers if (sampled and sample_layers is not None) else spec.layers
    check_memory(spec, visual_tokens + prompt_tokens, dtype, k, device, encoder_dim)

    flush = _apply_denormal_policy(proto, device)
    sync = torch_synchronizer(device)
    inputs = prepare_inputs(
        spec,
        visual_tokens,
        prompt_tokens,
        encoder_dim=encoder_dim,
        dtype=torch_dtype,
        device=device,
        realistic_inputs=realistic_inputs,
        seed=seed,
    )
    projector_m = time_projector(inputs.projector, inputs.features, proto, sync)
    extra: dict[str, Any] = {
        "encoder_dim": encoder_dim,
        "hidden": spec.hidden,
        "input_scale": inputs.input_scale,
        "visual_embed_rms": float(inputs.visual.float().pow(2).mean().sqrt()),
        "flush_denormal": flush,
        "attn_implementation": "sdpa",
        "analytic_gflops": analytic_prefill_flops(spec, visual_tokens + prompt_tokens) / 1e9,
        "params_m": spec.params_b * 1e3,
        "llm_source": spec.source,
    }
    if sampled:
        sample = measure_sampled(
            spec,
            inputs,
            k,
            dtype=dtype,
            device=device,
            protocol=proto,
            seed=seed,
            weights_dir=weights_dir,
        )
        measurement, build_s = sample.estimate, sample.build_s
        extra.update(sample.extra())
    else:
        built = build_torch_llm(
            spec, dtype=dtype, device=device, seed=seed, weights_dir=weights_dir
        )
        step, out = prefill_callable(built.model, inputs.visual, inputs.prompt_ids)
        # step-local peak RSS on CPU, allocator peak on CUDA, driver allocation on MPS
        measurement = measure(step, proto, synchronize=sync, memory=resolve_device(device)[2])
        check_logits(out, spec)
        build_s = built.build_s
        extra["weights"] = built.weights
        del built, step, out
    return PrefillResult(
        llm=spec.name,
        backend="torch",
        device=device,
        dtype=dtype_name(dtype),
        measurement=measurement,
        projector=projector_m,
        tokens=visual_tokens,
        prompt_tokens=prompt_tokens,
        build_s=build_s,
        estimated=sampled,
        sampled_layers=k,
        total_layers=spec.layers,
        params_b=spec.params_b,
        extra=extra,
    )


def check_logits(out: dict[str, Any], spec: LLMSpec) -> None:
    """Refuse a measurement whose last logits are not finite (overflow, bad weights)."""
    logits = out.get("logits")
    if logits is None or not bool(torch.isfinite(logits).all()):
        raise UserError(
            f"{spec.name}: prefill produced non-finite logits (overflow in this dtype or bad weights); try float32"
        )
    if logits.shape[1] != 1:
        raise RuntimeError(
            f"expected logits for the last position only, got shape {tuple(logits.shape)}"
        )


# ---------------------------------------------------------------- layer sampling


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
    if not 1 <= k <= spec.layers:
        raise ValueError(f"k must be in 1..{spec.layers}")
    proto = get_protocol(protocol)
    sync = torch_synchronizer(device)
    timings: dict[int, Measurement] = {}
    build_s = 0.0
    for n in (0, k):
        built = build_torch_llm(
            spec, dtype=dtype, device=device, layers=n, seed=seed, weights_dir=weights_dir
        )
        build_s += built.build_s
        step, out = prefill_callable(built.model, inputs.visual, inputs.prompt_ids)
        timings[n] = measure(step, proto, synchronize=sync)
        check_logits(out, spec)
        del built, step, out
    est = estimated_measurement(timings[0], timings[k], k, spec.layers)
    return SampledPrefill(est, timings[0], timings[k], k, spec.layers, build_s)


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
    """Time the full model and the sampled estimate interleaved over ``rounds`` and report the
    median of the per-round errors with their spread. CPU only.

    Inside a round the three models (full, base, k layers) are timed sample by sample in turn
    (full, base, k, then k, base, full, ...), ``max(min_runs, 5)`` samples each, so drift of a
    shared machine, which moves a time by 15-30% over tens of seconds, hits all three alike.
    A round's error compares its medians; a round with a contended sample is marked.
    """
    if rounds < 1:
        raise UserError(f"sampling validation needs at least 1 round, got {rounds}")
    proto = get_protocol(protocol)
    check_memory(spec, visual_tokens + prompt_tokens, dtype, spec.layers + k)
    set_flush_denormal(proto.flush_denormal)
    inputs = prepare_inputs(
        spec, visual_tokens, prompt_tokens, dtype=getattr(torch, dtype), seed=seed
    )
    steps = {}
    for n in (spec.layers, 0, k):
        model = build_torch_llm(spec, dtype=dtype, layers=n, seed=seed).model
        steps[n] = prefill_callable(model, inputs.visual, inputs.prompt_ids)[0]
    warm = replace(proto, min_runs=1, min_time_s=0.0, retakes=0)
    one = replace(proto, warmup_runs=0, warmup_min_s=0.0, min_runs=1, min_time_s=0.0)
    per_sample = max(proto.min_runs, 5)
    order = [spec.layers, 0, k]
    full: list[float] = []
    est: list[float] = []
    per_round = []
    for r in range(rounds):
        t0 = time.perf_counter()
        for n in order:
            measure(steps[n], warm)  # warm-up of this round
        taken: dict[int, list[Measurement]] = {n: [] for n in order}
        for j in range(per_sample):
            for n in order if (r + j) % 2 == 0 else order[::-1]:
                taken[n].append(measure(steps[n], one))
        m_full, m_base, m_k = (_pooled(taken[n], proto) for n in order)
        e = estimated_measurement(m_base, m_k, k, spec.layers)
        full += m_full.samples_ms
        est += e.samples_ms
        per_round.append(
            {
                "round": r,
                "full_ms": m_full.stats.median_ms,
                "estimate_ms": e.stats.median_ms,
                "base_ms": m_base.stats.median_ms,
                "k_layers_ms": m_k.stats.median_ms,
                "wall_s": time.perf_counter() - t0,
                "contended": any(x.contended for n in order for x in taken[n]),
            }
        )
    return SamplingCheck(
        spec.name,
        visual_tokens,
        prompt_tokens,
        k,
        spec.layers,
        float(np.median(full)),
        float(np.median(est)),
        per_round,
    )


def _pooled(ms: list[Measurement], proto: Protocol) -> Measurement:
    """One measurement of the samples of several one-sample measurements."""
    samples = [x for m in ms for x in m.samples_ms]
    return replace(ms[0], samples_ms=samples, stats=summarize(samples, proto.confidence))


# ---------------------------------------------------------------- the projector alone


def time_projector_alone(
    in_dim: int,
    hidden: int,
    tokens: int,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    protocol: str | Protocol = "quick",
    seed: int = 0,
) -> Measurement:
    """Time the projector alone for ``tokens`` visual tokens (PyTorch)."""
    for what, value in (("in_dim", in_dim), ("hidden", hidden), ("tokens", tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"projector {what} must be a positive integer, got {value!r}")
    proto = get_protocol(protocol)
    device = check_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    projector = build_projector(in_dim, hidden, dtype=torch_dtype, device=device, seed=seed + 1)
    features = encoder_features(tokens, in_dim, dtype=torch_dtype, device=device, seed=seed + 2)
    return time_projector(projector, features, proto, torch_synchronizer(device))


#: the name earlier versions exported from ``harness.llms.projector``
measure_projector = time_projector_alone
