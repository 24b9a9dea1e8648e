"""Work per configuration, counted on the real modules on the meta device (no weights).

A :class:`Cost` is what one part of a TTFT costs, by operator class:

- ``dense_flops``: convolutions with ``groups == 1`` (or grouped but not depthwise) and
  matrix products against weights (``mm``/``addmm``), 2 FLOPs per multiply-add;
- ``dw_flops``: depthwise convolutions (``groups == in_channels``), memory-bound almost
  everywhere, so they get their own efficiency factor;
- ``attn_flops``: activation-by-activation products (``bmm``/``baddbmm`` and fused
  scaled-dot-product attention), quadratic in tokens;
- ``weight_elems``: parameters read once per forward pass;
- ``act_elems``: elements written by every non-view operator (each is read again later);
- ``ops``: operators executed (views excluded): a per-op overhead term.

Encoders are counted by running the built module on a ``meta`` tensor under a
``TorchDispatchMode``; LLM prefill by running the transformers model built with 1 and 2
decoder layers at three token counts and extrapolating (every feature is exactly quadratic
in tokens and affine in layers). The projector is a two-layer MLP, counted in closed form.

Built-in encoders at the usual resolutions and the built-in LLMs ship precomputed in
``harness/data/costs.json``; anything else is counted on first need (``compute=True``: torch,
meta device) and cached in ``$VLM_PARETO_CACHE`` (default ``~/.cache/vlm-pareto``) as
``costs-v<VERSION>.json``. ``compute=False`` (``choose``/``report``, which never import torch)
reads only the shipped table and the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from unittest import mock

#: Bump when the counting rules change: shipped and cached tables of another version are ignored.
COST_VERSION = 1
SHIPPED_FILE = "costs.json"
FEATURES: tuple[str, ...] = (
    "dense_flops",
    "dw_flops",
    "attn_flops",
    "weight_elems",
    "act_elems",
    "ops",
)

#: Aten ops that only re-describe memory (no work, no kernel on any backend we model).
_VIEW_OPS = frozenset(
    {
        "view",
        "_unsafe_view",
        "t",
        "transpose",
        "permute",
        "expand",
        "reshape",
        "unsqueeze",
        "squeeze",
        "as_strided",
        "alias",
        "detach",
        "slice",
        "select",
        "split",
        "split_with_sizes",
        "unbind",
        "flatten",
        "unflatten",
        "chunk",
        "narrow",
        "lift_fresh",
        "empty",
        "empty_like",
        "_to_copy",
        "lift_fresh_copy",
        "new_empty",
        "expand_as",
        "view_as",
        "contiguous",
        "sym_size",
        "sym_numel",
        "sym_stride",
        "sym_storage_offset",
        "dim",
        "is_same_size",
        "_reshape_alias",
        "arange",
        "zeros",
        "ones",
        "full",
        "scalar_tensor",
        "zeros_like",
        "ones_like",
        "full_like",
    }
)


@dataclass(frozen=True)
class Cost:
    """Work of one part (or a sum of parts); see the module docstring for the fields."""

    dense_flops: float = 0.0
    dw_flops: float = 0.0
    attn_flops: float = 0.0
    weight_elems: float = 0.0
    act_elems: float = 0.0
    ops: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(getattr(self, f) + getattr(other, f) for f in FEATURES))

    def scaled(self, k: float, *, weights: float | None = None, ops: float | None = None) -> Cost:
        """``k`` times the work; weights/op count scale by their own factors (default ``k``)."""
        return Cost(
            self.dense_flops * k,
            self.dw_flops * k,
            self.attn_flops * k,
            self.weight_elems * (k if weights is None else weights),
            self.act_elems * k,
            self.ops * (k if ops is None else ops),
        )

    @property
    def gflops(self) -> float:
        return (self.dense_flops + self.dw_flops + self.attn_flops) / 1e9

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cost:
        return cls(**{f.name: float(d.get(f.name, 0.0)) for f in fields(cls)})


# --------------------------------------------------------------------------- counting


def _numel(t: Any) -> int:
    return int(t.numel()) if hasattr(t, "numel") and hasattr(t, "shape") else 0


def _prod(shape: Iterable[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def count_call(fn: Any, *args: Any, **kwargs: Any) -> tuple[Cost, Any]:
    """Run ``fn(*args, **kwargs)`` (meta tensors) and count its work by operator class."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    acc = dict.fromkeys(FEATURES, 0.0)
    aten = torch.ops.aten

    class _Counter(TorchDispatchMode):
        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            name = func.overloadpacket.__name__
            if name in _VIEW_OPS or name.endswith("_") and name[:-1] in _VIEW_OPS:
                return out
            acc["ops"] += 1
            outs, _ = tree_flatten(out)
            acc["act_elems"] += sum(_numel(o) for o in outs)
            packet = func.overloadpacket
            if packet is aten.convolution:
                x, w = args[0], args[1]
                groups = int(args[8]) if len(args) > 8 else int(kwargs.get("groups", 1))
                per_out = _prod(w.shape[1:])  # (in / groups) x kh x kw
                flops = 2.0 * _numel(outs[0]) * per_out
                depthwise = groups > 1 and groups == int(x.shape[1])
                acc["dw_flops" if depthwise else "dense_flops"] += flops
            elif packet in (aten.mm, aten.addmm):
                a, b = (args[1], args[2]) if packet is aten.addmm else (args[0], args[1])
                acc["dense_flops"] += 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
            elif packet in (aten.bmm, aten.baddbmm):
                a, b = (args[1], args[2]) if packet is aten.baddbmm else (args[0], args[1])
                acc["attn_flops"] += 2.0 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
            elif name.startswith("_scaled_dot_product") or name == "scaled_dot_product_attention":
                q, k = args[0], args[1]
                acc["attn_flops"] += 4.0 * _prod(q.shape[:-1]) * k.shape[-2] * q.shape[-1]
            return out

    with torch.no_grad(), _Counter():
        result = fn(*args, **kwargs)
    return Cost(**acc), result


