"""The narrow seam to the existing runners: a VLM becomes one EncoderSpec and one LLMSpec.

The encoder's ``token_rule`` carries the family's token rule and size policy into the encoder
zoo (``tokens_at`` / ``validate_resolution``); its builder returns the vision module whose
``prepare`` the encoder runner applies before timing. The decoder is an ordinary LLM zoo entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.vlm.base import VLM, VLMFamily


@dataclass(frozen=True, eq=False)
class FamilyTokenRule:
    """``tokens(side)`` / ``check(side)`` for the encoder zoo, bound to one VLM."""

    family: VLMFamily
    vlm: VLM

    def tokens(self, side: int) -> int:
        return self.family.tokens(self.vlm, side)

    def check(self, side: int) -> None:
        self.family.check_size(self.vlm, side)

    def images(self, side: int) -> int:
        return self.family.images(self.vlm, side)


def encoder_name(vlm: VLM) -> str:
    return f"{vlm.name}-vision"


def llm_name(vlm: VLM) -> str:
    return f"{vlm.name}-llm"


def _builder(family: VLMFamily, vlm: VLM) -> Any:
    def build(resolution: int | None = None) -> Any:
        from harness.vlm.modules import restore_buffers

        module: Any = family.build_vision(vlm, resolution or family.native_size(vlm))
        module._vlm_pareto_reset_buffers = lambda: restore_buffers(module)
        return module

    return build


def encoder_spec(vlm: VLM) -> Any:
    from harness.encoders.zoo import EncoderSpec
    from harness.vlm.families import family_of

    fam = family_of(vlm)
    sizes = fam.valid_sizes(vlm)
    v = vlm.vision
    patch = v.get("patch_size", 14)
    patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch)
    width = int(v.get("hidden_size", 1024))
    return EncoderSpec(
        name=encoder_name(vlm),
        family=f"vlm:{fam.name}",
        stride=patch,
        out_dim=fam.out_dim(vlm),
        builder=_builder(fam, vlm),
        takes_resolution=True,
        head_kwarg=False,
        native_resolution=fam.native_size(vlm),
        min_resolution=sizes[0],
        max_resolution=sizes[-1],
        params_include_head="vision tower + token reduction as timed (the connector MLP is the projector)",
        paper_resolutions=tuple(vlm.resolutions),
        description=vlm.description or f"{vlm.name} vision tower ({fam.name})",
        act_bytes_per_pixel=width * 4 / (patch * patch) * 4 * 3,
        attn_stride=patch,
        attn_heads=int(v.get("num_attention_heads", v.get("num_heads", 16))),
        source=vlm.source,
        token_rule=FamilyTokenRule(fam, vlm),
    )


def llm_spec(vlm: VLM) -> Any:
    from harness.llms.zoo import spec_from_config_dict
    from harness.vlm.families import family_of

    fam = family_of(vlm)
    return spec_from_config_dict(
        fam.text_config(vlm), name=llm_name(vlm), source=f"{vlm.source} (text_config)"
    )


def register_vlm(vlm: VLM | str) -> tuple[str, str]:
    """Put ``vlm``'s vision side in the encoder zoo and its decoder in the LLM zoo; return both names."""
    from harness.encoders.zoo import register
    from harness.llms.zoo import LLMS
    from harness.vlm.load import load_vlm

    vlm = load_vlm(vlm) if not isinstance(vlm, VLM) else vlm
    enc = register(encoder_spec(vlm), replace=True)
    spec = llm_spec(vlm)
    LLMS.register(spec.name, spec)
    return enc.name, spec.name


def vlm_params(vlm: VLM) -> dict[str, int]:
    """Parameters of the full-size model without building it (meta device): vision as timed,
    the family's real connector, and the decoder; ``total`` is what model cards count."""
    import torch

    from harness.vlm.families import family_of

    fam = family_of(vlm)
    with torch.device("meta"):
        module = fam.build_vision(vlm, fam.native_size(vlm))
    vision = sum(p.numel() for p in module.parameters())
    newline = getattr(module, "image_newline", None)
    if newline is not None:
        vision -= int(newline.numel())  # counted with the connector
    connector = fam.connector_params(vlm)
    llm = llm_spec(vlm).n_params
    return {"vision": vision, "connector": connector, "llm": llm, "total": vision + connector + llm}
