"""Names the sweeps know, for ``vlm-pareto ingest``: the zoos, ``sweeps/llm/*.yaml``, custom encoders.

The alias table in :mod:`harness.accuracy.keys` holds the paper's spellings. A sweep also
measures LLMs defined by a YAML file in ``sweeps/llm/`` (``tiny-llama``, ``tiny-qwen2``) and
custom encoders from a ``--config-dir`` (``my-tiny-convnet``); accuracy for them must ingest
under the same names, without ``--allow-new-names``. Everything here reads data only (zoo
specs and YAML ``name:``/``aliases:`` fields): nothing is built and torch is never imported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

from harness.errors import UserError


def _sweep_config_dir() -> Path | None:
    spec = importlib.util.find_spec("harness.conf")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _yaml_names(folder: Path) -> dict[str, str]:
    """``alias (lower-case) -> name`` from the ``name:`` and ``aliases:`` of each YAML in ``folder``."""
    import yaml

    out: dict[str, str] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise UserError(f"{path}: cannot read it as YAML ({type(e).__name__})") from e
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("name"), str)
            or not data["name"].strip()
        ):
            continue  # not a model file (e.g. a defaults list)
        name = data["name"].strip()
        aliases = data.get("aliases") or []
        for n in [name, *(a for a in aliases if isinstance(a, str))]:
            out.setdefault(n.strip().lower(), name)
    return out


def sweep_names(config_dirs: Iterable[str | Path] = ()) -> dict[str, dict[str, str]]:
    """``{"encoder": {alias: name}, "llm": {alias: name}}`` for every model a sweep can name.

    Sources: the encoder and LLM zoos (names and aliases), the sweep configs' ``encoder/`` and
    ``llm/`` folders, and the same folders of each ``config_dirs`` entry (a Hydra
    ``--config-dir``, as for ``vlm-pareto sweep --config-dir``).
    """
    from harness.encoders.zoo import ENCODERS
    from harness.llms.zoo import LLMS

    names: dict[str, dict[str, str]] = {"encoder": {}, "llm": {}}
    for what, reg in (("encoder", ENCODERS), ("llm", LLMS)):
        for key, canonical in [*((n, n) for n in reg.names()), *reg._aliases.items()]:
            names[what].setdefault(key, canonical)
    folders = [d for d in [_sweep_config_dir()] if d is not None]
    for d in config_dirs:
        p = Path(d).expanduser()
        if not p.is_dir():
            raise UserError(f"--config-dir {d}: no such folder")
        folders.append(p)
    for folder in folders:
        for what in ("encoder", "llm"):
            for alias, name in _yaml_names(folder / what).items():
                names[what].setdefault(alias, name)
        # an open VLM (vlm/*.yaml) is measured as '<name>-vision' + '<name>-llm'
        # (harness.vlm.register.encoder_name / llm_name; the name lower-cased as load_vlm does)
        for vlm in set(_yaml_names(folder / "vlm").values()):
            for what, suffix in (("encoder", "-vision"), ("llm", "-llm")):
                full = f"{vlm.lower()}{suffix}"
                names[what].setdefault(full, full)
    return names
