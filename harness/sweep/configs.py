"""Structured (typed) configs for ``vlm-pareto sweep``, registered in Hydra's ConfigStore.

The YAML files in ``sweeps/`` are composed by Hydra and then merged onto :class:`SweepConfig`,
so every field is type-checked; :func:`validate` adds the semantic checks (known names,
valid resolutions, a non-empty grid) before anything is measured.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from harness.errors import UserError, suggest


@dataclass
class EncoderAxis:
    """One encoder of the grid: a zoo name (or a custom ``model`` factory) and its settings."""

    name: str = MISSING
    resolutions: list[int] = field(default_factory=list)
    #: tilings to measure; None -> the sweep's default ``tiling.spec``
    tilings: list[str] | None = None
    #: custom encoder: a Hydra ``_target_`` node returning an nn.Module / transformers config
    model: Any | None = None
    weights: str | None = None
    description: str = ""
    # custom encoders only (see harness/encoders/custom.py): probing and zoo metadata
    aliases: list[str] = field(default_factory=list)
    #: folder put on sys.path to import ``model._target_``; relative paths are tried against
    #: the --config-dir's encoder/ folder, the --config-dir, then the working directory
    import_path: str | None = None
    probe_resolution: int | None = None
    native_resolution: int | None = None
    min_resolution: int | None = None
    max_resolution: int | None = None
    params_m_paper: float | None = None
    #: custom encoders: {pixel_shuffle: s} or {avg_pool: k} on the output tokens (docs/vlms.md)
    token_reduction: Any | None = None
    #: LLM labels this encoder pairs with (None: every LLM of the grid that is not a VLM's own)
    llms: list[str] | None = None


@dataclass
class VLMAxis:
    """One open VLM of the grid (``sweeps/vlm/*.yaml``; see docs/vlms.md): its vision side
    becomes an encoder and its decoder an LLM, paired with each other (plus ``llms``)."""

    name: str = MISSING
    family: str | None = None
    description: str = ""
    checkpoint: str | None = None
    #: image sides to measure (the family's resolution policy decides the tokens)
    resolutions: list[int] = field(default_factory=list)
    #: resolution-policy settings (min_pixels / max_pixels, longest_edge, max_patches)
    processor: Any | None = None
    published: Any | None = None
    #: transformers config keys (vision_config, text_config, ...) or a config.json path
    config: Any | None = None
    strict_keys: bool = True
    #: extra LLM labels of the grid to pair the vision side with
    llms: list[str] = field(default_factory=list)


@dataclass
class LLMAxis:
    """One LLM of the grid.

    Either a zoo name alone, or its shape spelled out (``arch``, ``hidden``, ``layers``, ...;
    the zoo's own entries in ``sweeps/llm/`` do this, so a new LLM is one such file), or
    ``config`` = a transformers config.json path / mlx-lm directory / inline config keys.
    """

    name: str = MISSING
    config: Any | None = None
    weights: str | None = None
    description: str = ""
    arch: str | None = None
    hidden: int | None = None
    layers: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    intermediate: int | None = None
    vocab: int | None = None
    tied: bool | None = None
    max_positions: int | None = None
    rope_theta: float | None = None
    rms_norm_eps: float | None = None
    #: Qwen3 / Gemma 3: per-head width (when not hidden / heads) and Gemma 3's local window
    attn_head_dim: int | None = None
    sliding_window: int | None = None
    #: informational only (computed from the shape)
    params_b: float | None = None

    SHAPE_FIELDS = (
        "arch",
        "hidden",
        "layers",
        "heads",
        "kv_heads",
        "intermediate",
        "vocab",
        "tied",
        "max_positions",
        "rope_theta",
        "rms_norm_eps",
        "attn_head_dim",
        "sliding_window",
    )
    #: shape fields that may be left out
    OPTIONAL_FIELDS = ("rms_norm_eps", "attn_head_dim", "sliding_window")


@dataclass
class BackendConfig:
    """A backend preset (``sweeps/backend/*.yaml``): one registered backend per side.

    ``device``/``dtype``/``llm_dtype`` are the sides' device and precisions. The remaining
    flat fields are settings of the built-in backends, read by name by their config classes
    (harness/backends/); ``encoder_options``/``llm_options`` carry any backend's own settings
    (unknown keys are refused). ``runtimes`` registers backends the preset brings itself,
    ``{name: "module:attr"}`` naming a ``harness.backends.base.Backend``, imported from
    ``import_path`` (resolved like a custom encoder's, against the --config-dir's backend/).
    """

    name: str = "torch-cpu"
    encoder_backend: str = "torch"  # a registered backend with an encoder runner
    llm_backend: str = "torch"  # a registered backend with an LLM runner
    device: str = "cpu"
    dtype: str = "float32"
    llm_dtype: str = "float32"
    compute_units: str = "CPU_AND_NE"  # Core ML: ALL | CPU_AND_NE | CPU_AND_GPU | CPU_ONLY
    coreml_precision: str = "float16"
    channels_last: bool | None = None
    compile: bool = False
    mlx_quantize_bits: int | None = None
    prefill_step_size: int = 2048
    encoder_options: dict[str, Any] = field(default_factory=dict)
    llm_options: dict[str, Any] = field(default_factory=dict)
    runtimes: dict[str, str] = field(default_factory=dict)
    import_path: str | None = None
    description: str = ""


@dataclass
class ProtocolConfig:
    """Mirror of :class:`harness.protocol.Protocol` (which is frozen, so Hydra could not
    override it); converted by name in ``harness.sweep.runners.protocol_of``."""

    name: str = "quick"
    warmup_runs: int = 1
    warmup_min_s: float = 0.0
    min_runs: int = 3
    min_time_s: float = 0.0
    max_time_s: float = 30.0
    threads: int = 0
    flush_denormal: bool = True
    confidence: float = 0.95
    # interference handling (docs/noise.md)
    retakes: int = 3
    quiet_wait_s: float = 0.0
    contention_margin: float = 0.10
    rounds: int = 1


@dataclass
class TilingConfig:
    spec: str = "none"


@dataclass
class SweepConfig:
    name: str = "sweep"
    description: str = ""
    #: the paper table / figure the preset reproduces
    cite: str = ""
    #: training recipe whose accuracy rows the report joins (docs/DESIGN.md)
    recipe: str | None = None
    encoders: dict[str, EncoderAxis] = field(default_factory=dict)
    llms: dict[str, LLMAxis] = field(default_factory=dict)
    #: open VLMs (harness/vlm): each adds an encoder and an LLM under its label
    vlms: dict[str, VLMAxis] = field(default_factory=dict)
    backend: BackendConfig = field(default_factory=BackendConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    prompt_tokens: int = 16
    #: time k of the L decoder layers and extrapolate (null: full model unless it cannot fit)
    sample_layers: int | None = None
    #: sample automatically (k = auto_sample_k) when the full model would not fit in memory
    #: or has more than auto_sample_above_b billion parameters
    auto_sample: bool = True
    auto_sample_k: int = 2
    auto_sample_above_b: float = 3.0
    #: resume / share a run: measurements already stored for it are reused
    run_id: str | None = None
    #: repeat the whole grid this many times, interleaved (nightly drift control); the
    #: protocol's ``rounds`` is the least (docs/noise.md)
    rounds: int = 1
    #: time the machine-speed canary at the start, between rounds and at the end (docs/noise.md);
    #: null: on unless both backends are fake
    canary: bool | None = None
    #: where rounds run: ``auto`` (a fresh worker process per round when there are several
    #: rounds and a backend times here), ``process`` or ``inline`` (harness/sweep/worker.py)
    isolation: str = "auto"
    #: the run-to-run term of every interval (harness/drift.py): ``auto`` (from this machine's
    #: earlier runs in the store, else a default; off for fake backends), ``off``, or a
    #: standard deviation of log median such as 0.05
    run_to_run: Any = "auto"
    report: bool = True
    report_dir: str | None = None
    db: str | None = None
    seed: int = 0
    batch_tiles: bool = True
    #: refuse grids whose measurement count exceeds this (typo guard)
    max_measurements: int = 2000
    #: stderr progress: a bar on a terminal, one line per measurement elsewhere (harness/progress.py)
    progress: bool = True
    #: print the end-of-sweep summary as JSON (run id, counts, TTFT points) instead of a table
    json: bool = False
    #: a TTFT ratio to print after the sweep (harness/vlm/claim.py), e.g. the paper's 85x claim
    claim: Any | None = None


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="sweep_schema", node=SweepConfig)
    cs.store(group="backend", name="schema", node=BackendConfig)
    cs.store(group="protocol", name="schema", node=ProtocolConfig)
    cs.store(group="tiling", name="schema", node=TilingConfig)
    cs.store(group="encoder", name="schema", node=EncoderAxis)
    cs.store(group="llm", name="schema", node=LLMAxis)
    cs.store(group="vlm", name="schema", node=VLMAxis)


def config_dir() -> Path:
    """The folder holding the sweep configs (``sweeps/`` in a checkout, ``harness/conf`` installed)."""
    spec = importlib.util.find_spec("harness.conf")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "sweep configs (package harness.conf) are not installed; reinstall vlm-pareto"
        )
    return Path(list(spec.submodule_search_locations)[0])


def presets() -> list[str]:
    """Names of the primary configs (sweep presets) in the config folder."""
    return sorted(p.stem for p in config_dir().glob("*.yaml"))


def to_typed(cfg: DictConfig) -> SweepConfig:
    """Merge a composed config onto the schema; type errors become one-line UserErrors."""
    body = (
        OmegaConf.masked_copy(cfg, [str(k) for k in cfg.keys() if k != "hydra"])
        if "hydra" in cfg
        else cfg
    )
    try:
        # merged as a plain container: a composed node already typed by the schema would let a
        # key added with '+' (a typo such as +protocol.retake=1) through silently
        plain = (
            OmegaConf.to_container(body, resolve=False) if isinstance(body, DictConfig) else body
        )
        merged = OmegaConf.merge(OmegaConf.structured(SweepConfig), plain)
        typed = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        msg = str(e).splitlines()[0]
        hint = _unknown_key_hint(str(key)) if isinstance(e, ConfigKeyError) and key else ""
        raise UserError(f"invalid sweep config{f' at {key}' if key else ''}: {msg}{hint}") from e
    assert isinstance(typed, SweepConfig)
    return typed


def _unknown_key_hint(dotted: str) -> str:
    """'; did you mean ...' for an unknown key under a schema node (or '')."""
    import dataclasses
    import difflib
    import typing

    node: Any = SweepConfig
    for part in dotted.split(".")[:-1]:
        if typing.get_origin(node) is dict:  # encoders.<label>, llms.<label>: the axis type
            node = typing.get_args(node)[1]
            continue
        if not dataclasses.is_dataclass(node):
            return ""
        node = typing.get_type_hints(node).get(part)
    if typing.get_origin(node) is dict or not dataclasses.is_dataclass(node):
        return ""
    names = [f.name for f in dataclasses.fields(node)]
    close = difflib.get_close_matches(dotted.split(".")[-1], names, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_claim(claim: Any) -> None:
    """The sweep setting ``claim``: unset, or ``{fast: {...}, slow: {...}, paper_ratio: x}``."""
    if claim is None or (isinstance(claim, Mapping) and not claim):
        return
    if not isinstance(claim, Mapping):
        raise UserError(
            f"claim must be a mapping like {{fast: {{encoder: ..., resolution: ...}}, slow: "
            f"{{...}}, paper_ratio: 85}}, got {claim!r}"
        )
    for key in ("fast", "slow"):
        if not isinstance(claim.get(key), Mapping):
            raise UserError(f"claim needs '{key}: {{encoder: ..., resolution: ...}}'")
    ratio = claim.get("paper_ratio")
    if ratio is not None and (
        isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0
    ):
        raise UserError(f"claim.paper_ratio must be a positive number, got {ratio!r}")


def validate(cfg: SweepConfig) -> None:
    """Semantic checks that need no model: names, backends, numbers."""
    # backend names and precisions are checked by the backends' own config classes
    # (harness.sweep.runners.configure_backend), called by the engine right after this
    _validate_numbers(cfg)
    if cfg.prompt_tokens < 0:
        raise UserError(f"prompt_tokens must be >= 0, got {cfg.prompt_tokens}")
    if cfg.rounds < 1:
        raise UserError(f"rounds must be >= 1, got {cfg.rounds}")
    from harness.sweep.worker import validate_isolation

    validate_isolation(cfg.isolation)
    from harness.drift import parse_setting

    parse_setting(getattr(cfg, "run_to_run", "auto"))
    check_claim(cfg.claim)
    from dataclasses import asdict

    # flat settings of the built-in backends, checked even when another backend is selected
    # (a typo there is a mistake whichever backend runs; their config classes check the rest)
    bits = cfg.backend.mlx_quantize_bits
    if bits is not None and bits not in (4, 8):
        raise UserError(f"backend.mlx_quantize_bits must be null, 4 or 8, got {bits}")
    units = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
    if cfg.backend.compute_units not in units:
        raise UserError(suggest(cfg.backend.compute_units, units, "backend.compute_units"))
    if cfg.backend.coreml_precision not in ("float16", "float32"):
        raise UserError(
            suggest(
                cfg.backend.coreml_precision, ["float16", "float32"], "backend.coreml_precision"
            )
        )
    from harness.protocol import protocol_from_fields

    protocol_from_fields(
        asdict(cfg.protocol)
    )  # impossible protocol settings fail before a run is created
    if cfg.sample_layers is not None and cfg.sample_layers < 1:
        raise UserError(
            f"sample_layers must be >= 1 (or null for the full model), got {cfg.sample_layers}"
        )
    if not cfg.encoders:
        raise UserError(
            "empty grid: the sweep lists no encoders (add one, e.g. +encoder@encoders.fastvithd=fastvithd)"
        )
    if not cfg.llms:
        raise UserError(
            "empty grid: the sweep lists no LLMs (add one, e.g. +llm@llms.qwen2_0_5b=qwen2-0.5b)"
        )
    for label, enc in cfg.encoders.items():
        if not enc.resolutions:
            raise UserError(
                f"empty grid: encoder {label!r} has no resolutions (set encoders.{label}.resolutions)"
            )
        for r in enc.resolutions:
            if r <= 0:
                raise UserError(f"encoder {label!r}: resolution must be positive, got {r}")


#: the user's --config-dir, exported by the sweep app: relative import paths of custom
#: encoders and preset-defined backends are tried against it
CONFIG_DIR_ENV = "VLM_PARETO_CONFIG_DIR"


def import_dir(import_path: str | None, group: str = "encoder") -> str:
    """Absolute folder for a user module (a custom encoder's factory, a preset's backend).

    Relative paths are tried against the --config-dir's ``group`` folder (where the YAML
    came from), the --config-dir itself, then the working directory.
    """
    import os

    if import_path is None:
        return str(Path.cwd())
    p = Path(import_path).expanduser()
    if p.is_absolute():
        return str(p)
    candidates = []
    extra = os.environ.get(CONFIG_DIR_ENV)
    if extra:
        candidates += [Path(extra) / group / p, Path(extra) / p]
    candidates.append(Path.cwd() / p)
    for c in candidates:
        if c.is_dir():
            return str(c.resolve())
    what = "custom encoder" if group == "encoder" else f"{group} preset"
    raise UserError(
        f"{what} import_path {import_path!r}: no such folder (tried {', '.join(map(str, candidates))})"
    )


#: (dotted key, predicate, what it must be) for the numeric settings checked before a run starts
_NUMBER_RULES: tuple[tuple[str, Any, str], ...] = (
    ("protocol.warmup_runs", lambda v: v >= 0, ">= 0"),
    ("protocol.min_runs", lambda v: v >= 1, ">= 1"),
    ("protocol.threads", lambda v: v >= 0, ">= 0 (0 = all cores)"),
    ("protocol.warmup_min_s", lambda v: v >= 0, ">= 0"),
    ("protocol.min_time_s", lambda v: v >= 0, ">= 0"),
    ("protocol.max_time_s", lambda v: v > 0, "> 0"),
    ("protocol.confidence", lambda v: 0.5 <= v < 1.0, "in [0.5, 1)"),
    ("backend.prefill_step_size", lambda v: v >= 1, ">= 1"),
    ("auto_sample_k", lambda v: v >= 1, ">= 1"),
    ("auto_sample_above_b", lambda v: v > 0, "> 0"),
    ("max_measurements", lambda v: v >= 1, ">= 1"),
    ("seed", lambda v: v >= 0, ">= 0"),
)


def _validate_numbers(cfg: SweepConfig) -> None:
    """Every numeric setting in range, named by its override key (before any run row exists)."""
    import math
    from dataclasses import asdict

    for dotted, ok, must in _NUMBER_RULES:
        obj: Any = cfg
        for part in dotted.split("."):
            obj = getattr(obj, part)
        if isinstance(obj, float) and not math.isfinite(obj):
            raise UserError(f"{dotted} must be a finite number, got {obj}")
        if not ok(obj):
            raise UserError(f"{dotted} must be {must}, got {obj}")
    if not cfg.protocol.name:
        raise UserError("protocol.name must be a non-empty string")
    from harness.protocol import protocol_from_fields

    protocol_from_fields(asdict(cfg.protocol))  # whatever else the protocol itself checks


def compose_error(e: Exception) -> UserError:
    """A one-line UserError from a Hydra composition error (with its cause, which names the value)."""
    msg = str(e).splitlines()[0]
    cause = e.__cause__ or e.__context__
    if cause is not None and str(cause).strip():
        msg += f": {str(cause).splitlines()[0]}"
    return UserError(f"invalid sweep config: {msg}")


def compose_sweep(
    name: str, overrides: list[str] | None = None, extra_dir: str | Path | None = None
) -> SweepConfig:
    """Compose preset ``name`` with ``overrides`` (outside a Hydra app) into a typed config."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    ov = list(overrides or [])
    if extra_dir:
        ov.append(f"hydra.searchpath=[file://{Path(extra_dir).resolve()}]")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            try:
                cfg = compose(config_name=name, overrides=ov)
            except Exception as e:
                raise compose_error(e) from e
    finally:
        GlobalHydra.instance().clear()
    return to_typed(cfg)
