"""Read a VLM description: a ``sweeps/vlm/`` name, a VLM YAML path, or a checkpoint's config.json."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import UserError, suggest
from harness.vlm.base import VLM

#: keys a VLM YAML may have (anything else is a typo, refused)
YAML_KEYS = frozenset(
    {
        "name",
        "family",
        "description",
        "checkpoint",
        "resolutions",
        "processor",
        "published",
        "config",
        "strict_keys",
        "llms",
    }
)
#: preprocessor_config.json keys that set the resolution policy
_PROCESSOR_KEYS = {
    "min_pixels": "min_pixels",
    "max_pixels": "max_pixels",
    "max_patches": "max_patches",
}


def vlm_dir() -> Path:
    from harness.sweep.configs import config_dir

    return config_dir() / "vlm"


def list_vlms() -> list[str]:
    """Names of the VLMs shipped as YAMLs in ``sweeps/vlm/``."""
    d = vlm_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _plain(obj: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return obj


def load_vlm(
    source: str | os.PathLike[str] | Mapping[str, Any] | VLM, *, check: bool = True
) -> VLM:
    """A checked :class:`VLM` from a zoo name, a YAML / config.json path, or a mapping (a sweep node)."""
    from harness.vlm.families import FAMILIES, family_of

    if isinstance(source, VLM):
        vlm = source
    elif isinstance(source, Mapping) or hasattr(source, "keys"):
        raw: Any = _plain(source)
        plain: dict[str, Any] = {str(k): v for k, v in dict(raw).items()}
        vlm = from_mapping(plain, where="VLM config")
    else:
        text = str(source)
        path = Path(text).expanduser()
        if text in list_vlms() and not path.exists():
            path = vlm_dir() / f"{text}.yaml"
        if path.is_dir() or path.suffix == ".json":
            vlm = from_checkpoint(path)
        elif path.suffix in (".yaml", ".yml") and path.is_file():
            vlm = from_yaml(path)
        elif path.suffix in (".yaml", ".yml", ".json") or "/" in text:
            raise UserError(f"VLM config not found: {text}")
        else:
            raise UserError(suggest(text, list_vlms(), "VLM"))
    if vlm.family not in FAMILIES:
        raise UserError(f"VLM {vlm.name!r}: " + suggest(vlm.family, FAMILIES.names(), "family"))
    vlm.family = FAMILIES.canonical(vlm.family)
    if check:
        family_of(vlm).check(vlm, strict_keys=vlm.strict_keys)
    return vlm


def from_yaml(path: Path) -> VLM:
    from omegaconf import OmegaConf

    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:
        raise UserError(f"cannot read VLM config {path}: {' '.join(str(e).split())[:200]}") from e
    if not isinstance(data, dict):
        raise UserError(f"VLM config {path} must be a mapping")
    return from_mapping({str(k): v for k, v in data.items()}, where=str(path))


def from_mapping(data: dict[str, Any], where: str) -> VLM:
    unknown = sorted(set(data) - YAML_KEYS)
    if unknown:
        raise UserError(
            f"{where}: unknown key {unknown[0]!r} (valid: {', '.join(sorted(YAML_KEYS))})"
        )
    for key in ("name", "config"):
        if not data.get(key):
            raise UserError(f"{where}: missing {key!r}")
    config = data["config"]
    if isinstance(config, str):  # a path to a checkpoint's config.json
        base = from_checkpoint(Path(config).expanduser())
        config = base.config
    if not isinstance(config, dict):
        raise UserError(
            f"{where}: 'config' must be a mapping of transformers config keys or a config.json path"
        )
    family = data.get("family") or config.get("model_type")
    if not family:
        raise UserError(f"{where}: missing 'family' (or config.model_type)")
    processor = dict(data.get("processor") or {})
    return VLM(
        strict_keys=bool(data.get("strict_keys", True)),
        name=str(data["name"]).lower(),
        family=str(family),
        config=dict(config),
        processor=processor,
        published=dict(data.get("published") or {}),
        description=str(data.get("description", "")),
        source=where,
        resolutions=[int(r) for r in data.get("resolutions") or []],
    )


def from_checkpoint(path: Path) -> VLM:
    """A real checkpoint's ``config.json`` (and ``preprocessor_config.json`` beside it, if present)."""
    cfg_file = path / "config.json" if path.is_dir() else path
    if not cfg_file.is_file():
        raise UserError(f"{str(path)!r} has no config.json")
    try:
        config = json.loads(cfg_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{str(cfg_file)!r} is not a JSON model config: {e}") from e
    if not isinstance(config, dict) or not config.get("model_type"):
        raise UserError(f"{str(cfg_file)!r}: missing 'model_type'")
    processor: dict[str, Any] = {}
    pre = cfg_file.parent / "preprocessor_config.json"
    if pre.is_file():
        try:
            pdata = json.loads(pre.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{str(pre)!r} is not JSON: {e}") from e
        processor = {v: pdata[k] for k, v in _PROCESSOR_KEYS.items() if k in pdata}
        size = pdata.get("size") or {}
        if (
            isinstance(size, dict)
            and "longest_edge" in size
            and config["model_type"] in ("smolvlm", "idefics3")
        ):
            processor["longest_edge"] = int(size["longest_edge"])
    name = (
        cfg_file.parent.name if cfg_file.name == "config.json" else cfg_file.stem
    ).lower() or "vlm"
    return VLM(
        name=name,
        family=str(config["model_type"]),
        config=config,
        processor=processor,
        source=str(cfg_file),
    )
