"""The search space: every valid (encoder, resolution, tiling, LLM) of a sweep config."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import UserError, suggest
from harness.sweep.configs import EncoderAxis, LLMAxis, SweepConfig

# ----------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class Config:
    """One point of the space."""

    encoder: str
    resolution: int
    tiling: str
    llm: str

    def label(self) -> str:
        tiling = "" if self.tiling == "none" else f" {self.tiling}"
        return f"{self.encoder}@{self.resolution}{tiling} + {self.llm}"


@dataclass(frozen=True)
class EncoderChoice:
    """An encoder of the space: its sweep label, stride, and valid resolutions per tiling."""

    name: str
    label: str
    stride: int
    out_dim: int
    resolutions: dict[str, tuple[int, ...]]  # tiling -> sorted resolutions
    tokens: dict[tuple[int, str], int]  # (resolution, tiling) -> visual tokens


@dataclass(frozen=True)
class SearchSpace:
    """Every valid configuration, plus the sweep config its tasks are measured with."""

    encoders: dict[str, EncoderChoice]
    llms: dict[str, str]  # canonical name -> sweep label
    llm_params_b: dict[str, float]
    cfg: SweepConfig
    llm_specs: dict[str, Any]
    notes: tuple[str, ...] = ()

    def configs(self) -> list[Config]:
        out: list[Config] = []
        for enc in self.encoders.values():
            for tiling, resolutions in enc.resolutions.items():
                for r in resolutions:
                    out.extend(Config(enc.name, r, tiling, llm) for llm in self.llms)
        return out

    def tokens(self, c: Config) -> int:
        return self.encoders[c.encoder].tokens[(c.resolution, c.tiling)]

    def grid_measurements(self) -> int:
        """Unique tasks a sweep of the whole space would measure (encoder + prefill + projector)."""
        enc = {
            (e.name, r, t)
            for e in self.encoders.values()
            for t, rs in e.resolutions.items()
            for r in rs
        }
        pre = {(c.llm, self.tokens(c)) for c in self.configs()}
        proj = {(c.llm, self.tokens(c), self.encoders[c.encoder].out_dim) for c in self.configs()}
        return len(enc) + len(pre) + len(proj)

    def signature(self) -> dict[str, Any]:
        """JSON description stored with the study (a resume must see the same space)."""
        return {
            "encoders": {
                e.name: {t: list(rs) for t, rs in e.resolutions.items()}
                for e in self.encoders.values()
            },
            "llms": list(self.llms),
            "prompt_tokens": self.cfg.prompt_tokens,
        }


def parse_range(text: str) -> tuple[int, int]:
    """``'256:1024'`` -> (256, 1024); UserError otherwise."""
    lo_text, sep, hi_text = str(text).partition(":")
    try:
        lo, hi = int(lo_text), int(hi_text)
    except ValueError:
        raise UserError(
            f"--resolution-range takes MIN:MAX in pixels, e.g. 256:1024, not {text!r}"
        ) from None
    if not sep or lo <= 0 or hi < lo:
        raise UserError(f"--resolution-range takes MIN:MAX with 0 < MIN <= MAX, not {text!r}")
    return lo, hi


def build_space(
    cfg: SweepConfig,
    *,
    resolution_range: tuple[int, int] | None = None,
    tilings: Sequence[str] | None = None,
) -> SearchSpace:
    """Widen ``cfg``'s grid into a search space and resolve every name.

    Each encoder's resolutions become ``min..max`` in steps of its stride: the range is
    ``resolution_range`` if given, else the axis' own min/max (a preset), else the encoder's
    paper resolutions (or its native one). Tilings are ``tilings``, else the axis', else the
    sweep's default. Combinations the encoder cannot take (e.g. a tile side off its stride,
    too many tokens for an LLM) are left out; an empty result is a UserError.
    """
    from harness.encoders.tiling import parse_tiling
    from harness.encoders.zoo import encoder_out_dim, encoder_tokens, get_spec
    from harness.sweep.engine import resolve

    if not cfg.encoders:
        raise UserError("empty space: no encoders (pass --encoders or --preset)")
    if not cfg.llms:
        raise UserError("empty space: no LLMs (pass --llms or --preset)")
    cfg = copy.deepcopy(cfg)
    # Resolve names (aliases, custom encoders, LLM configs) with the sweep's own resolver on a
    # small seed grid that is valid by construction; this also validates the backend etc.
    seed = copy.deepcopy(cfg)
    seed.max_measurements = 10**9
    for enc in seed.encoders.values():
        if not enc.resolutions:
            spec = get_spec(enc.name)
            enc.resolutions = [spec.native_resolution]
            enc.tilings = ["none"]
    _, llm_specs = resolve(seed)
    notes: list[str] = []
    choices: dict[str, EncoderChoice] = {}
    max_pos = min(s.max_positions for s in llm_specs.values())
    for label, axis in cfg.encoders.items():
        name = seed.encoders[label].name
        spec = get_spec(name)
        if resolution_range:
            lo, hi = resolution_range
        elif axis.resolutions:
            lo, hi = min(axis.resolutions), max(axis.resolutions)
        else:
            known = spec.paper_resolutions or (spec.native_resolution,)
            lo, hi = min(known), max(known)
        wanted = [parse_tiling(t).text for t in (tilings or axis.tilings or [cfg.tiling.spec])]
        per_tiling: dict[str, tuple[int, ...]] = {}
        tokens: dict[tuple[int, str], int] = {}
        start = -(-lo // spec.stride) * spec.stride
        for tiling in dict.fromkeys(wanted):
            ok = []
            for r in range(start, hi + 1, spec.stride):
                try:
                    n = encoder_tokens(name, r, tiling)
                except UserError:
                    continue  # off the tile grid, below the minimum, beyond memory: not in the space
                if n + cfg.prompt_tokens > max_pos:
                    continue
                ok.append(r)
                tokens[(r, tiling)] = n
            if ok:
                per_tiling[tiling] = tuple(ok)
            else:
                notes.append(f"{name} has no valid resolution in {lo}..{hi} with tiling {tiling}")
        if not per_tiling:
            raise UserError(
                f"empty space: {name} takes no resolution in {lo}..{hi} (stride {spec.stride}) "
                f"with tiling {', '.join(wanted)}; widen --resolution-range"
            )
        if name in choices:
            raise UserError(f"encoder {name} is listed twice")
        choices[name] = EncoderChoice(
            name, label, spec.stride, encoder_out_dim(name), per_tiling, tokens
        )
        axis.name = name
        axis.resolutions = sorted({r for rs in per_tiling.values() for r in rs})
        axis.tilings = list(per_tiling)
    # The resolver fills llm_specs in label order, keyed by canonical name.
    if len(llm_specs) != len(cfg.llms):
        raise UserError("an LLM is listed twice (two names for the same model)")
    llms = dict(zip(llm_specs, cfg.llms, strict=True))
    params = {n: float(llm_specs[n].params_b) for n in llms}
    return SearchSpace(choices, llms, params, cfg, llm_specs, tuple(notes))


def sweep_config(
    *,
    preset: str | None = None,
    encoders: Sequence[str] | None = None,
    llms: Sequence[str] | None = None,
    backend: str | None = None,
    protocol: str | None = None,
    overrides: Sequence[str] = (),
) -> SweepConfig:
    """The sweep config a search measures with: a preset (Hydra-composed) or explicit names.

    ``encoders``/``llms`` replace the preset's lists; ``backend``/``protocol`` are config-group
    names (``sweeps/backend/*.yaml``, ``sweeps/protocol/*.yaml``).
    """
    from harness.sweep.configs import compose_sweep, presets

    ov = list(overrides)
    if backend:
        ov.append(f"backend={_group_name('backend', backend)}")
    if protocol:
        ov.append(f"protocol={_group_name('protocol', protocol)}")
    if preset:
        names = [p for p in presets() if p != "config"]
        if preset not in names:
            raise UserError(suggest(preset, names, "preset"))
        cfg = compose_sweep(preset, ov)
    else:
        if not encoders or not llms:
            raise UserError("empty space: pass --preset, or both --encoders and --llms")
        # compose any preset for the backend/protocol groups, then replace its grid
        cfg = compose_sweep("quick", ov)
        cfg.name, cfg.cite, cfg.description = "search", "", ""
    if encoders:
        cfg.encoders = {_label(n): EncoderAxis(name=n) for n in dict.fromkeys(encoders)}
    if llms:
        cfg.llms = {_label(n): LLMAxis(name=n) for n in dict.fromkeys(llms)}
    cfg.report = False
    cfg.progress = False
    return cfg


def _label(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def _group_name(group: str, name: str) -> str:
    from harness.sweep.configs import config_dir

    known = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
    if name not in known:
        raise UserError(suggest(name, known, group))
    return name
