"""Prefill latency with MLX + mlx-lm, the way the paper timed it (``mlx_lm.cache_prompt``).

The model is an mlx-lm ``Model`` built from a config dict with random weights
(``mx.random``; MLX initialises lazily, so building is cheap), cast to float16 / bfloat16 /
float32 or quantized to 4/8 bits with ``mlx.nn.quantize``. Visual tokens enter through the
model's ``input_embeddings`` argument, followed by the embedded prompt tokens.

The timed step mirrors mlx-lm's ``generate_step`` prompt processing: the sequence is fed in
chunks of ``prefill_step_size`` (mlx-lm default 2048) with the KV cache evaluated after each
chunk, always leaving at least one token for the final call, whose last-position logits are
the first token's. MLX is lazy: the synchronize hook ``mx.eval``s the logits and every cache
state, so the clock is read only after the work is done.

On Linux, mlx[cpu] runs this for correctness with tiny configs; real numbers need Apple
silicon.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.dtypes import canonical_precision
from harness.errors import UserError
from harness.llms import DEFAULT_ENCODER_DIM, DEFAULT_PROMPT_TOKENS, PrefillResult, check_tokens
from harness.llms.sampling import ESTIMATOR, estimated_measurement
from harness.llms.zoo import LLMSpec, get_llm_spec
from harness.protocol import Measurement, Protocol, get_protocol, measure

#: dtype name -> (float dtype name, quantization bits or None)
MLX_DTYPES: dict[str, tuple[str, int | None]] = {
    "float16": ("float16", None),
    "bfloat16": ("bfloat16", None),
    "float32": ("float32", None),
    "q8": ("float16", 8),
    "q4": ("float16", 4),
}
#: MLX quantizes with its own group-wise scheme: an int8 request means its 8-bit ('q8')
_MLX_INT = {"int8": "q8"}


def import_mlx() -> tuple[Any, Any]:
    """Return ``(mlx.core, mlx.nn)``; UserError when mlx / mlx-lm are not importable."""
    try:
        import mlx.core as mx
        import mlx.nn as nn
        import mlx_lm  # noqa: F401
    except ImportError as e:
        raise UserError(
            f"backend 'mlx' needs mlx and mlx-lm, which are not importable here ({e}); "
            "install them (pip install 'vlm-pareto[mlx]') or use backend torch"
        ) from e
    return mx, nn


def mlx_dtype_name(name: str) -> str:
    key = canonical_precision(name, (*MLX_DTYPES, *_MLX_INT), "MLX dtype")
    key = _MLX_INT.get(key, key)
    return key


def quantized_dtype(dtype: str, bits: int | None) -> str:
    """Fold a separate ``bits`` setting (4 or 8) into the MLX dtype name ('q4' / 'q8')."""
    if bits is None:
        return mlx_dtype_name(dtype)
    if bits not in (4, 8):
        raise UserError(f"MLX quantization bits must be 4 or 8, got {bits!r}")
    return f"q{bits}"


@dataclass
class BuiltMLX:
    model: Any
    layers: int
    build_s: float


def build_mlx_llm(
    spec: LLMSpec,
    *,
    dtype: str = "float16",
    layers: int | None = None,
    group_size: int = 64,
    seed: int = 0,
) -> BuiltMLX:
    """Build an mlx-lm model for ``spec`` with random weights, cast or quantized, evaluated."""
    mx, nn = import_mlx()
    from mlx_lm.models import llama, qwen2

    t0 = time.perf_counter()
    float_name, bits = MLX_DTYPES[mlx_dtype_name(dtype)]
    module = {"qwen2": qwen2, "llama": llama}[spec.arch]
    args = dict(spec.mlx_args())
    if layers is not None:
        args["num_hidden_layers"] = layers
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(args))
    model.set_dtype(getattr(mx, float_name))
    if bits is not None:
        if spec.hidden % group_size or spec.intermediate % group_size:
            raise UserError(
                f"{spec.name}: hidden/intermediate sizes must be multiples of the quantization group size {group_size}"
            )
        nn.quantize(model, group_size=group_size, bits=bits)
    mx.eval(model.parameters())
    return BuiltMLX(model, args["num_hidden_layers"], time.perf_counter() - t0)


def _projector(nn: Any, in_dim: int, hidden: int) -> Any:
    # Same shape as harness.llms.projector.Projector (Linear, GELU, Linear).
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))


def measure_projector_mlx(
    in_dim: int,
    hidden: int,
    tokens: int,
    *,
    dtype: str = "float16",
    protocol: str | Protocol = "quick",
    seed: int = 0,
) -> tuple[Measurement, Any, Any]:
    """Time the projector in MLX; returns the Measurement, the projector and its input."""
    mx, nn = import_mlx()
    float_dtype = getattr(mx, MLX_DTYPES[mlx_dtype_name(dtype)][0])
    mx.random.seed(seed + 1)
    projector = _projector(nn, in_dim, hidden)
    projector.set_dtype(float_dtype)
    features = mx.random.normal((1, tokens, in_dim)).astype(float_dtype)
    mx.eval(projector.parameters(), features)
    out: dict[str, Any] = {}

    def step() -> None:
        out["y"] = projector(features)

    def synchronize() -> None:
        if "y" in out:
            mx.eval(out["y"])

    return measure(step, get_protocol(protocol), synchronize=synchronize), projector, features


def prefill_step_fn(
    model: Any, visual: Any, prompt_ids: Any, prefill_step_size: int
) -> tuple[Callable[[], None], Callable[[], None], dict[str, Any]]:
    """The timed step, its synchronize hook, and where it leaves logits and cache."""
    mx, _ = import_mlx()
    from mlx_lm.models.cache import make_prompt_cache

    embed = model.model.embed_tokens
    n_visual = visual.shape[1]
    ids = mx.concatenate([mx.zeros((1, n_visual), dtype=mx.int32), prompt_ids], axis=1)
    out: dict[str, Any] = {}

    def step() -> None:
        cache = make_prompt_cache(model)
        x = mx.concatenate([visual, embed(prompt_ids)], axis=1) if prompt_ids.shape[1] else visual
        total, done = x.shape[1], 0
        while total - done > 1:  # as mlx-lm: chunks, leaving >= 1 token for the last call
            n = min(prefill_step_size, total - done - 1)
            model(ids[:, done : done + n], cache=cache, input_embeddings=x[:, done : done + n])
            mx.eval([c.state for c in cache])
            done += n
            mx.clear_cache()
        out["logits"] = model(ids[:, done:], cache=cache, input_embeddings=x[:, done:])[:, -1, :]
        out["cache"] = cache

    def synchronize() -> None:
        if "logits" in out:
            mx.eval(out["logits"], [c.state for c in out["cache"]])

    return step, synchronize, out


def base_step_fn(
    model: Any, visual: Any, prompt_ids: Any
) -> tuple[Callable[[], None], Callable[[], None]]:
    """The work of a prefill outside the decoder layers (for layer sampling)."""
    mx, _ = import_mlx()
    inner = model.model
    head = (
        inner.embed_tokens.as_linear
        if getattr(model.args, "tie_word_embeddings", False)
        else model.lm_head
    )
    out: dict[str, Any] = {}

    def step() -> None:
        x = (
            mx.concatenate([visual, inner.embed_tokens(prompt_ids)], axis=1)
            if prompt_ids.shape[1]
            else visual
        )
        out["logits"] = head(inner.norm(x[:, -1:]))[:, -1, :]

    def synchronize() -> None:
        if "logits" in out:
            mx.eval(out["logits"])

    return step, synchronize


def measure_prefill_mlx(
    llm: str | LLMSpec,
    visual_tokens: int,
    prompt_tokens: int | None = None,
    *,
    encoder_dim: int = DEFAULT_ENCODER_DIM,
    dtype: str = "float16",
    protocol: str | Protocol = "quick",
    realistic_inputs: bool = True,
    seed: int = 0,
    prefill_step_size: int = 2048,
    group_size: int = 64,
    sample_layers: int | None = None,
) -> PrefillResult:
    """Measure mlx-lm prefill (and the projector, on its own line) for ``visual_tokens``
    visual + ``prompt_tokens`` prompt tokens. ``dtype``: float16 | bfloat16 | float32 | q8 | q4.
    ``sample_layers=k`` uses the layer-sampling estimator of :mod:`harness.llms.sampling`.
    """
    mx, nn = import_mlx()
    spec = get_llm_spec(llm)
    prompt_tokens = DEFAULT_PROMPT_TOKENS if prompt_tokens is None else prompt_tokens
    check_tokens(spec, visual_tokens, prompt_tokens)
    dname = mlx_dtype_name(dtype)
    if (
        isinstance(prefill_step_size, bool)
        or not isinstance(prefill_step_size, int)
        or prefill_step_size < 1
    ):
        raise UserError(f"prefill_step_size must be a positive integer, got {prefill_step_size!r}")
    if isinstance(encoder_dim, bool) or not isinstance(encoder_dim, int) or encoder_dim <= 0:
        raise UserError(f"encoder_dim must be a positive integer, got {encoder_dim!r}")
    proto = get_protocol(protocol)
    float_dtype = getattr(mx, MLX_DTYPES[dname][0])
    sampled = sample_layers is not None and sample_layers < spec.layers
    k: int = sample_layers if (sampled and sample_layers is not None) else spec.layers
    check_memory_mlx(spec, visual_tokens + prompt_tokens, dname, k)

    projector_m, projector, features = measure_projector_mlx(
        encoder_dim, spec.hidden, visual_tokens, dtype=dname, protocol=proto, seed=seed
    )
    if realistic_inputs:
        visual, scale = projector(features), "projected-encoder-features"
    else:
        visual, scale = (
            (mx.random.normal((1, visual_tokens, spec.hidden)) * 0.02).astype(float_dtype),
            "embedding-scale",
        )
    prompt_ids = ((mx.arange(prompt_tokens) * 7919 + 1000) % spec.vocab).astype(mx.int32)[None]
    mx.eval(visual, prompt_ids)

    built = build_mlx_llm(spec, dtype=dname, layers=k, group_size=group_size, seed=seed)
    step, sync, out = prefill_step_fn(built.model, visual, prompt_ids, prefill_step_size)
    timings = {k: measure(step, proto, synchronize=sync)}
    logits = out["logits"].astype(mx.float32)
    if not bool(mx.all(mx.isfinite(logits)).item()):
        raise UserError(
            f"{spec.name}: MLX prefill produced non-finite logits in {dname}; try float32"
        )
    if sampled:
        # mlx-lm cannot build a 0-layer llama, so the non-layer part is timed directly on
        # the k-layer model: prompt embedding, final norm and LM head on the last token.
        base_step, base_sync = base_step_fn(built.model, visual, prompt_ids)
        timings[0] = measure(base_step, proto, synchronize=base_sync)
    build_s = built.build_s
    del built, step, sync, out
    extra: dict[str, Any] = {
        "encoder_dim": encoder_dim,
        "hidden": spec.hidden,
        "input_scale": scale,
        "prefill_step_size": prefill_step_size,
        "quant_bits": MLX_DTYPES[dname][1],
        "quant_group_size": group_size if MLX_DTYPES[dname][1] else None,
        "mlx_device": _device_name(mx),
        "params_m": spec.params_b * 1e3,
        "llm_source": spec.source,
        "weights": "random",
    }
    if sampled:
        measurement = estimated_measurement(timings[0], timings[k], k, spec.layers)
        extra.update(
            {
                "estimator": ESTIMATOR,
                "base_ms": timings[0].stats.median_ms,
                "k_layers_ms": timings[k].stats.median_ms,
                "per_layer_ms": (timings[k].stats.median_ms - timings[0].stats.median_ms) / k,
            }
        )
    else:
        measurement = timings[k]
    return PrefillResult(
        llm=spec.name,
        backend="mlx",
        device=_device_name(mx),
        dtype=dname,
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


def check_memory_mlx(spec: LLMSpec, tokens: int, dname: str, layers: int) -> None:
    from harness.llms.build import check_memory

    float_name, bits = MLX_DTYPES[dname]
    try:
        # Quantized weights take bits/16 of float16 plus scales; counting them as float16 is safe.
        check_memory(spec, tokens, float_name, layers)
    except UserError as e:
        raise UserError(f"{e} (MLX backend{', ' + dname if bits else ''})") from e


def _device_name(mx: Any) -> str:
    return "gpu" if mx.default_device() == mx.gpu else "cpu"
