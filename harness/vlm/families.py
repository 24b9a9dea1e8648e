"""The VLM family registry: one adapter per architecture family (imports neither torch nor
transformers). ``harness.vlm`` re-exports it; ``load`` and ``register`` import it from here."""

from __future__ import annotations

from harness.registry import Registry
from harness.vlm.base import VLM, VLMFamily
from harness.vlm.gemma3 import Gemma3
from harness.vlm.internvl import InternVL
from harness.vlm.llava_onevision import LlavaOneVision
from harness.vlm.qwen2_5_vl import Qwen25VL
from harness.vlm.smolvlm import SmolVLM

FAMILIES: Registry[VLMFamily] = Registry("VLM family")
for _fam in (LlavaOneVision(), Qwen25VL(), SmolVLM(), InternVL(), Gemma3()):
    FAMILIES.register(_fam.name, _fam, aliases=_fam.aliases)


def family_of(vlm: VLM) -> VLMFamily:
    """The family adapter of ``vlm`` (unknown families raise a did-you-mean UserError)."""
    return FAMILIES.get(vlm.family)
