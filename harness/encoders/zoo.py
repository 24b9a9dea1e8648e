"""The encoder zoo: one :class:`EncoderSpec` per encoder, in one :class:`Registry`.

A spec is data (no torch import): enough to validate a resolution, count tokens and name the
builder (a lazily imported ``"module:attr"`` target, or a callable for custom encoders).
Building goes through :func:`build_encoder`, which returns a :class:`TokenEncoder`: the
model, reparameterized and in eval mode, whose ``tokens(images)`` gives ``[B, N, C]``.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.errors import UserError
from harness.registry import Registry, import_target

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: Resolutions `vlm-pareto zoo --resolutions` used to default to (kept for callers that want a grid).
ZOO_RESOLUTIONS = (256, 336, 384, 512, 768, 1024, 1536, 2048)

#: What the zoo listing must say beside an encoder (paper settings that are *not* this encoder).
ZOO_NOTES = {
    "convnext-l": "the paper's ConvNeXt-L rows at 768/1024/1536 (Table 6 R18/R26/R35: 144/256/576 tokens) are "
    "ConvLLaVA's five-stage stride-64 variant, not this stride-32 encoder (576/1024/2304 tokens there)",
}


def listed_resolutions(spec: EncoderSpec) -> tuple[int, ...]:
    """The resolutions `vlm-pareto zoo` lists by default: the paper's for this encoder and its native one."""
    return tuple(sorted({*spec.paper_resolutions, spec.native_resolution}))


