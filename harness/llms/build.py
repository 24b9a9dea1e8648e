"""Build a transformers decoder from an :class:`LLMSpec`, cheaply and well-conditioned.

Plain ``Qwen2ForCausalLM(config)`` spends 10-17 s on its default initialisation for a 0.5B
model. Latency does not depend on weight values, so the model is constructed on the
``meta`` device (no memory, no init), allocated with ``to_empty`` and filled in one pass by
tiling a small random block (a memory copy, not a random number per weight).

Two things ``to_empty`` gets wrong for transformers models, fixed here:

- non-persistent buffers (rotary ``inv_freq``) come back as uninitialised memory: they are
  recomputed from a freshly constructed rotary module;
- tied parameters (``lm_head.weight`` is ``embed_tokens.weight``) are allocated separately:
  the tie is restored, otherwise the model would hold and read two vocab x hidden matrices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from harness.devices import TORCH_DTYPES as DTYPES  # noqa: F401 (re-exported)
from harness.devices import torch_dtype
from harness.dtypes import FLOAT_PRECISIONS, canonical_precision
from harness.errors import UserError
from harness.llms.zoo import LLMSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: Fixed runtime overhead (libraries, allocator slack) added to memory estimates.
_RUNTIME_OVERHEAD_BYTES = 512 * 2**20


def dtype_name(name: str) -> str:
    """Canonical float dtype name ('float32' | 'bfloat16' | 'float16'); UserError otherwise."""
    return canonical_precision(name, FLOAT_PRECISIONS)


def resolve_dtype(name: str, device: str = "cpu") -> torch.dtype:
    """The torch dtype for ``name`` if ``device`` supports it; UserError otherwise."""
    return torch_dtype(name, device)


def check_device(device: str) -> str:
    """Validate a torch device string ('cpu', 'cuda', 'cuda:1', 'mps'); UserError if unavailable."""
    from harness.devices import resolve_device

    return str(resolve_device(device)[0])


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed to build ``layers`` decoder layers and prefill ``tokens`` tokens."""

    params_bytes: int
    kv_bytes: int
    activation_bytes: int
    overhead_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.params_bytes + self.kv_bytes + self.activation_bytes + self.overhead_bytes

    @property
    def total_gib(self) -> float:
        return self.total_bytes / 2**30


def estimate_memory(
    spec: LLMSpec,
    tokens: int,
    dtype: str = "float32",
    layers: int | None = None,
    encoder_dim: int = 0,
) -> MemoryEstimate:
    """Parameters x bytes + KV cache + the largest transient activations of one layer.

    Attention scores are counted as if materialised (heads x T x T in float32): a fused
    kernel needs less, so the estimate errs on the safe side.
    """
    k = spec.layers if layers is None else layers
    nbytes = DTYPES[dtype_name(dtype)].itemsize
    params = spec.non_layer_params + k * spec.layer_params
    if encoder_dim:
        params += encoder_dim * spec.hidden + spec.hidden * spec.hidden + 2 * spec.hidden
    kv = 2 * k * spec.kv_heads * spec.head_dim * tokens * nbytes
    act = tokens * (6 * spec.hidden + 3 * spec.intermediate) * nbytes
    act += (
        spec.heads * tokens * tokens * 4 + 4 * spec.vocab * nbytes + tokens * encoder_dim * nbytes
    )
    return MemoryEstimate(params * nbytes, kv, act, _RUNTIME_OVERHEAD_BYTES)


def available_memory_bytes(device: str = "cpu") -> int:
    """Memory a new model can use on ``device`` (free GPU memory, or available RAM)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(
    spec: LLMSpec,
    tokens: int,
    dtype: str = "float32",
    layers: int | None = None,
    device: str = "cpu",
    encoder_dim: int = 0,
    available: int | None = None,
) -> MemoryEstimate:
    """Raise UserError naming the need and the options if the build would not fit."""
    est = estimate_memory(spec, tokens, dtype, layers, encoder_dim)
    avail = available_memory_bytes(device) if available is None else available
    if est.total_bytes <= avail:
        return est
    options = []
    for smaller in ("bfloat16", "float16"):
        if DTYPES[smaller].itemsize < DTYPES[dtype_name(dtype)].itemsize:
            alt = estimate_memory(spec, tokens, smaller, layers, encoder_dim)
            if alt.total_bytes <= avail:
                options.append(f"dtype={smaller} (~{alt.total_gib:.1f} GiB)")
                break
    for k in (8, 4, 2, 1):
        if k < (spec.layers if layers is None else layers):
            alt = estimate_memory(spec, tokens, dtype, k, encoder_dim)
            if alt.total_bytes <= avail:
                options.append(f"sample_layers={k} (~{alt.total_gib:.1f} GiB, estimated result)")
                break
    options.append("a machine with more memory")
    built = spec.layers if layers is None else layers
    raise UserError(
        f"{spec.name} ({built} of {spec.layers} layers) in {dtype_name(dtype)} at {tokens} tokens needs about "
        f"{est.total_gib:.1f} GiB but {avail / 2**30:.1f} GiB is available on {device}; use "
        + " or ".join(options)
    )


# --------------------------------------------------------------------------- filling


def fast_fill_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill parameters with well-conditioned values (see :func:`harness.init.fill_`)."""
    from harness.init import fill_

    return fill_(model, seed=seed)


