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

from harness.vlm.base import VLM, VLMFamily
from harness.vlm.families import FAMILIES, family_of
from harness.vlm.load import list_vlms, load_vlm
from harness.vlm.register import register_vlm, vlm_params

__all__ = [
    "FAMILIES",
    "VLM",
    "VLMFamily",
    "family_of",
    "list_vlms",
    "load_vlm",
    "register_vlm",
    "vlm_params",
]
