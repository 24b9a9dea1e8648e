"""Gemma 3: SigLIP at a fixed 896 px, patch grid average-pooled to 256 tokens (pan-and-scan off)."""

from __future__ import annotations

from typing import Any

from harness.vlm.base import VLM, VLMFamily
from harness.vlm.rules import pooled_tokens


class Gemma3(VLMFamily):
    name = "gemma3"
    model_type = "gemma3"
    config_class = "transformers:Gemma3Config"
    aliases = ("gemma-3", "gemma3-vlm")
    required = (
        "mm_tokens_per_image",
        "vision_config.hidden_size",
        "vision_config.intermediate_size",
        "vision_config.num_hidden_layers",
        "vision_config.num_attention_heads",
        "vision_config.image_size",
        "vision_config.patch_size",
        "text_config.hidden_size",
        "text_config.num_hidden_layers",
        "text_config.num_attention_heads",
        "text_config.intermediate_size",
        "text_config.vocab_size",
    )
    legacy_keys = frozenset({"image_token_index", "boi_token_index", "eoi_token_index"})

    def _side(self, vlm: VLM) -> int:
        return int(vlm.need("vision_config.image_size"))

    def valid_sizes(self, vlm: VLM) -> list[int]:
        return [self._side(vlm)]

    def size_rule(self, vlm: VLM) -> str:
        return f"every image is resized to {self._side(vlm)} px and pooled to {vlm.need('mm_tokens_per_image')} tokens"

    def tokens_hw(self, vlm: VLM, h: int, w: int) -> int:
        return pooled_tokens(
            self._side(vlm),
            int(vlm.need("vision_config.patch_size")),
            int(vlm.need("mm_tokens_per_image")),
        )[0]

    def images(self, vlm: VLM, size: int) -> int:
        return 1

    def out_dim(self, vlm: VLM) -> int:
        return int(vlm.need("vision_config.hidden_size"))

    def connector_params(self, vlm: VLM) -> int:
        c, h = self.out_dim(vlm), int(vlm.need("text_config.hidden_size"))
        return c + c * h  # soft-embedding RMSNorm + projection matrix

    def text_config(self, vlm: VLM) -> dict[str, Any]:
        t = dict(vlm.text)
        t.setdefault("model_type", "gemma3_text")
        return t

    def build_vision(self, vlm: VLM, size: int) -> Any:
        from transformers import SiglipVisionConfig, SiglipVisionModel

        from harness.vlm.modules import PooledSiglip

        vc = {k: v for k, v in vlm.vision.items() if k != "model_type"}
        vc.update(vision_use_head=False, attn_implementation="sdpa")
        side, patch = self._side(vlm), int(vlm.need("vision_config.patch_size"))
        _, kernel = pooled_tokens(side, patch, int(vlm.need("mm_tokens_per_image")))
        return PooledSiglip(SiglipVisionModel(SiglipVisionConfig(**vc)), kernel)