def _reset_rotary_(model: nn.Module) -> None:
    # to_empty leaves inv_freq (a non-persistent buffer) as garbage: recompute it by building
    # a fresh rotary module (cheap, no weights) and copying its buffers, in float32. Gemma 3
    # keeps one `<layer type>_inv_freq` per attention type and a scalar `embed_scale` buffer.
    for m in model.modules():
        names = [n for n, _ in m.named_buffers(recurse=False) if n.endswith("inv_freq")]
        if names and hasattr(m, "config"):
            fresh = type(m)(config=m.config)
            device = getattr(m, names[0]).device
            for bname, buf in fresh.named_buffers(recurse=False):
                setattr(m, bname, buf.to(device=device))
        embed_scale = getattr(m, "embed_scale", None)
        if isinstance(embed_scale, torch.Tensor) and hasattr(m, "scalar_embed_scale"):
            embed_scale.fill_(float(cast(float, m.scalar_embed_scale)))


def hf_classes(arch: str) -> tuple[type, type]:
    if arch == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        return Qwen2Config, Qwen2ForCausalLM
    if arch == "qwen3":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3Config, Qwen3ForCausalLM
    if arch == "gemma3_text":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        return Gemma3TextConfig, Gemma3ForCausalLM
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaConfig, LlamaForCausalLM


def hf_config(spec: LLMSpec, layers: int | None = None, attn_implementation: str = "sdpa"):
    """The transformers config for ``spec`` (optionally with ``layers`` decoder layers)."""
    config_cls, _ = hf_classes(spec.arch)
    kwargs = spec.hf_config_dict()
    if layers is not None:
        kwargs["num_hidden_layers"] = layers
    return config_cls(**kwargs, attn_implementation=attn_implementation)


@dataclass
class BuiltLLM:
    """A model ready for prefill, and how it was built."""

    model: nn.Module
    spec: LLMSpec
    layers: int
    dtype: str
    device: str
    build_s: float
    weights: str  # 'random' or the directory real weights came from


def build_torch_llm(
    spec: LLMSpec,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    layers: int | None = None,
    seed: int = 0,
    weights_dir: str | Path | None = None,
    attn_implementation: str = "sdpa",
) -> BuiltLLM:
    """Build ``spec`` (or its first ``layers`` layers) with random, well-conditioned weights,
    or with real weights from ``weights_dir`` (``*.safetensors``). Returns it in eval mode
    with gradients off. Memory is not checked here: callers use :func:`check_memory`.
    """
    t0 = time.perf_counter()
    torch_dtype = resolve_dtype(dtype, device)
    device = check_device(device)
    config = hf_config(spec, layers, attn_implementation)
    _, model_cls = hf_classes(spec.arch)
    with torch.device("meta"):
        model = model_cls(config)
    # Cast on meta (free) before allocating, so a bf16 model never exists in float32.
    model = model.to(dtype=torch_dtype).to_empty(device=device)
    if spec.tied:
        model.lm_head.weight = model.get_input_embeddings().weight
    _reset_rotary_(model)
    fast_fill_(model, seed)
    source = "random"
    if weights_dir is not None:
        load_weights_(model, Path(weights_dir))
        source = str(weights_dir)
    model.eval().requires_grad_(False)
    return BuiltLLM(
        model,
        spec,
        config.num_hidden_layers,
        dtype_name(dtype),
        device,
        time.perf_counter() - t0,
        source,
    )


def load_weights_(model: nn.Module, directory: Path) -> None:
    """Copy real weights from ``directory/*.safetensors`` into ``model`` (safe format only:
    no pickles are ever loaded). Layers the model does not have (layer sampling) are skipped.
    """
    files = sorted(directory.glob("*.safetensors")) if directory.is_dir() else []
    if not files:
        raise UserError(
            f"no *.safetensors files in {str(directory)!r}; real weights must be in safetensors format"
        )
    from safetensors.torch import load_file

    own = model.state_dict()
    loaded = 0
    with torch.no_grad():
        for f in files:
            for key, tensor in load_file(str(f)).items():
                if key in own and own[key].shape == tensor.shape:
                    own[key].copy_(tensor)
                    loaded += 1
    if loaded == 0:
        raise UserError(
            f"no tensor in {str(directory)!r} matches the model's parameter names and shapes"
        )


@torch.no_grad()
def forward_is_finite(model: PreTrainedModel, tokens: int = 8) -> bool:
    """Run a short prefill with embedding-scale inputs and check the logits are finite."""
    emb = cast(nn.Embedding, model.get_input_embeddings()).weight
    x = emb[torch.arange(tokens, device=emb.device) % emb.shape[0]].unsqueeze(0)
    out = model(inputs_embeds=x, use_cache=True, logits_to_keep=1)
    return bool(torch.isfinite(out.logits).all())
