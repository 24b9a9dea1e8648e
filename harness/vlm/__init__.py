"""Open VLMs from their architecture configs: one family adapter per architecture, one registry.

A VLM comes from a YAML in ``sweeps/vlm/`` (architecture numbers, resolution policy,
published figures), a path to such a YAML, or a local checkpoint's ``config.json`` (file or
directory). :func:`load_vlm` reads and checks it; :func:`register_vlm` turns it into an
encoder (vision tower + token reduction, with the family's token rule) in the encoder zoo and
an LLM (its decoder) in the LLM zoo, so the existing runners, TTFT, store, report, choose,
compare and nightly take it unchanged. See docs/vlms.md.

Importing this package imports neither torch nor transformers.

>>> from harness.vlm import load_vlm, family_of
>>> vlm = load_vlm("llava-onevision-0.5b")
>>> family_of(vlm).tokens(vlm, 1152)
7371
"""

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


from harness.vlm.load import list_vlms, load_vlm  # noqa: E402
from harness.vlm.register import register_vlm, vlm_params  # noqa: E402

__all__ = ["FAMILIES", "VLM", "VLMFamily", "family_of", "list_vlms", "load_vlm", "register_vlm", "vlm_params"]
