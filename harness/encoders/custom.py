"""Custom encoders from one Hydra/OmegaConf config: a ``_target_`` factory becomes a zoo member.

The config (a YAML file, a dict or a DictConfig)::

    name: tiny-convnet              # zoo name (required); aliases: [...] optional
    import_path: .                  # optional: directory (relative to the YAML) put on sys.path
    probe_resolution: 128           # optional: side of the probing forward pass (default 128)
    native_resolution: 256          # optional (default 2 x probe_resolution)
    min_resolution: 64              # optional (default: the probed stride)
    max_resolution: 4096            # optional
    resolutions: [256, 512]         # optional: resolutions a sweep/the zoo lists
    params_m_paper: null            # optional: a published count to compare against
    token_reduction: {pixel_shuffle: 2}  # optional: the VLM token-rule hooks (harness/vlm):
                                    # pixel_shuffle: s (Idefics3 / InternVL) or avg_pool: k (Gemma 3)
                                    # applied to the model's token grid; probing sees the result
    model:                          # what hydra.utils.instantiate builds
      _target_: my_encoder.build_tiny_convnet
      width: 32

``model`` may instead instantiate a transformers vision *config* (e.g.
``transformers.ConvNextConfig``); the model is then ``AutoModel.from_config``. A factory that
accepts ``resolution`` receives the resolution being built (for position embeddings); a
transformers config gets ``image_size`` set to it.

:func:`register_custom_encoder` builds the model once at ``probe_resolution`` and at twice it,
runs real forward passes, and derives stride, out_dim, token rule and parameter count from
the output shapes -- nothing is taken on trust from the config.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from harness.encoders.zoo import LOAD_HOOKS, EncoderSpec, get_spec, register, to_tokens
from harness.errors import UserError

META_KEYS = {
    "name",
    "aliases",
    "import_path",
    "probe_resolution",
    "native_resolution",
    "min_resolution",
    "max_resolution",
    "resolutions",
    "params_m_paper",
    "description",
    "model",
    "token_reduction",
}
#: token reductions a custom encoder may name (the same ones the VLM families use)
REDUCTIONS = ("pixel_shuffle", "avg_pool")
_LOADED: dict[str, EncoderSpec] = {}


def load_config(
    cfg: str | os.PathLike[str] | Mapping[str, Any] | Any,
) -> tuple[dict[str, Any], Path | None]:
    """Read ``cfg`` (YAML path, dict or DictConfig) into a plain dict; return it and its file."""
    from omegaconf import DictConfig, OmegaConf

    path: Path | None = None
    if isinstance(cfg, (str, os.PathLike)):
        path = Path(cfg)
        if not path.is_file():
            raise UserError(f"encoder config not found: {path}")
        try:
            cfg = OmegaConf.load(path)
        except Exception as e:
            raise UserError(f"cannot read encoder config {path}: {e}") from e
    if isinstance(cfg, DictConfig):
        data = OmegaConf.to_container(cfg, resolve=True)
    elif isinstance(cfg, Mapping):
        data = dict(cfg)
    else:
        raise UserError(
            f"an encoder config must be a YAML file or a mapping, got {type(cfg).__name__}"
        )
    if isinstance(data, dict) and isinstance(data.get("model"), DictConfig):  # e.g. a sweep's node
        data["model"] = OmegaConf.to_container(data["model"], resolve=True)
    if not isinstance(data, dict) or not data.get("name"):
        raise UserError(f"encoder config {path or ''} needs a 'name'".replace("  ", " "))
    if "model" not in data:
        # Flat form: `_target_` and its arguments at the top level, next to the zoo keys.
        if "_target_" not in data:
            raise UserError(
                f"encoder config {data['name']!r} needs 'model: {{_target_: ...}}' (or a top-level _target_)"
            )
        data = {
            **{k: v for k, v in data.items() if k in META_KEYS},
            "model": {k: v for k, v in data.items() if k not in META_KEYS},
        }
    if not isinstance(data["model"], dict) or "_target_" not in data["model"]:
        raise UserError(f"encoder config {data['name']!r}: 'model' must have a _target_")
    return cast("dict[str, Any]", data), path  # YAML/mapping keys of an encoder config are names


def _accepts(fn: Callable[..., Any], arg: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return arg in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def check_reduction(reduction: Any) -> tuple[str, int] | None:
    """``{pixel_shuffle: s}`` / ``{avg_pool: k}`` -> (kind, factor); anything else is a UserError."""
    if not reduction:
        return None
    if not isinstance(reduction, Mapping) or len(reduction) != 1:
        raise UserError(
            f"token_reduction must be one of {{pixel_shuffle: s}} or {{avg_pool: k}}, got {reduction!r}"
        )
    kind, factor = next(iter(reduction.items()))
    if kind not in REDUCTIONS:
        from harness.errors import suggest

        raise UserError(suggest(str(kind), REDUCTIONS, "token_reduction"))
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise UserError(f"token_reduction.{kind} must be a positive integer, got {factor!r}")
    return str(kind), int(factor)


def with_reduction(module: Any, reduction: tuple[str, int] | None) -> Any:
    """``module`` followed by a token-grid reduction (its tokens stay ``[B, N, C]``)."""
    if reduction is None:
        return module
    from torch import nn

    kind, factor = reduction

    class Reduced(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, images: Any) -> Any:
            import math

            import torch.nn.functional as F

            from harness.encoders.tokens import pixel_shuffle

            tokens = to_tokens(self.inner(images))
            if kind == "pixel_shuffle":
                return pixel_shuffle(tokens, factor)
            b, n, c = tokens.shape
            g = math.isqrt(n)
            grid = tokens.transpose(1, 2).reshape(b, c, g, g)
            return F.avg_pool2d(grid, factor, factor).flatten(2).transpose(1, 2)

    return Reduced(module)


def make_builder(
    model_cfg: dict[str, Any],
    import_path: str | None = None,
    reduction: tuple[str, int] | None = None,
) -> Callable[..., Any]:
    """A ``builder(resolution=...) -> nn.Module`` that instantiates ``model_cfg`` with Hydra."""
    from hydra.utils import get_object, instantiate

    if import_path and import_path not in sys.path:
        # The factory's module lives next to the config, not in an installed package.
        sys.path.insert(0, import_path)
    hydra_log = logging.getLogger("hydra.utils")  # get_object logs the error it raises, too
    level = hydra_log.level
    hydra_log.setLevel(logging.CRITICAL)
    try:
        target = get_object(model_cfg["_target_"])
    except Exception as e:
        reason = " ".join(str(e).split())
        raise UserError(f"cannot import _target_ {model_cfg['_target_']!r}: {reason}") from e
    finally:
        hydra_log.setLevel(level)
    takes_res = callable(target) and not isinstance(target, type) and _accepts(target, "resolution")

    def builder(resolution: int | None = None) -> Any:
        overrides = {"resolution": resolution} if takes_res and resolution else {}
        try:
            obj = instantiate(model_cfg, _convert_="all", **overrides)
        except Exception as e:
            raise UserError(f"instantiating {model_cfg['_target_']!r} failed: {e}") from e
        return with_reduction(_as_module(obj, resolution), reduction)

    return builder


def _as_module(obj: Any, resolution: int | None) -> Any:
    from torch import nn

    if isinstance(obj, nn.Module):
        return obj
    try:
        from transformers import AutoModel, PretrainedConfig
    except ImportError:  # pragma: no cover
        pass
    else:
        if isinstance(obj, PretrainedConfig):
            from harness.encoders.hf import attach_position_reset

            if resolution and hasattr(obj, "image_size"):
                obj.image_size = resolution
            return attach_position_reset(AutoModel.from_config(obj))
    raise UserError(
        f"a custom encoder factory must return an nn.Module or a transformers config, got {type(obj).__name__}"
    )


def _probe(builder: Callable[..., Any], resolution: int) -> tuple[int, int, int]:
    """(tokens, out_dim, params) from a real forward pass at ``resolution``."""
    import torch

    from harness.encoders.zoo import fuse_branches
    from harness.init import materialize

    try:
        model = materialize(lambda: builder(resolution=resolution))
        fuse_branches(model)
        with torch.inference_mode():
            out = to_tokens(model(torch.rand(1, 3, resolution, resolution) * 2 - 1))
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"probing forward pass at {resolution}px failed: {type(e).__name__}: {e}"
        ) from e
    return int(out.shape[1]), int(out.shape[2]), sum(p.numel() for p in model.parameters())


def infer_token_rule(r: int, t1: int, t2: int) -> tuple[int | None, int, int | None]:
    """From tokens ``t1`` at side ``r`` and ``t2`` at ``2r``: (stride, extra tokens, fixed count).

    Grid encoders give ``(r/s)^2 + k`` (k = e.g. a CLS token); resamplers a fixed count.
    """
    if t1 == t2:
        return None, 0, t1
    grid_sq = (t2 - t1) / 3  # (2g)^2 - g^2 = 3 g^2
    g = round(math.sqrt(grid_sq)) if grid_sq > 0 else 0
    if g <= 0 or 3 * g * g != t2 - t1 or r % g:
        raise UserError(
            f"cannot infer a token grid: {t1} tokens at {r}px and {t2} at {2 * r}px are not (side/stride)^2 (+ constant)"
        )
    return r // g, t1 - g * g, None


def register_custom_encoder(
    cfg: str | os.PathLike[str] | Mapping[str, Any] | Any, *, replace: bool = True
) -> EncoderSpec:
    """Probe and register the encoder described by ``cfg``; return its :class:`EncoderSpec`."""
    data, path = load_config(cfg)
    from harness.encoders.zoo import ENCODERS

    for n in (str(data["name"]).lower(), *(str(a) for a in data.get("aliases", ()) or ())):
        if n in ENCODERS and ENCODERS.get(n).family != "custom":
            raise UserError(
                f"custom encoder name {n!r} is taken by the built-in {ENCODERS.get(n).name!r} "
                "(its costs and tokens would mix with the custom model's); pick another name"
            )
    import_path = data.get("import_path", ".")
    base = path.parent if path else Path.cwd()
    import_dir = str((base / import_path).resolve()) if import_path is not None else None
    builder = make_builder(data["model"], import_dir, check_reduction(data.get("token_reduction")))
    r = int(data.get("probe_resolution", 128))
    t1, out_dim, params = _probe(builder, r)
    t2, out_dim2, _ = _probe(builder, 2 * r)
    if out_dim2 != out_dim:
        raise UserError(
            f"custom encoder {data['name']!r} changes channels with resolution ({out_dim} vs {out_dim2})"
        )
    stride, extra, fixed = infer_token_rule(r, t1, t2)
    step = stride or 1
    spec = EncoderSpec(
        name=str(data["name"]).lower(),
        family="custom",
        stride=step,
        out_dim=out_dim,
        builder=builder,
        takes_resolution=True,
        head_kwarg=False,
        native_resolution=int(data.get("native_resolution", 2 * r)),
        min_resolution=int(data.get("min_resolution", step)),
        max_resolution=int(data.get("max_resolution", 4096)),
        params_m_paper=data.get("params_m_paper"),
        params_include_head="as built by the factory (probed)",
        paper_resolutions=tuple(int(x) for x in data.get("resolutions", ()) or ()),
        aliases=tuple(data.get("aliases", ()) or ()),
        description=str(data.get("description", f"custom encoder {data['model']['_target_']}")),
        fixed_tokens=fixed,
        extra_tokens=extra,
        probed_params=params,
        source=str(path) if path else "config",
    )
    register(spec, replace=replace)
    if path:
        _LOADED[str(path.resolve())] = spec
    return spec


def load_env_encoders() -> list[EncoderSpec]:
    """Register every config listed in ``$VLM_PARETO_ENCODERS`` (``os.pathsep``-separated), once.

    Lets a separate process (a Hydra sweep job) see the same custom encoders.
    """
    specs = []
    for entry in filter(None, os.environ.get("VLM_PARETO_ENCODERS", "").split(os.pathsep)):
        key = str(Path(entry).resolve())
        specs.append(_LOADED.get(key) or register_custom_encoder(entry))
    return specs


LOAD_HOOKS.append(load_env_encoders)


def get_or_register(name_or_config: str) -> EncoderSpec:
    """A zoo name, or a path to a YAML config (registered on first use)."""
    if str(name_or_config).endswith((".yaml", ".yml")):
        key = str(Path(name_or_config).resolve())
        return _LOADED.get(key) or register_custom_encoder(name_or_config)
    return get_spec(name_or_config)
