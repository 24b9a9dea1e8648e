"""LLaVA-OneVision: SigLIP tiles in an AnyRes grid plus a base image, packed with newline tokens."""

from __future__ import annotations

from typing import Any

from harness.vlm.base import VLM, VLMFamily
from harness.vlm.rules import llava_ov_layout, llava_ov_sizes, llava_ov_tokens


def _max_tiles(vlm: VLM) -> int:
    ratio = str(vlm.get("vision_aspect_ratio", "anyres_max_9"))
    try:
        return int(ratio.replace("anyres_max_", ""))
    except ValueError:
        from harness.errors import UserError

        raise UserError(
            f"VLM {vlm.name!r}: vision_aspect_ratio {ratio!r} is not 'anyres_max_<N>'"
        ) from None


def _pinpoints(vlm: VLM) -> list[list[int]]:
    pins = vlm.get("image_grid_pinpoints")
    if pins is None:  # transformers' default for this family: 1..6 tiles of 384 per side
        tile = int(vlm.need("vision_config.image_size"))
        pins = [[tile * i, tile * j] for i in range(1, 7) for j in range(1, 7)]
    return [[int(a), int(b)] for a, b in pins]


class LlavaOneVision(VLMFamily):
    name = "llava_onevision"
    model_type = "llava_onevision"
    config_class = "transformers:LlavaOnevisionConfig"
    aliases = ("llava-onevision", "llava-ov", "llava_ov")
    required = (
        "vision_config.hidden_size",
        "vision_config.intermediate_size",
        "vision_config.num_hidden_layers",
        "vision_config.num_attention_heads",
        "vision_config.image_size",
        "vision_config.patch_size",
        "text_config.model_type",
        "text_config.hidden_size",
        "text_config.num_hidden_layers",
        "text_config.num_attention_heads",
        "text_config.intermediate_size",
        "text_config.vocab_size",
    )
    legacy_keys = frozenset(
        {
            "use_image_newline_parameter",
            "image_token_index",
            "video_token_index",
            "image_seq_length",
        }
    )

    def _geom(self, vlm: VLM) -> tuple[int, int]:
        return int(vlm.need("vision_config.image_size")), int(vlm.need("vision_config.patch_size"))

    def valid_sizes(self, vlm: VLM) -> list[int]:
        tile, _ = self._geom(vlm)
        return llava_ov_sizes(tile, _pinpoints(vlm))

    def size_rule(self, vlm: VLM) -> str:
        tile, _ = self._geom(vlm)
        return f"AnyRes runs square images on grids of {tile} px tiles"

    def tokens_hw(self, vlm: VLM, h: int, w: int) -> int:
        tile, patch = self._geom(vlm)
        return llava_ov_tokens(h, w, tile, patch, _pinpoints(vlm), _max_tiles(vlm))

    def images(self, vlm: VLM, size: int) -> int:
        tile, patch = self._geom(vlm)
        lay = llava_ov_layout(size, size, tile, patch, _pinpoints(vlm), _max_tiles(vlm))
        return lay["rows"] * lay["cols"] + 1

    def out_dim(self, vlm: VLM) -> int:
        return int(vlm.need("vision_config.hidden_size"))

    def connector_params(self, vlm: VLM) -> int:
        c, h = self.out_dim(vlm), int(vlm.need("text_config.hidden_size"))
        return c * h + h + h * h + h + h  # mlp2x_gelu + the image_newline vector

    def build_vision(self, vlm: VLM, size: int) -> Any:
        from transformers import SiglipVisionConfig, SiglipVisionModel

        from harness.vlm.modules import AnyResSiglip

        tile, patch = self._geom(vlm)
        vc = {k: v for k, v in vlm.vision.items() if k != "model_type"}
        vc.update(vision_use_head=False, attn_implementation="sdpa")
        tower = SiglipVisionModel(SiglipVisionConfig(**vc))
        lay = llava_ov_layout(size, size, tile, patch, _pinpoints(vlm), _max_tiles(vlm))
        return AnyResSiglip(tower, lay, tile)
