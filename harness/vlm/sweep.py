"""Sweep hook: expand ``cfg.vlms`` into encoder and LLM axes before the plan is built."""

from __future__ import annotations

from typing import Any

from harness.errors import UserError

_FIELDS = (
    "name",
    "family",
    "description",
    "checkpoint",
    "resolutions",
    "processor",
    "published",
    "config",
    "strict_keys",
)


def vlm_axis_data(axis: Any) -> dict[str, Any]:
    """The VLM YAML mapping a :class:`VLMAxis` holds (empty fields dropped)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    out: dict[str, Any] = {}
    for f in _FIELDS:
        v = getattr(axis, f)
        if isinstance(v, (DictConfig, ListConfig)):
            v = OmegaConf.to_container(v, resolve=True)
        if v not in (None, [], {}, ""):
            out[f] = v
    return out


def expand_vlms(cfg: Any) -> None:
    """Register every VLM of ``cfg`` and add its vision side / decoder as ``cfg.encoders[label]`` /
    ``cfg.llms[label]``, paired with each other (and the VLM's extra ``llms``). Idempotent."""
    from harness.sweep.configs import EncoderAxis, LLMAxis
    from harness.vlm import load_vlm, register_vlm

    for label, axis in cfg.vlms.items():
        vlm = load_vlm(vlm_axis_data(axis))
        enc_name, llm_name = register_vlm(vlm)
        resolutions = list(axis.resolutions or vlm.resolutions)
        if not resolutions:
            raise UserError(
                f"vlms.{label} ({vlm.name}): no resolutions (set vlms.{label}.resolutions)"
            )
        existing = cfg.encoders.get(label)
        if existing is not None and existing.name != enc_name:
            raise UserError(
                f"vlms.{label}: label {label!r} is already an encoder of the grid; rename one"
            )
        if label in cfg.llms and cfg.llms[label].name != llm_name:
            raise UserError(
                f"vlms.{label}: label {label!r} is already an LLM of the grid; rename one"
            )
        cfg.encoders[label] = EncoderAxis(
            name=enc_name,
            resolutions=resolutions,
            tilings=["none"],
            llms=[label, *axis.llms],
            description=vlm.description,
        )
        cfg.llms[label] = LLMAxis(name=llm_name, description=f"{vlm.name} decoder")