def _params(module: Any) -> int:
    return sum(int(p.numel()) for p in module.parameters())


def count_encoder_tile(name: str, tile_resolution: int) -> Cost:
    """One image of side ``tile_resolution`` through encoder ``name`` (reparameterized)."""
    import torch

    from harness.encoders.zoo import (
        builder_call_kwargs,
        builder_fn,
        fuse_branches,
        get_spec,
        to_tokens,
    )

    spec = get_spec(name)
    with torch.device("meta"):
        model = builder_fn(spec)(**builder_call_kwargs(spec, tile_resolution, False))
        fuse_branches(model)
        model.eval()
        x = torch.empty(1, 3, tile_resolution, tile_resolution)
        cost, _ = count_call(lambda: to_tokens(model(x)))
    return Cost(**{**cost.to_dict(), "weight_elems": float(_params(model))})


def _llm_forward_cost(spec: Any, layers: int, tokens: int) -> Cost:
    import torch

    from harness.llms.build import hf_classes, hf_config

    config = hf_config(spec, layers, "sdpa")
    _, model_cls = hf_classes(spec.arch)
    with torch.device("meta"):
        model = model_cls(config).eval()
        x = torch.empty(1, tokens, spec.hidden)
        # transformers inspects position ids for packed sequences (a value read: impossible on
        # meta tensors); one unpacked sequence is what the timed prefill runs.
        with mock.patch(
            "transformers.masking_utils.find_packed_sequence_indices", return_value=None
        ):
            cost, _ = count_call(lambda: model(inputs_embeds=x, use_cache=False, logits_to_keep=1))
        params = _params(model) - (spec.vocab * spec.hidden if spec.tied else 0)
    return Cost(**{**cost.to_dict(), "weight_elems": float(params)})


_POLY_TOKENS = (32, 64, 128)


def count_llm_poly(llm: Any) -> dict[str, list[float]]:
    """Per feature, ``[c0, c1, c2]`` with feature(T) = c0 + c1 T + c2 T^2 for the whole model."""
    import numpy as np

    from harness.llms.zoo import get_llm_spec

    spec = get_llm_spec(llm)
    vand = np.array([[1.0, t, t * t] for t in _POLY_TOKENS])
    per_layers = {}
    for layers in (1, 2):
        ys = [_llm_forward_cost(spec, layers, t).to_dict() for t in _POLY_TOKENS]
        per_layers[layers] = {
            f: np.linalg.solve(vand, np.array([y[f] for y in ys])) for f in FEATURES
        }
    out = {}
    for f in FEATURES:
        one, two = per_layers[1][f], per_layers[2][f]
        coef = one + (spec.layers - 1) * (two - one)
        out[f] = [float(round(c, 6)) for c in coef]
    return out


def projector_cost(tokens: int, in_dim: int, hidden: int) -> Cost:
    """Two-layer MLP ``in_dim -> hidden -> hidden`` with GELU, over ``tokens`` tokens."""
    w = in_dim * hidden + hidden * hidden
    return Cost(
        dense_flops=2.0 * tokens * w,
        weight_elems=float(w + 2 * hidden),
        act_elems=float(tokens * hidden * 3),
        ops=3.0,
    )


# --------------------------------------------------------------------------- tables


@lru_cache(maxsize=1)
def shipped_table() -> dict[str, Any]:
    """The precomputed table shipped with the package (empty if absent or another version)."""
    try:
        text = (resources.files("harness") / "data" / SHIPPED_FILE).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return {"version": COST_VERSION, "encoders": {}, "llms": {}}
    data = json.loads(text)
    if data.get("version") != COST_VERSION:
        return {"version": COST_VERSION, "encoders": {}, "llms": {}}
    return data


