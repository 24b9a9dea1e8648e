"""Cheap, well-conditioned random weights for latency measurement.

Latency does not depend on weight values, but it does depend on their *scale*: uninitialised
memory can hold NaNs or denormals, and badly scaled weights make activations under/overflow
into denormals, which slow CPU arithmetic. So models are built without the library's costly
default initialisation (on the ``meta`` device) and then filled here in one fast pass with
variance-preserving values (std = 1/sqrt(fan_in)), unit norms and neutral
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


def _fan_in(p: torch.Tensor) -> int:
    if p.dim() < 2:
        return max(p.numel(), 1)
    return max(p[0].numel(), 1)  # out x in x kh x kw -> in * kh * kw (per group)


#: length of the random block tiled over every tensor (filling 7B parameters with a fresh
#: random draw each would take minutes; values only need the right scale). A prime, so the
#: rows of a weight matrix (power-of-two widths) never repeat the same pattern.
_TILE = 65537


def _block(seed: int) -> torch.Tensor:
    """Unit-std random values whose magnitudes stay away from zero (no denormals, even in fp16)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    u = torch.rand(_TILE, generator=gen) * 2 - 1
    base = torch.sign(u) * (0.05 + 0.95 * u.abs())
    base /= base.std()
    return torch.cat([base, base])  # doubled: any offset gives a contiguous _TILE-long view


def _tile_(p: torch.Tensor, block: torch.Tensor) -> None:
    flat = p.view(-1)
    n, b = flat.numel(), block.numel()
    block = block.to(device=p.device, dtype=p.dtype)
    full = n // b
    if full:
        flat[: full * b].view(full, b).copy_(block.expand(full, b))
    if n - full * b:
        flat[full * b :].copy_(block[: n - full * b])


@torch.no_grad()
def fill_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter of ``module`` (and batch-norm statistics) in place with
    well-conditioned values; other buffers are left as they are.

    Names decide the rule: biases 0; norm weights 1 (biases 0); batch-norm running mean 0 and
    variance 1; token embeddings at embedding-table scale (std 0.02); layer-scale vectors
    0.1 so residual branches stay in range through deep stacks; everything else std
    1/sqrt(fan_in) (variance preserving). Values come from one random block tiled with a
    per-tensor phase, so filling is as fast as a memory copy. Tied parameters are filled once.
    """
    base2 = _block(seed)
    norm_param_ids: set[int] = set()
    for m in module.modules():
        if isinstance(m, _NORM_TYPES) or type(m).__name__.lower().endswith(
            ("norm", "norm2d", "rmsnorm")
        ):
            for p in m.parameters(recurse=False):
                norm_param_ids.add(id(p))
            if (
                isinstance(m, nn.modules.batchnorm._BatchNorm)
                and m.running_mean is not None
                and m.running_var is not None
            ):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    seen: set[int] = set()
    for i, (name, p) in enumerate(module.named_parameters(remove_duplicate=False)):
        if id(p) in seen:
            continue
        seen.add(id(p))
        leaf = name.rsplit(".", 1)[-1]
        if id(p) in norm_param_ids:
            p.fill_(1.0 if leaf == "weight" else 0.0)
        elif leaf == "bias" or leaf.endswith("_bias"):
            p.zero_()
        elif "layer_scale" in name or leaf in ("gamma", "scale"):
            p.fill_(0.1)
        else:
            is_embedding = (
                "embed_tokens" in name
                or "wte" in name
                or (p.dim() == 2 and "embed" in name and "patch" not in name)
            )
            std = 0.02 if is_embedding else 1.0 / math.sqrt(_fan_in(p))
            off = (i * 7919) % _TILE  # a different phase per tensor
            _tile_(p, base2[off : off + min(p.numel(), _TILE)] * std)
    return module


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create *parameters* on the meta device while modules are built (no memory, and their
    default initialisation runs on meta, i.e. costs nothing); *buffers* are made as the module
    makes them, so index tables, masks and constants keep their real values.

    (Building everything under ``torch.device("meta")`` loses buffer values: ``to_empty`` then
    leaves them as uninitialised memory, and a custom encoder's ``eye`` or index buffer held
    garbage.) Parameters a module creates on meta itself stay there.
    """
    original = nn.Module.register_parameter

    def register(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(self, name, param)
        p = self._parameters.get(name)
        if p is not None and p.device.type != "meta":
            self._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def materialize(
    build: Callable[[], M],
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> M:
    """Build ``build()`` with its parameters on the meta device, allocate it on ``device``,
    fill the parameters (:func:`fill_`) and keep the buffers the module computed."""
    with parameters_on_meta():
        model = build()
    # Buffers built for real keep their values across to_empty (which reallocates everything).
    kept = {
        name: b.detach().clone()
        for name, b in model.named_buffers(remove_duplicate=False)
        if b.device.type != "meta"
    }
    model = model.to_empty(device=device)
    with torch.no_grad():
        for name, b in model.named_buffers(remove_duplicate=False):
            if name in kept:
                b.copy_(kept[name])
    # Buffers a builder made on meta itself (and non-persistent ones such as rotary inv_freq)
    # hold no values: let modules that know how recompute them.
    for m in model.modules():
        reset = getattr(m, "_vlm_pareto_reset_buffers", None)
        if callable(reset):
            reset()
    # to_empty unties shared parameters (e.g. a tied LM head): tie them again before filling.
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()
    fill_(model, seed=seed)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.eval()
