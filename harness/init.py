"""Cheap, well-conditioned random weights for latency measurement.

Latency does not depend on weight values, but it does depend on their *scale*: uninitialised
memory can hold NaNs or denormals, and badly scaled weights make activations under/overflow
into denormals, which slow CPU arithmetic. So models are built without the library's costly
default initialisation (on the ``meta`` device) and then filled here in one fast pass with
variance-preserving values (uniform, std = 1/sqrt(fan_in)), unit norms and neutral
batch-norm statistics.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


@contextlib.contextmanager
def meta_device() -> Iterator[None]:
    """Construct modules on the meta device: no memory, no default initialisation."""
    with torch.device("meta"):
        yield


def _fan_in(p: torch.Tensor) -> int:
    if p.dim() < 2:
        return max(p.numel(), 1)
    return max(p[0].numel(), 1)  # out x in x kh x kw -> in * kh * kw (per group)


@torch.no_grad()
def fill_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter and buffer of ``module`` in place with well-conditioned values.

    Names decide the rule: biases 0; norm weights 1 (biases 0); batch-norm running mean 0 and
    variance 1; embeddings N(0, 0.02)-scale; everything else uniform with std 1/sqrt(fan_in).
    Layer-scale style vectors (1-D "gamma"/"layer_scale") get 1e-1 so residual branches stay
    in range through deep stacks.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    norm_param_ids: set[int] = set()
    for m in module.modules():
        if isinstance(m, _NORM_TYPES) or type(m).__name__.lower().endswith(("norm", "norm2d", "rmsnorm")):
            for p in m.parameters(recurse=False):
                norm_param_ids.add(id(p))
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if id(p) in norm_param_ids:
            p.fill_(1.0 if leaf == "weight" else 0.0)
        elif leaf == "bias" or leaf.endswith("_bias"):
            p.zero_()
        elif "layer_scale" in name or leaf in ("gamma", "scale"):
            p.fill_(0.1)
        elif "embed_tokens" in name or "wte" in name or (p.dim() == 2 and "embed" in name and "patch" not in name):
            _uniform(p, 0.02, gen)
        else:
            _uniform(p, 1.0 / math.sqrt(_fan_in(p)), gen)
    return module


def _uniform(p: torch.Tensor, std: float, gen: torch.Generator) -> None:
    bound = std * math.sqrt(3.0)
    if p.device.type == "cpu":
        p.uniform_(-bound, bound, generator=gen)
    else:  # generators are per device; values do not matter beyond their scale
        p.uniform_(-bound, bound)


def materialize(build: Callable[[], M], device: str | torch.device = "cpu", dtype: torch.dtype | None = None, seed: int = 0) -> M:
    """Build ``build()`` on the meta device, allocate it on ``device`` and fill it."""
    with meta_device():
        model = build()
    model = model.to_empty(device=device)
    # Non-persistent buffers (e.g. rotary inv_freq) are not restored by to_empty: let modules
    # that know how recompute them.
    for m in model.modules():
        reset = getattr(m, "_vlm_pareto_reset_buffers", None)
        if callable(reset):
            reset()
    fill_(model, seed=seed)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.eval()
