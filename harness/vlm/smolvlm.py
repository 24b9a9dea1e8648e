"""SmolVLM2 (and Idefics3): image splitting into encoder-sized tiles plus a global image, pixel shuffle."""

from __future__ import annotations

from typing import Any

from harness.vlm.base import VLM, VLMFamily
from harness.vlm.rules import split_grid, split_shuffle_tokens, split_sizes


class SmolVLM(VLMFamily):
    name = "smolvlm"
    model_type = "smolvlm"
    config_class = "transformers:SmolVLMConfig"
    aliases = ("smolvlm2", "smol-vlm", "idefics3")
    required = (
        "scale_factor",
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
    legacy_keys = frozenset({"image_token_id", "pad_token_id", "vocab_size"})

    def _geom(self, vlm: VLM) -> tuple[int, int, int]:
        return (
            int(vlm.need("vision_config.image_size")),
            int(vlm.need("vision_config.patch_size")),
            int(vlm.need("scale_factor")),
        )

    def _longest(self, vlm: VLM) -> int:
        tile = self._geom(vlm)[0]
        return int(vlm.proc("longest_edge", 4 * tile))

    def valid_sizes(self, vlm: VLM) -> list[int]:
        return split_sizes(self._geom(vlm)[0], self._longest(vlm))

    def size_rule(self, vlm: VLM) -> str:
        return f"image splitting runs multiples of its {self._geom(vlm)[0]} px tile up to longest_edge {self._longest(vlm)}"

    def tokens_hw(self, vlm: VLM, h: int, w: int) -> int:
        tile, patch, scale = self._geom(vlm)
        return split_shuffle_tokens(h, w, tile, patch, scale)

    def images(self, vlm: VLM, size: int) -> int:
        rows, cols = split_grid(size, size, self._geom(vlm)[0])
        return rows * cols + 1 if rows else 1

    def out_dim(self, vlm: VLM) -> int:
        _, _, s = self._geom(vlm)
        return int(vlm.need("vision_config.hidden_size")) * s * s

    def connector_params(self, vlm: VLM) -> int:
        return self.out_dim(vlm) * int(vlm.need("text_config.hidden_size"))  # one bias-free Linear

    def build_vision(self, vlm: VLM, size: int) -> Any:
        from transformers import SmolVLMVisionConfig
        from transformers.models.smolvlm.modeling_smolvlm import SmolVLMVisionTransformer

        from harness.vlm.modules import SplitShuffle

        tile, _, scale = self._geom(vlm)
        vc = {k: v for k, v in vlm.vision.items() if k != "model_type"}
        cfg = SmolVLMVisionConfig(**vc)
        cfg._attn_implementation = "sdpa"
        rows, cols = split_grid(size, size, tile)
        return SplitShuffle(SmolVLMVisionTransformer(cfg), rows, cols, tile, scale)
