"""Device profiles as data: one YAML file per device.

Built-in profiles live in ``harness/data/devices/*.yaml``; users add their own (or shadow a
built-in) in ``$VLM_PARETO_DEVICES`` (a folder) or ``~/.config/vlm-pareto/devices/``. A
profile names two *parts* (``encoder`` and ``prefill``: the unit each runs on, with its peak
compute in TFLOPS at the precision used, memory bandwidth in GB/s and bytes per element) and
where its calibration rows come from (``calibrate_from``: ``paper``, ``store`` or ``none``).
Public specifications are cited in the files; efficiency factors and the per-op overhead
are never written by hand: calibration fits them (:mod:`harness.predict.calibrate`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from harness.errors import UserError, suggest

PARTS = ("encoder", "prefill")
CALIBRATION_SOURCES = ("paper", "store", "none")
_PART_FIELDS = ("peak_tflops", "bandwidth_gbs", "bytes_per_elem")


@dataclass(frozen=True)
class Part:
    unit: str
    precision: str
    peak_tflops: float
    bandwidth_gbs: float
    bytes_per_elem: float

    @property
    def peak_flops(self) -> float:
        return self.peak_tflops * 1e12

    @property
    def bandwidth(self) -> float:
        return self.bandwidth_gbs * 1e9


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    parts: dict[str, Part]
    calibrate_from: str = "none"
    prompt_tokens: int = 16
    aliases: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def calibratable(self) -> bool:
        return self.calibrate_from != "none"


#: precisions a part may name (what the dtype of its runtime is)
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "int4", "fp8")


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where} must be a positive number, got {value!r}")
    f = float(value)
    if not math.isfinite(f) or f <= 0:
        raise UserError(f"{where} must be a positive number, got {value!r}")
    return f


def parse_profile(data: Any, where: str) -> Profile:
    """Validate one profile mapping; every problem is a one-line UserError naming the field."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: a device profile must be a mapping, got {type(data).__name__}")
    for key in ("name", "parts"):
        if key not in data:
            raise UserError(f"{where}: missing field {key!r}")
    if not isinstance(data["name"], str) or not data["name"].strip():
        raise UserError(f"{where}: name must be a non-empty string, got {data['name']!r}")
    name = data["name"].strip()
    parts_in = data["parts"]
    if not isinstance(parts_in, dict):
        raise UserError(f"{where}: parts must be a mapping with {' and '.join(PARTS)}")
    parts: dict[str, Part] = {}
    for part in PARTS:
        p = parts_in.get(part)
        if p is None:
            raise UserError(f"{where}: missing field parts.{part}")
        if not isinstance(p, dict):
            raise UserError(f"{where}: parts.{part} must be a mapping, got {p!r}")
        vals = {}
        for f in _PART_FIELDS:
            if f not in p:
                raise UserError(f"{where}: missing field parts.{part}.{f}")
            vals[f] = _positive(p[f], f"{where}: parts.{part}.{f}")
        for f in ("unit", "precision"):
            if not isinstance(p.get(f), str) or not p[f].strip():
                what = "missing field" if f not in p else "a non-empty string is needed for"
                raise UserError(f"{where}: {what} parts.{part}.{f}")
        if p["precision"] not in PRECISIONS:
            raise UserError(
                f"{where}: " + suggest(p["precision"], PRECISIONS, f"parts.{part}.precision")
            )
        parts[part] = Part(unit=p["unit"].strip(), precision=p["precision"], **vals)
    unknown = set(parts_in) - set(PARTS)
    if unknown:
        raise UserError(
            f"{where}: unknown part(s) {sorted(unknown)}; a profile has {' and '.join(PARTS)}"
        )
    cal = str(data.get("calibrate_from", "none"))
    if cal not in CALIBRATION_SOURCES:
        raise UserError(f"{where}: " + suggest(cal, CALIBRATION_SOURCES, "calibrate_from"))
    prompt = data.get("prompt_tokens", 16)
    if isinstance(prompt, bool) or not isinstance(prompt, int) or prompt < 0:
        raise UserError(f"{where}: prompt_tokens must be an integer >= 0, got {prompt!r}")
    aliases = data.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise UserError(f"{where}: aliases must be a list of names, got {aliases!r}")
    return Profile(
        name=name,
        description=str(data.get("description", "")),
        parts=parts,
        calibrate_from=cal,
        prompt_tokens=prompt,
        aliases=tuple(str(a) for a in aliases),
        sources=tuple(str(s) for s in (data.get("sources") or [])),
        path=where,
        extra={
            k: v
            for k, v in data.items()
            if k
            not in {
                "name",
                "description",
                "parts",
                "calibrate_from",
                "prompt_tokens",
                "aliases",
                "sources",
            }
        },
    )


