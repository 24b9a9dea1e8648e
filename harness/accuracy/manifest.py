"""Manifest YAML: which results files belong to which (encoder, resolution, llm, tiling, recipe).

Format (paths and globs are relative to the manifest file)::

    defaults:              # optional, merged into every entry
      recipe: llava-1.5
      tiling: none
    entries:
      - files: qwen2-0.5b/fastvithd-1024/*_results.json   # a path, glob, directory or list
        encoder: FastViTHD
        resolution: 1024
        llm: qwen2-0.5b

Parsed with ``yaml.safe_load`` only. A pattern matching nothing, a missing field, an unknown
field, or one file claimed by two different keys is a :class:`UserError` naming the entry.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.accuracy.keys import Key, normalize_key
from harness.accuracy.lmms_eval import find_results_files
from harness.errors import UserError, read_user_text

ENTRY_FIELDS = ("files", "encoder", "resolution", "llm", "tiling", "recipe")


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest entry: a key and the results files resolved for it."""

    key: Key
    files: tuple[Path, ...]
    where: str  # "<manifest>: entries[i]" for messages


def _resolve(pattern: str, base: Path, where: str) -> list[Path]:
    target = Path(pattern).expanduser()
    full = target if target.is_absolute() else base / target
    if any(ch in pattern for ch in "*?["):
        found = sorted(Path(m) for m in glob.glob(str(full), recursive=True))
        files = []
        for m in found:
            files.extend(find_results_files(m) if m.is_dir() else [m])
        if not files:
            raise UserError(f"{where}.files: {pattern!r} matches no file (looked in {base})")
        return files
    if not full.exists():
        raise UserError(f"{where}.files: {pattern!r} does not exist (looked for {full})")
    return find_results_files(full)


def parse_manifest(
    data: Any, path: str | Path, *, strict_names: bool = True
) -> list[ManifestEntry]:
    """Validate a decoded manifest and resolve its files (relative to ``path``'s folder)."""
    p = Path(path)
    if isinstance(data, list):
        data = {"entries": data}
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("entries"), list)
        or not data["entries"]
    ):
        raise UserError(f"{p}: a manifest needs a non-empty 'entries' list")
    unknown_top = sorted(set(data) - {"entries", "defaults"})
    if unknown_top:
        raise UserError(
            f"{p}: unknown top-level field(s) {', '.join(unknown_top)} (allowed: defaults, entries)"
        )
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise UserError(f"{p}: defaults must be a mapping")
    entries: list[ManifestEntry] = []
    owner: dict[Path, tuple[Key, str]] = {}
    for i, raw in enumerate(data["entries"]):
        where = f"{p}: entries[{i}]"
        if not isinstance(raw, dict):
            raise UserError(f"{where}: must be a mapping with files, encoder, resolution, llm, ...")
        entry = {"tiling": "none", **defaults, **raw}
        unknown = sorted(set(entry) - set(ENTRY_FIELDS))
        if unknown:
            raise UserError(
                f"{where}: unknown field(s) {', '.join(map(str, unknown))} "
                f"(allowed: {', '.join(ENTRY_FIELDS)})"
            )
        for field in ENTRY_FIELDS:
            if entry.get(field) in (None, ""):
                raise UserError(f"{where}.{field}: missing")
        try:
            key = normalize_key(
                entry["encoder"],
                entry["resolution"],
                entry["llm"],
                entry["tiling"],
                entry["recipe"],
                strict=strict_names,
            )
        except UserError as e:
            raise UserError(f"{where}: {e}") from e
        patterns = entry["files"] if isinstance(entry["files"], list) else [entry["files"]]
        files: list[Path] = []
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise UserError(f"{where}.files: {pattern!r} is not a path")
            files.extend(_resolve(pattern, p.parent, where))
        for f in files:
            rp = f.resolve()
            if rp in owner and owner[rp][0] != key:
                raise UserError(
                    f"{where}.files: {f} is also listed under {owner[rp][1]} with a different key"
                )
            owner[rp] = (key, where)
        entries.append(ManifestEntry(key, tuple(dict.fromkeys(files)), where))
    return entries


def read_manifest(path: str | Path, *, strict_names: bool = True) -> list[ManifestEntry]:
    """Read and validate a manifest YAML file."""
    p = Path(path)
    text = read_user_text(p, "manifest file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{p}: invalid YAML ({str(e).splitlines()[0]})") from e
    except RecursionError as e:
        raise UserError(f"{p}: YAML nested too deeply to be a manifest") from e
    return parse_manifest(data, p, strict_names=strict_names)