def cache_path() -> Path:
    root = os.environ.get("VLM_PARETO_CACHE") or str(Path.home() / ".cache" / "vlm-pareto")
    return Path(root) / f"costs-v{COST_VERSION}.json"


_MEMO: dict[str, tuple[float, dict[str, Any]]] = {}


def _load_cache() -> dict[str, Any]:
    """The disk cache (re-read only when the file changed: the search asks it per proposal)."""
    p = cache_path()
    try:
        mtime = p.stat().st_mtime
    except OSError:
        return {"version": COST_VERSION, "encoders": {}, "llms": {}}
    hit = _MEMO.get(str(p))
    if hit is not None and hit[0] == mtime:
        return json.loads(json.dumps(hit[1]))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": COST_VERSION, "encoders": {}, "llms": {}}
    if not isinstance(data, dict) or data.get("version") != COST_VERSION:
        return {"version": COST_VERSION, "encoders": {}, "llms": {}}
    data.setdefault("encoders", {})
    data.setdefault("llms", {})
    _MEMO[str(p)] = (mtime, data)
    return json.loads(json.dumps(data))


def _save_cache(data: dict[str, Any]) -> None:
    p = cache_path()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(p)
    except OSError:
        pass  # a read-only home only costs a recount next time


def _encoder_key(name: str) -> str:
    """Built-ins by name; custom encoders by name plus a hash of how they are built."""
    from harness.encoders.zoo import get_spec

    spec = get_spec(name)
    if spec.source == "builtin":
        return spec.name
    ident = repr(
        (
            spec.name,
            spec.source,
            spec.builder if isinstance(spec.builder, str) else "",
            sorted(spec.builder_kwargs.items()),
            spec.stride,
            spec.out_dim,
        )
    )
    return f"{spec.name}#{hashlib.sha1(ident.encode()).hexdigest()[:10]}"


def _encoder_entry_shipped(name: str, tile: int) -> dict[str, Any] | None:
    try:
        from harness.accuracy.keys import normalize_encoder

        canon = normalize_encoder(name)
    except Exception:  # noqa: BLE001 - unknown names fall through to the zoo
        canon = name
    return shipped_table()["encoders"].get(canon, {}).get(str(tile))


def encoder_tile_cost(name: str, tile_resolution: int, *, compute: bool = True) -> Cost | None:
    """Cost of one tile: shipped table, then the disk cache, then counted (torch) and cached."""
    hit = _encoder_entry_shipped(name, tile_resolution)
    if hit is not None:
        return Cost.from_dict(hit)
    try:
        key = _encoder_key(name)
    except Exception:  # noqa: BLE001 - not in the zoo
        if not compute:
            return None
        raise
    data = _load_cache()
    hit = data["encoders"].get(key, {}).get(str(tile_resolution))
    if hit is not None:
        return Cost.from_dict(hit)
    if not compute:
        return None
    cost = count_encoder_tile(name, tile_resolution)
    data = _load_cache()
    data["encoders"].setdefault(key, {})[str(tile_resolution)] = cost.to_dict()
    _save_cache(data)
    return cost


def _parse_tiling(tiling: str) -> tuple[int, int]:
    """(images through the encoder, grid side) of a tiling, without torch."""
    from harness.accuracy.keys import normalize_tiling

    t = normalize_tiling(tiling)
    if t == "none":
        return 1, 1
    grid, _, over = t.partition("+")
    r, c = (int(x) for x in grid.split("x"))
    return r * c + (1 if over else 0), max(r, c)


def encoder_cost(
    name: str, resolution: int, tiling: str = "none", *, compute: bool = True
) -> Cost | None:
    """Encoder work for ``resolution`` (total input side) with ``tiling``: the tiles and the
    overview run as one batch, so weights and the op count are paid once."""
    images, side = _parse_tiling(tiling)
    tile = int(resolution) // side
    one = encoder_tile_cost(name, tile, compute=compute)
    if one is None:
        return None
    return one.scaled(images, weights=1.0, ops=1.0)


def llm_poly(llm: str, *, compute: bool = True) -> dict[str, list[float]] | None:
    try:
        from harness.accuracy.keys import normalize_llm

        canon = normalize_llm(llm)
    except Exception:  # noqa: BLE001
        canon = llm
    hit = shipped_table()["llms"].get(canon)
    if hit is not None:
        return dict(hit)
    data = _load_cache()
    hit = data["llms"].get(llm)
    if hit is not None:
        return dict(hit)
    if not compute:
        return None
    poly = count_llm_poly(llm)
    data = _load_cache()
    data["llms"][llm] = poly
    _save_cache(data)
    return poly