def load_profile_file(path: str | Path) -> Profile:
    import yaml

    from harness.errors import read_user_text

    text = read_user_text(path, "device profile")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    return parse_profile(data, str(path))


def user_dirs() -> list[Path]:
    out: list[Path] = []
    env = os.environ.get("VLM_PARETO_DEVICES")
    if env:
        for p in (Path(p) for p in env.split(os.pathsep) if p):
            if not p.is_dir():
                raise UserError(f"VLM_PARETO_DEVICES names {p}, which is not a folder")
            out.append(p)
    out.append(Path.home() / ".config" / "vlm-pareto" / "devices")
    return out


def _builtin_files() -> list[Path]:
    root = resources.files("harness") / "data" / "devices"
    return sorted(Path(str(p)) for p in root.iterdir() if str(p).endswith(".yaml"))


def _claimed_names(path: Path) -> set[str]:
    """The names a (possibly broken) profile file means: its ``name`` if readable, its stem."""
    names = {path.stem.lower()}
    try:
        import yaml

        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            names.add(data["name"].lower())
    except Exception:  # noqa: BLE001 - a broken file: its stem is all we know
        pass
    return names


def all_profiles(
    problems: list[str] | None = None, broken: dict[str, str] | None = None
) -> dict[str, Profile]:
    """Built-ins first, then user folders (a user profile with a built-in's name replaces it).

    A broken user profile (bad YAML, a missing field, a name or alias another device has) is
    an error, or, given a ``problems`` list, skipped with its one-line reason appended there,
    so that one bad file in a user folder does not block every other device; ``broken`` then
    maps each name a skipped file means (its ``name``, its file stem) to its reason.
    """
    user_paths: dict[str, Path] = {}
    out: dict[str, Profile] = {}
    for path in _builtin_files():
        prof = load_profile_file(path)
        out[prof.name] = prof
    owner: dict[str, str] = {n.lower(): p.name for p in out.values() for n in (p.name, *p.aliases)}
    for d in user_dirs():
        if d.is_dir():
            for path in sorted(d.glob("*.yaml")):
                try:
                    prof = load_profile_file(path)
                    if prof.name in user_paths:
                        raise UserError(
                            f"{path}: device {prof.name!r} is also defined by "
                            f"{user_paths[prof.name]}; give one of them another name"
                        )
                    for n in (prof.name, *prof.aliases):
                        key = n.lower()
                        taken = owner.get(key)
                        if taken is not None and taken != prof.name:
                            raise UserError(
                                f"{prof.path}: {n!r} already names device {taken!r}; "
                                "give this profile another name or alias"
                            )
                except UserError as e:
                    if problems is None:
                        raise
                    problems.append(str(e))
                    if broken is not None:
                        for n in _claimed_names(path):
                            broken.setdefault(n, str(e))
                    continue
                user_paths[prof.name] = path
                if prof.name in out:  # a user profile replacing one: its old aliases go
                    for n in (prof.name, *out[prof.name].aliases):
                        owner.pop(n.lower(), None)
                out[prof.name] = prof
                owner.update({n.lower(): prof.name for n in (prof.name, *prof.aliases)})
    return out


def get_profile(name_or_path: str) -> Profile:
    """A profile by name, alias or YAML path; unknown names get a did-you-mean."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        return load_profile_file(name_or_path)
    problems: list[str] = []
    broken: dict[str, str] = {}
    profiles = all_profiles(problems, broken)
    if name_or_path.lower() in broken:
        # a user file meant this device (a new one, or an override of a built-in): say why
        # it cannot be used rather than silently using something else
        raise UserError(f"device {name_or_path!r}: {broken[name_or_path.lower()]}")
    if name_or_path in profiles:
        return profiles[name_or_path]
    for p in profiles.values():
        if name_or_path.lower() in (a.lower() for a in p.aliases):
            return p
    names = list(profiles) + [a for p in profiles.values() for a in p.aliases]
    skipped = f" ({len(problems)} broken user profile(s) skipped)" if problems else ""
    raise UserError(suggest(name_or_path, names, "device") + skipped)
