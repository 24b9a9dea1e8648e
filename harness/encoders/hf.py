"""CLIP ViT-L/14, SigLIP-SO400M/14 and CLIP ConvNeXt-L/XXL vision towers from transformers configs.

Each builder returns a module whose ``forward(images[B,3,H,W])`` gives the visual tokens a VLM
feeds its projector, ``[B, N, C]``:

- ViTs (CLIP, SigLIP): the *penultimate* layer's patch tokens, as LLaVA-1.5 takes them (no CLS
  token). The last transformer layer (and SigLIP's pooling head) would compute outputs nobody
  reads, so the runtime module is built without them -- an exported Core ML graph drops that
  dead code too. ``with_head=True`` builds the full tower (plus CLIP's projection) for
  parameter counting only.
- ConvNeXt (CLIP, open_clip/timm layout): the last-stage feature map, stride 32.

Position embeddings are sized for the requested resolution (as a model fine-tuned at that
resolution would have them), so no per-call interpolation is timed.

Models are built on the meta device by :func:`harness.init.materialize`; non-persistent
``position_ids`` buffers are restored through the ``_vlm_pareto_reset_buffers`` hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import ConvNextModel

_M = TypeVar("_M", bound=nn.Module)

#: Architecture constants (transformers config names), checked against the paper's counts.
VIT_L_14 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    patch_size=14,
)
SIGLIP_SO400M_14 = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=27,
    num_attention_heads=16,
    patch_size=14,
)
CONVNEXT_L = dict(depths=[3, 3, 27, 3], hidden_sizes=[192, 384, 768, 1536])
CONVNEXT_XXL = dict(depths=[3, 4, 30, 3], hidden_sizes=[384, 768, 1536, 3072])

#: open_clip's CLIP heads on top of the trunk (counted by the paper, never run by a VLM):
#: ViT-L/14 a 1024->768 linear projection; ConvNeXt-L (``convnext_large_d``) an MLP
#: 1536->1536->768 with biases; ConvNeXt-XXL a bias-free 3072->1024 linear.
_CLIP_EMBED = {"vit-l-14": 768, "convnext-l": 768, "convnext-xxl": 1024}


def attach_position_reset(model: _M) -> _M:
    """Give every module holding a ``position_ids`` buffer a hook that refills it with arange.

    ``Module.to_empty`` leaves non-persistent buffers as uninitialised memory; the hook lets
    ``materialize`` restore them (an index buffer full of garbage would crash the embedding).
    """
    for m in model.modules():
        buf = getattr(m, "position_ids", None)
        if isinstance(buf, torch.Tensor) and "position_ids" in m._buffers:

            def reset(m: nn.Module = m) -> None:
                ids = cast(torch.Tensor, m.position_ids)
                m.position_ids = (
                    torch.arange(ids.shape[-1], device=ids.device, dtype=ids.dtype)
                    .expand(ids.shape)
                    .contiguous()
                )

            m._vlm_pareto_reset_buffers = reset  # type: ignore[assignment]  # torch types Module attributes as Tensor | Module
    return model


class ViTTokens(nn.Module):
    """A CLIP/SigLIP vision tower returning patch tokens ``[B, N, C]`` (CLS dropped)."""

    def __init__(self, tower: nn.Module, has_cls: bool, head: nn.Module | None = None):
        super().__init__()
        self.tower = tower
        self.has_cls = has_cls
        self.head = head  # counted, never run
        config: Any = tower.config  # a transformers CLIP/SigLIP vision config
        self.stride = config.patch_size
        self.out_dim = config.hidden_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values=images).last_hidden_state
        return hidden[:, 1:] if self.has_cls else hidden


class ConvNeXtTokens(nn.Module):
    """A ConvNeXt trunk returning its last-stage feature map ``[B, C, H/32, W/32]``."""

    stride = 32

    def __init__(self, trunk: ConvNextModel, head: nn.Module | None = None):
        super().__init__()
        self.trunk = trunk
        self.head = head  # counted, never run
        hidden_sizes = trunk.config.hidden_sizes
        assert hidden_sizes is not None
        self.out_dim = hidden_sizes[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # embeddings + stages only: the trunk's pooled-norm output is not what a VLM reads.
        return self.trunk.encoder(self.trunk.embeddings(images)).last_hidden_state


def _vit(arch: dict, resolution: int, with_head: bool, kind: str) -> ViTTokens:
    layers = arch["num_hidden_layers"] if with_head else arch["num_hidden_layers"] - 1
    if kind == "clip":
        from transformers import CLIPVisionConfig, CLIPVisionModel

        cfg = CLIPVisionConfig(
            **{**arch, "num_hidden_layers": layers},
            image_size=resolution,
            hidden_act="quick_gelu",
            attn_implementation="sdpa",
        )  # type: ignore[call-arg]  # configs take extra kwargs
        tower: nn.Module = CLIPVisionModel(cfg)
        head = (
            nn.Linear(arch["hidden_size"], _CLIP_EMBED["vit-l-14"], bias=False)
            if with_head
            else None
        )
        # CLIP's last_hidden_state is the encoder output before post_layernorm, i.e. exactly
        # the hidden state LLaVA selects; the pooled-norm on one token is negligible.
        return attach_position_reset(ViTTokens(tower, has_cls=True, head=head))
    from transformers import SiglipVisionConfig, SiglipVisionModel

    siglip_cfg = SiglipVisionConfig(
        **{**arch, "num_hidden_layers": layers},
        image_size=resolution,
        vision_use_head=with_head,
        attn_implementation="sdpa",
    )  # type: ignore[call-arg]  # configs take extra kwargs
    tower = SiglipVisionModel(siglip_cfg)
    if not with_head:
        # SigLIP normalises last_hidden_state; the penultimate hidden state is un-normalised.
        tower.add_module("post_layernorm", nn.Identity())  # replaces the LayerNorm
    return attach_position_reset(ViTTokens(tower, has_cls=False))


def build_vit_l_14(resolution: int = 336, with_head: bool = False) -> ViTTokens:
    """CLIP ViT-L/14 (quick_gelu); tokens = (resolution/14)^2 from the penultimate layer."""
    return _vit(VIT_L_14, resolution, with_head, "clip")


def build_siglip_so400m(resolution: int = 384, with_head: bool = False) -> ViTTokens:
    """SigLIP-SO400M/14; 384 -> 27x27 = 729 tokens (the patch conv drops the 6-pixel remainder)."""
    return _vit(SIGLIP_SO400M_14, resolution, with_head, "siglip")


def _convnext(arch: dict, with_head: bool, name: str) -> ConvNeXtTokens:
    from transformers import ConvNextConfig, ConvNextModel

    trunk = ConvNextModel(ConvNextConfig(**arch))
    head = None
    if with_head:
        c, e = arch["hidden_sizes"][-1], _CLIP_EMBED[name]
        head = (
            nn.Sequential(nn.Linear(c, 2 * e), nn.GELU(), nn.Linear(2 * e, e))
            if name == "convnext-l"
            else nn.Linear(c, e, bias=False)
        )
    return ConvNeXtTokens(trunk, head)


def build_convnext_l(resolution: int | None = None, with_head: bool = False) -> ConvNeXtTokens:
    """CLIP ConvNeXt-L (depths [3,3,27,3], dims [192..1536]); resolution-independent."""
    return _convnext(CONVNEXT_L, with_head, "convnext-l")


def build_convnext_xxl(resolution: int | None = None, with_head: bool = False) -> ConvNeXtTokens:
    """CLIP ConvNeXt-XXL (depths [3,4,30,3], dims [384..3072]); resolution-independent."""
    return _convnext(CONVNEXT_XXL, with_head, "convnext-xxl")
