"""InternVL (2.5 / 3): dynamic 448 px tiles matched to the aspect ratio, thumbnail, pixel shuffle 0.5."""

from __future__ import annotations

from typing import Any

from harness.errors import UserError
from harness.vlm.base import VLM, VLMFamily
from harness.vlm.rules import internvl_grid, internvl_sizes, internvl_tokens


class InternVL(VLMFamily):
    name = "internvl"
    model_type = "internvl"
    config_class = "transformers:InternVLConfig"
    aliases = ("internvl3", "internvl2.5", "intern-vl")
    required = (
        "downsample_ratio",
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

    def _geom(self, vlm: VLM) -> tuple[int, int, int]:
        def side(v: Any) -> int:
            return int(v[0] if isinstance(v, (list, tuple)) else v)

        tile, patch = (
            side(vlm.need("vision_config.image_size")),
            side(vlm.need("vision_config.patch_size")),
        )
        ratio = float(vlm.need("downsample_ratio"))
        scale = round(1 / ratio)
        if abs(1 / ratio - scale) > 1e-6:
            raise UserError(f"VLM {vlm.name!r}: downsample_ratio {ratio} is not 1/integer")
        return tile, patch, scale

    def _max_num(self, vlm: VLM) -> int:
        return int(vlm.proc("max_patches", 12))

    def valid_sizes(self, vlm: VLM) -> list[int]:
        return internvl_sizes(self._geom(vlm)[0], self._max_num(vlm))

    def size_rule(self, vlm: VLM) -> str:
        tile = self._geom(vlm)[0]
        return f"dynamic tiling runs square images as n x n tiles of {tile} px with n*n <= max_patches {self._max_num(vlm)}"

    def tokens_hw(self, vlm: VLM, h: int, w: int) -> int:
        tile, patch, scale = self._geom(vlm)
        return internvl_tokens(h, w, tile, patch, 1 / scale, self._max_num(vlm))

    def images(self, vlm: VLM, size: int) -> int:
        c, r = internvl_grid(size, size, 1, self._max_num(vlm), self._geom(vlm)[0])
        return c * r + (1 if c * r > 1 else 0)

    def out_dim(self, vlm: VLM) -> int:
        _, _, s = self._geom(vlm)
        return int(vlm.need("vision_config.hidden_size")) * s * s

    def connector_params(self, vlm: VLM) -> int:
        d, h = self.out_dim(vlm), int(vlm.need("text_config.hidden_size"))
        return 2 * d + d * h + h + h * h + h  # LayerNorm, Linear, GELU, Linear

    def build_vision(self, vlm: VLM, size: int) -> Any:
        from transformers import InternVLVisionConfig, InternVLVisionModel

        from harness.vlm.modules import InternTiles

        tile, _, scale = self._geom(vlm)
        vc = {k: v for k, v in vlm.vision.items() if k != "model_type"}
        cfg = InternVLVisionConfig(**vc)
        cfg._attn_implementation = "sdpa"
        c, r = internvl_grid(size, size, 1, self._max_num(vlm), tile)
        return InternTiles(InternVLVisionModel(cfg), c, r, tile, scale, thumbnail=True)