def prefill_cost(llm: str, tokens: int, *, compute: bool = True) -> Cost | None:
    """Prefill work of ``llm`` over ``tokens`` tokens (visual + prompt), last logit only."""
    poly = llm_poly(llm, compute=compute)
    if poly is None:
        return None
    t = float(tokens)
    return Cost(
        **{f: max(0.0, c[0] + c[1] * t + c[2] * t * t) for f, c in poly.items() if f in FEATURES}
    )


def llm_hidden(llm: str) -> int | None:
    hit = shipped_table().get("llm_hidden", {}).get(llm)
    if hit is not None:
        return int(hit)
    from harness.llms.zoo import get_llm_spec

    return get_llm_spec(llm).hidden


def encoder_out_dim(name: str) -> int:
    hit = shipped_table().get("encoder_out_dim", {}).get(name)
    if hit is not None:
        return int(hit)
    from harness.encoders.zoo import encoder_out_dim as dim

    return dim(name)


def zoo_costs(
    encoders: list[dict[str, Any]], resolutions: Iterable[int] | None, llms: Iterable[str]
) -> dict[str, Any]:
    """For ``zoo --json``: adds ``costs`` {resolution: Cost dict} to each encoder row (single
    image, counted or cached) and returns the LLMs' prefill polynomials {llm: {feature: [c0, c1, c2]}}.
    ``resolutions`` None: each row's listed ``tokens`` resolutions (zoo's default)."""
    for row in encoders:
        costs: dict[str, Any] = {}
        for r in (
            resolutions if resolutions is not None else [int(k) for k in row.get("tokens", {})]
        ):
            if str(r) not in row.get("tokens", {}):
                continue
            try:
                c = encoder_tile_cost(row["name"], int(r))
            except Exception as e:  # noqa: BLE001 - listed anyway, like zoo's params
                costs[str(r)] = {"error": f"{type(e).__name__}: {e}"}
                continue
            if c is not None:
                costs[str(r)] = c.to_dict()
        row["costs"] = costs
    out: dict[str, Any] = {}
    for name in llms:
        try:
            out[name] = llm_poly(name)
        except Exception as e:  # noqa: BLE001
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    out["_formula"] = (
        "feature(T) = c0 + c1*T + c2*T^2 for T = visual + prompt tokens (prefill, last logit only)"
    )
    return out


# --------------------------------------------------------------------------- shipped table

#: Tile resolutions shipped per built-in encoder: the zoo's, the paper's, and tile sides of
#: the paper's tiled rows (2048 / 2 = 1024, 1152 / 3 = 384, 672 / 2 = 336).
SHIPPED_RESOLUTIONS = (224, 256, 320, 336, 384, 512, 672, 768, 1024, 1152, 1536, 2048)


def paper_encoder_resolutions() -> dict[str, set[int]]:
    """Encoder -> untiled resolutions the paper prints an encoder latency for. They are shipped
    even off the zoo's stride (Table 3 times FastViTHD at 224, the CLIP setting), so that the
    paper's calibration rows never depend on what a user's cache happens to hold."""
    import math

    from harness.accuracy.paper import paper_rows

    out: dict[str, set[int]] = {}
    for _, r in paper_rows().iterrows():
        if r["tiling"] == "none" and not math.isnan(r["encoder_ms"]):
            out.setdefault(str(r["encoder"]), set()).add(int(r["resolution"]))
    return out


def build_shipped_table() -> dict[str, Any]:
    """Count every built-in encoder and LLM (slow: a minute or two on meta tensors)."""
    from harness.encoders.zoo import BUILTIN_ORDER, get_spec
    from harness.llms.zoo import get_llm_spec, list_llms

    paper = paper_encoder_resolutions()
    enc: dict[str, dict[str, Any]] = {}
    for name in BUILTIN_ORDER:
        spec = get_spec(name)
        enc[name] = {}
        for r in sorted(set(SHIPPED_RESOLUTIONS) | paper.get(name, set())):
            if r < spec.min_resolution or r > spec.max_resolution:
                continue
            if not spec.floor_remainder and r % spec.stride and r not in paper.get(name, set()):
                continue
            enc[name][str(r)] = count_encoder_tile(name, r).to_dict()
    llms = {n: count_llm_poly(n) for n in list_llms()}
    return {
        "version": COST_VERSION,
        "note": "generated by `python -m harness.predict.costmodel --write`; do not edit",
        "encoders": enc,
        "llms": llms,
        "llm_hidden": {n: get_llm_spec(n).hidden for n in list_llms()},
        "encoder_out_dim": {n: get_spec(n).out_dim for n in BUILTIN_ORDER},
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="(re)generate harness/data/costs.json")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    table = build_shipped_table()
    text = json.dumps(table, indent=1, sort_keys=True)
    if args.write:
        out = Path(__file__).resolve().parents[1] / "data" / SHIPPED_FILE
        out.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
