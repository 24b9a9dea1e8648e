"""Qwen2.5-VL: dynamic resolution (multiples of 28 px within min/max pixels), 2 x 2 patch merger."""

from __future__ import annotations

from typing import Any

from harness.vlm.base import VLM, VLMFamily
from harness.vlm.rules import qwen_sizes, qwen_tokens

#: Qwen2.5-VL processor defaults (preprocessor_config.json): min_pixels 56*56, max_pixels 28*28*16384
MIN_PIXELS = 3136
MAX_PIXELS = 12845056


class Qwen25VL(VLMFamily):
    name = "qwen2_5_vl"
    model_type = "qwen2_5_vl"
    config_class = "transformers:Qwen2_5_VLConfig"
    aliases = ("qwen2.5-vl", "qwen25vl", "qwen2_5vl")
    required = (
        "vision_config.hidden_size",
        "vision_config.intermediate_size",
        "vision_config.depth",
        "vision_config.num_heads",
        "vision_config.patch_size",
        "vision_config.spatial_merge_size",
        "vision_config.fullatt_block_indexes",
        "vision_config.window_size",
        "text_config.hidden_size",
        "text_config.num_hidden_layers",
        "text_config.num_attention_heads",
        "text_config.intermediate_size",
        "text_config.vocab_size",
    )
    legacy_keys = frozenset(
        {
            "vision_token_id",
            "video_token_id",
            "image_token_id",
            "vision_start_token_id",
            "vision_end_token_id",
        }
    )

    def _factor(self, vlm: VLM) -> int:
        return int(vlm.need("vision_config.patch_size")) * int(
            vlm.need("vision_config.spatial_merge_size")
        )

    def _bounds(self, vlm: VLM) -> tuple[int, int]:
        return int(vlm.proc("min_pixels", MIN_PIXELS)), int(vlm.proc("max_pixels", MAX_PIXELS))

    def valid_sizes(self, vlm: VLM) -> list[int]:
        lo, hi = self._bounds(vlm)
        return qwen_sizes(self._factor(vlm), lo, hi)

    def size_rule(self, vlm: VLM) -> str:
        lo, hi = self._bounds(vlm)
        return f"dynamic resolution runs sides that are multiples of {self._factor(vlm)} px with {lo} <= H*W <= max_pixels {hi}"

    def tokens_hw(self, vlm: VLM, h: int, w: int) -> int:
        from harness.vlm.rules import smart_resize

        lo, hi = self._bounds(vlm)
        f = self._factor(vlm)
        rh, rw = smart_resize(h, w, f, lo, hi)
        return qwen_tokens(rh, rw, f)

    def images(self, vlm: VLM, size: int) -> int:
        return 1

    def out_dim(self, vlm: VLM) -> int:
        m = int(vlm.need("vision_config.spatial_merge_size"))
        return int(vlm.need("vision_config.hidden_size")) * m * m

    def connector_params(self, vlm: VLM) -> int:
        # counted inside the vision model (its merger's MLP); here only what build_vision drops
        d, h = self.out_dim(vlm), int(vlm.need("text_config.hidden_size"))
        return d * d + d + d * h + h

    def text_config(self, vlm: VLM) -> dict[str, Any]:
        t = dict(vlm.text)
        t["model_type"] = "qwen2"  # Qwen2.5-VL's decoder is Qwen2 with 3D (M-RoPE) positions
        return t

    def build_vision(self, vlm: VLM, size: int) -> Any:
        from transformers import Qwen2_5_VLVisionConfig
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
            Qwen2_5_VisionTransformerPretrainedModel,
        )

        from harness.vlm.modules import QwenVision

        vc = {k: v for k, v in vlm.vision.items() if k != "model_type"}
        vc.setdefault("out_hidden_size", vlm.need("text_config.hidden_size"))
        cfg = Qwen2_5_VLVisionConfig(**vc)
        cfg._attn_implementation = "sdpa"
        return QwenVision(Qwen2_5_VisionTransformerPretrainedModel(cfg), size)