@dataclass(frozen=True)
class EncoderSpec:
    """What the harness knows about one vision encoder before building it.

    ``stride``: pixels per output token along a side (patch size for ViTs).
    ``floor_remainder``: the encoder silently drops a resolution's remainder modulo ``stride``
    (SigLIP's valid patch conv: 384 -> 27 x 27); otherwise the resolution must divide.
    ``params_include_head``: what ``params_m_paper`` (and the zoo's count) covers.
    ``builder``: ``"module:attr"`` or a callable ``builder(**kwargs) -> nn.Module``; the module's
    forward returns a feature map ``[B, C, h, w]`` or tokens ``[B, N, C]``.
    ``fixed_tokens``: for encoders whose token count does not depend on resolution (resamplers).
    ``act_bytes_per_pixel`` / ``attn_stride`` / ``attn_heads``: a rough fp32 activation-memory
    model (linear in pixels, plus attention scores) used to refuse absurd resolutions early.
    """

    name: str
    family: str
    stride: int
    out_dim: int
    builder: str | Callable[..., Any]
    native_resolution: int
    min_resolution: int
    max_resolution: int
    params_m_paper: float | None = None
    params_include_head: str = ""
    paper_resolutions: tuple[int, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""
    floor_remainder: bool = False
    takes_resolution: bool = False
    builder_kwargs: dict[str, Any] = field(default_factory=dict)
    head_kwarg: bool = True
    fixed_tokens: int | None = None
    act_bytes_per_pixel: float = 1000.0
    attn_stride: int = 0
    attn_heads: int = 0
    extra_tokens: int = 0
    probed_params: int | None = None
    source: str = "builtin"
    #: a VLM family's own resolution policy (harness/vlm): ``tokens(side)`` and ``check(side)``
    #: (UserError naming the nearest valid sizes) replace the stride rule and its checks
    token_rule: Any = None

    def tokens_at(self, resolution: int) -> int:
        """Visual tokens for one image of side ``resolution`` (no tiling, not validated)."""
        if self.token_rule is not None:
            return int(self.token_rule.tokens(resolution))
        if self.fixed_tokens is not None:
            return self.fixed_tokens
        return (resolution // self.stride) ** 2 + self.extra_tokens


ENCODERS: Registry[EncoderSpec] = Registry("encoder")


#: called before a lookup misses and before listing: registers encoders defined elsewhere
#: (``harness.encoders.custom`` adds the ``$VLM_PARETO_ENCODERS`` loader), so the zoo never
#: imports the modules that extend it
LOAD_HOOKS: list[Callable[[], object]] = []


def _run_load_hooks() -> None:
    for hook in LOAD_HOOKS:
        hook()


def register(spec: EncoderSpec, replace: bool = False) -> EncoderSpec:
    """Add ``spec`` to the zoo (``replace=False`` refuses to shadow a different encoder)."""
    if not replace and spec.name in ENCODERS and ENCODERS.get(spec.name) != spec:
        raise UserError(f"encoder {spec.name!r} is already in the zoo; pick another name")
    ENCODERS.register(spec.name, spec, aliases=spec.aliases)
    count_params.cache_clear()
    return spec


def get_spec(name: str) -> EncoderSpec:
    """The spec for ``name`` or an alias; unknown names raise a did-you-mean UserError.

    Custom encoders listed in ``$VLM_PARETO_ENCODERS`` are registered on first need.
    """
    if name not in ENCODERS:
        _run_load_hooks()
    return ENCODERS.get(name)


def list_encoders() -> list[EncoderSpec]:
    """Every spec in the zoo, built-ins first in paper order, then custom ones by name."""
    _run_load_hooks()
    order = {n: i for i, n in enumerate(BUILTIN_ORDER)}
    return sorted(
        (ENCODERS.get(n) for n in ENCODERS.names()), key=lambda s: (order.get(s.name, 99), s.name)
    )


def encoder_out_dim(name: str) -> int:
    """Channels per visual token (no build)."""
    return get_spec(name).out_dim


def encoder_tokens(
    name: str, resolution: int, tiling: str = "none", *, check_memory: bool = True
) -> int:
    """Visual tokens for ``resolution`` (the total input side) and ``tiling``, without building.

    Validates the pair first, so an impossible combination raises UserError.
    ``check_memory=False`` leaves out this machine's RAM guard (a prediction for another
    device builds nothing here).
    """
    from harness.encoders.tiling import parse_tiling

    spec = get_spec(name)
    t = parse_tiling(tiling)
    tile = validate_resolution(
        spec.name, resolution, t.text, memory_limit_bytes=None if check_memory else NO_LIMIT
    )
    return t.images * spec.tokens_at(tile)


#: ``memory_limit_bytes`` that turns the activation-memory guard off.
NO_LIMIT = 2**62


def _memory_limit_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # pragma: no cover - psutil is a dependency
        return 16 * 2**30


def estimate_activation_bytes(
    spec: EncoderSpec, tile_resolution: int, images: int = 1, dtype_bytes: int = 4
) -> int:
    """A deliberately rough peak-activation estimate for ``images`` tiles of one side."""
    pixels = tile_resolution**2
    act = spec.act_bytes_per_pixel * pixels * dtype_bytes / 4
    if spec.attn_stride and spec.attn_heads:
        n = (tile_resolution // spec.attn_stride) ** 2
        act += spec.attn_heads * n * n * dtype_bytes  # one layer's score matrix, unfused
    return int(images * act)


def validate_resolution(
    name: str,
    resolution: int,
    tiling: str = "none",
    *,
    memory_limit_bytes: int | None = None,
    dtype_bytes: int = 4,
) -> int:
    """Check that ``name`` can take ``resolution`` (total side) with ``tiling``; return the tile side.

    Raises UserError, before anything is built, for a non-integer or non-positive resolution,
    a grid that does not divide it, a tile side that is not a multiple of the encoder's stride
    (unless the encoder floors it), below the minimum, above the maximum, or an activation
    estimate beyond this machine's memory.
    """
    from harness.encoders.tiling import parse_tiling

    spec = get_spec(name)
    t = parse_tiling(tiling)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0:
        raise UserError(
            f"resolution must be a positive integer number of pixels, got {resolution!r}"
        )
    tile = t.tile_resolution(resolution)
    where = f" (tile side {tile} with tiling {t.text})" if t.tiled else ""
    if spec.token_rule is not None:
        if t.tiled:
            raise UserError(
                f"{spec.name} tiles images by its own policy; use tiling 'none' (got {t.text})"
            )
        spec.token_rule.check(tile)
    elif tile < spec.min_resolution:
        raise UserError(
            f"{spec.name} needs at least {spec.min_resolution} px per image, got {resolution}{where}"
        )
    if tile > spec.max_resolution:
        raise UserError(
            f"{spec.name} at {tile} px per image{where} is above its maximum of {spec.max_resolution} px; "
            "use tiling (e.g. 2x2+overview) for larger inputs"
        )
    if (
        tile % spec.stride
        and not spec.floor_remainder
        and spec.fixed_tokens is None
        and spec.token_rule is None
    ):
        lo, hi = tile - tile % spec.stride, tile - tile % spec.stride + spec.stride
        raise UserError(
            f"{spec.name} needs a resolution that is a multiple of its stride {spec.stride}, got {tile}{where}; "
            f"try {lo if lo >= spec.min_resolution else hi} or {hi}"
        )
    limit = memory_limit_bytes if memory_limit_bytes is not None else _memory_limit_bytes()
    need = estimate_activation_bytes(spec, tile, t.images, dtype_bytes)
    if need > 0.8 * limit:
        raise UserError(
            f"{spec.name} at {resolution} px{where} needs roughly {need / 2**30:.0f} GiB of activations, "
            f"more than this machine's {limit / 2**30:.0f} GiB; use a smaller resolution or tiling"
        )
    return tile


def builder_call_kwargs(
    spec: EncoderSpec, resolution: int | None, with_head: bool
) -> dict[str, Any]:
    kwargs = dict(spec.builder_kwargs)
    if spec.takes_resolution:
        kwargs["resolution"] = resolution or spec.native_resolution
    if spec.head_kwarg:
        kwargs["with_head"] = with_head
    return kwargs


def builder_fn(spec: EncoderSpec) -> Callable[..., Any]:
    """The spec's builder as a callable (imports its module on first use)."""
    return spec.builder if callable(spec.builder) else import_target(spec.builder)


@functools.lru_cache(maxsize=64)
def count_params(name: str, with_head: bool = True) -> int:
    """Parameters of ``name`` built on the meta device (no memory, no initialisation).

    ``with_head=True`` counts what the paper counts (see ``params_include_head``);
    ``False`` counts the module that is timed.
    """
    import torch

    spec = get_spec(name)
    with torch.device("meta"):
        model = builder_fn(spec)(**builder_call_kwargs(spec, None, with_head and spec.head_kwarg))
        # Count the inference-form model (train-time branches fused), as the paper does and
        # as it is timed; reparameterizing works on meta tensors.
        fuse_branches(model)
    return sum(p.numel() for p in model.parameters())


def to_tokens(out: Any) -> torch.Tensor:
    """Turn an encoder output (feature map, tokens, or a transformers output) into ``[B, N, C]``."""
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is not None:
        out = hidden
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if out.dim() == 4:
        return out.flatten(2).transpose(1, 2)
    if out.dim() == 3:
        return out
    raise UserError(
        f"an encoder must return [B, C, H, W] or [B, N, C], got shape {tuple(out.shape)}"
    )


def fuse_branches(model: nn.Module) -> bool:
    """Fuse train-time branches: the model's own ``reparameterize()``, else its children's.

    A module with ``reparameterize`` handles its whole subtree (so nothing is fused twice);
    modules without one are walked. Returns whether anything was reparameterized.
    """
    reparameterize = getattr(model, "reparameterize", None)
    if callable(reparameterize):
        reparameterize()
        return True
    done = False
    for child in list(model.children()):
        done = fuse_branches(child) or done
    return done


class TokenEncoder:
    """A built encoder: ``module`` (eval, reparameterized) and ``tokens(images) -> [B, N, C]``."""

    def __init__(
        self, spec: EncoderSpec, module: nn.Module, resolution: int, reparameterized: bool
    ):
        self.spec = spec
        self.module = module
        self.resolution = resolution
        self.reparameterized = reparameterized

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        return to_tokens(self.module(images))

    __call__ = tokens

    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def build_encoder(
    name: str,
    resolution: int | None = None,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    seed: int = 0,
    weights: str | None = None,
    reparameterize: bool = True,
) -> TokenEncoder:
    """Build ``name`` for images of side ``resolution`` with well-conditioned random weights.

    Built on the meta device and filled by :func:`harness.init.materialize` (cheap; never
    uninitialised memory), optionally loaded from ``weights`` (safetensors or a PyTorch state
    dict, safe loading only), reparameterized and put in eval mode.
    """
    from harness.init import materialize

    spec = get_spec(name)
    res = resolution or spec.native_resolution
    fn = builder_fn(spec)
    kwargs = builder_call_kwargs(spec, res, False)
    model = materialize(lambda: fn(**kwargs), device=device, dtype=None, seed=seed)
    if weights:
        load_state(model, weights, spec)
    done = fuse_branches(model) if reparameterize else False
    if dtype is not None:
        model = model.to(dtype=dtype)
    return TokenEncoder(spec, model.eval(), res, done)


def load_state(model: nn.Module, path: str, spec: EncoderSpec | None = None) -> None:
    """Load weights from a local file safely; a mismatch names missing/unexpected keys.

    Uses the encoder module's own ``load_weights(model, path)`` when its builder module has one
    (FastViT checkpoints need key remapping); otherwise safetensors or
    ``torch.load(weights_only=True)``, matched strictly.
    """
    import torch

    if not os.path.isfile(path):
        raise UserError(f"weights file not found: {path}")
    if spec is not None and isinstance(spec.builder, str):
        module_name = spec.builder.split(":", 1)[0]
        own = getattr(importlib.import_module(module_name), "load_weights", None)
        if callable(own):
            own(model, path)
            return
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"cannot load {path} safely (weights_only=True): {e}") from e
        if (
            isinstance(state, dict)
            and "state_dict" in state
            and isinstance(state["state_dict"], dict)
        ):
            state = state["state_dict"]
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)

    def show(keys: list[str]) -> str:
        return (
            (", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""))
            if keys
            else "none"
        )

    if missing or unexpected:
        raise UserError(
            f"weights {path} do not match the model: missing {show(missing)}; unexpected {show(unexpected)}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # same keys, wrong shapes
        raise UserError(
            f"weights {path} do not match the model: {' '.join(str(e).split())[:300]}"
        ) from e


# --- the built-in zoo ---------------------------------------------------------------------

BUILTIN_ORDER = ("fastvithd", "fastvit", "vit-l-14", "siglip-so400m", "convnext-l", "convnext-xxl")

# FastViT builders materialize themselves; device="meta" keeps them skeletons so that
# build_encoder allocates and fills exactly once (and count_params never allocates).
_BUILTINS = (
    EncoderSpec(
        name="fastvithd",
        family="fastvit",
        stride=64,
        out_dim=3072,
        builder="harness.encoders.fastvit:build_fastvithd",
        builder_kwargs={"device": "meta"},
        native_resolution=1024,
        min_resolution=64,
        max_resolution=4096,
        params_m_paper=125.1,
        params_include_head="includes the CLIP projection head (122.7M without)",
        paper_resolutions=(256, 512, 768, 1024),
        aliases=("fastvit-hd", "fastvit_hd", "fastvitHD", "mci3", "fastvit_mci3"),
        description="FastViTHD (FastVLM): 5 stages, stride 64, 3072-channel output",
        act_bytes_per_pixel=96 / 16 * 4 * 4 * 3,
        attn_stride=32,
        attn_heads=24,
    ),
    EncoderSpec(
        name="fastvit",
        family="fastvit",
        stride=32,
        out_dim=1280,
        builder="harness.encoders.fastvit:build_fastvit_mci2",
        builder_kwargs={"device": "meta"},
        native_resolution=256,
        min_resolution=32,
        max_resolution=4096,
        params_m_paper=35.7,
        params_include_head="includes the CLIP projection head",
        paper_resolutions=(256, 768),
        aliases=("mci2", "fastvit-mci2", "fastvit_mci2", "mobileclip-s2"),
        description="FastViT MobileCLIP MCi2: 4 stages, stride 32",
        act_bytes_per_pixel=80 / 16 * 3 * 4 * 3,
        attn_stride=32,
        attn_heads=20,
    ),
    EncoderSpec(
        name="vit-l-14",
        family="clip-vit",
        stride=14,
        out_dim=1024,
        builder="harness.encoders.hf:build_vit_l_14",
        takes_resolution=True,
        native_resolution=336,
        min_resolution=28,
        max_resolution=2016,
        params_m_paper=304.0,
        params_include_head="includes the CLIP projection (1024->768); penultimate-layer tokens are timed",
        paper_resolutions=(336,),
        aliases=("clip-vit-l-14", "vit-l/14", "vitl14", "clip-vit-l/14", "vit-l-14-336"),
        description="CLIP ViT-L/14 (quick_gelu), penultimate layer, CLS dropped",
        act_bytes_per_pixel=1024 * 4 / 196 * 4 * 3,
        attn_stride=14,
        attn_heads=16,
    ),
    EncoderSpec(
        name="siglip-so400m",
        family="siglip",
        stride=14,
        out_dim=1152,
        builder="harness.encoders.hf:build_siglip_so400m",
        takes_resolution=True,
        native_resolution=384,
        min_resolution=28,
        max_resolution=2016,
        floor_remainder=True,
        params_m_paper=430.0,
        params_include_head="includes the attention-pooling head; penultimate-layer tokens are timed",
        paper_resolutions=(384,),
        aliases=("siglip", "siglip-so400m-14", "so400m", "siglip-so400m/14"),
        description="SigLIP-SO400M/14, penultimate layer",
        act_bytes_per_pixel=1152 * 4 / 196 * 4 * 3,
        attn_stride=14,
        attn_heads=16,
    ),
    EncoderSpec(
        name="convnext-l",
        family="convnext",
        stride=32,
        out_dim=1536,
        builder="harness.encoders.hf:build_convnext_l",
        native_resolution=320,
        min_resolution=32,
        max_resolution=4096,
        params_m_paper=200.0,
        params_include_head="includes the CLIP MLP projection head (196.2M trunk)",
        # Table 4 (LLaVA-1.5) uses 320 and 512; the 768-1536 rows of Table 6 are ConvLLaVA's
        # stride-64 variant (ZOO_NOTES), so they are not this encoder's paper resolutions.
        paper_resolutions=(320, 512),
        aliases=(
            "convnext-large",
            "convnext_large",
            "clip-convnext-l",
            "convnext_large_d_320",
            "c.n-l",
        ),
        description="CLIP ConvNeXt-L, last stage (stride 32)",
        act_bytes_per_pixel=192 / 16 * 4 * 4 * 3,
    ),
    EncoderSpec(
        name="convnext-xxl",
        family="convnext",
        stride=32,
        out_dim=3072,
        builder="harness.encoders.hf:build_convnext_xxl",
        native_resolution=256,
        min_resolution=32,
        max_resolution=4096,
        params_m_paper=846.0,
        params_include_head="includes the CLIP linear projection head (843.4M trunk)",
        paper_resolutions=(256, 512, 1024),
        aliases=("convnext-xxlarge", "convnext_xxlarge", "clip-convnext-xxl", "c.n-xxl"),
        description="CLIP ConvNeXt-XXL, last stage (stride 32)",
        act_bytes_per_pixel=384 / 16 * 4 * 4 * 3,
    ),
)

for _spec in _BUILTINS:
    register(_spec)
