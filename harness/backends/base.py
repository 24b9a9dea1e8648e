"""The backend interfaces: what a runtime must provide to be measured by the harness.

A *backend* is one way to run a model (PyTorch eager, Core ML, MLX, ONNX Runtime, a canned
latency table, a latency predictor...). It is one module that defines

1. a config dataclass (subclass of :class:`RunnerConfig`: name, device, precision plus its own
   settings, its precision rules and its :meth:`~RunnerConfig.availability` check),
2. an :class:`EncoderRunner` and/or an :class:`LLMRunner` subclass,
3. a module-level :class:`Backend` descriptor tying them together,

and is registered by name in :data:`BACKENDS` as a lazy ``"module:attr"`` entry (the module is
imported only when a sweep selects it). The encoder side and the LLM side of a sweep pick
their backends independently (``sweeps/backend/*.yaml``: ``encoder_backend`` /
``llm_backend``), as in the paper's Core ML encoder + MLX prefill.

Data path: the engine (:mod:`harness.sweep.engine`) hands a runner one task
(:mod:`harness.tasks`) and a :class:`~harness.protocol.Protocol`; the runner builds the
model, times it with :func:`harness.protocol.measure` (or its own native clock) and returns
an :class:`Outcome`: the :class:`~harness.protocol.Measurement` plus a *typed* extra record
(:class:`EncoderExtra`, :class:`PrefillExtra`, :class:`ProjectorExtra`). The engine stores it
under a :class:`~harness.tasks.MeasurementKey` whose ``backend`` is the backend's name and
whose ``dtype`` is :meth:`RunnerConfig.key_dtype` (the precision is part of the key).

Failure semantics (the engine implements them, runners just raise):

- :meth:`RunnerConfig.availability` returns a one-line reason -> every task of that side is
  stored as *skipped* with the reason, nothing is built;
- :class:`Skipped` (or any :class:`~harness.errors.UserError`, or ``MemoryError``) raised by
  a runner -> that point is stored as *skipped* with the message (e.g. an exporter that cannot
  convert the model: ``raise Skipped(f"onnx export failed: {e}")``);
- any other exception -> that point is stored as *failed* with a traceback; the sweep goes on.

A minimal backend module (``my_backend.py``)::

    from dataclasses import dataclass
    from harness.backends.base import (Backend, Built, EncoderExtra, EncoderRunner,
                                       RunnerConfig, Skipped)

    @dataclass
    class MyConfig(RunnerConfig):
        PRECISIONS = ("float32", "float16")   # ClassVar: precisions it runs
        REQUIRES = ("myruntime",)             # availability(): importable modules
        INSTALL_HINT = "pip install myruntime"
        threads: int = 0                       # own setting: encoder_options.threads

    class MyEncoder(EncoderRunner):
        def build(self, spec, resolution, tiling, weights=None) -> Built:
            model = ...                        # export / load; raise Skipped(reason) on failure
            return Built(step=lambda: model.run(x), tokens=n, out_dim=c,
                         extra=EncoderExtra(compile_s=export_s, settings={"opt": "all"}))

    BACKEND = Backend("mine", MyConfig, encoder=MyEncoder, description="...")

and a preset ``backend/mine.yaml`` with ``encoder_backend: mine`` and
``runtimes: {mine: "my_backend:BACKEND"}`` (plus ``import_path`` if the module is not
importable from the working directory).

Nothing here imports torch or any optional runtime; backend modules import theirs inside the
functions that need them, so ``availability()`` and the registry stay cheap.
"""

from __future__ import annotations

import importlib.util
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from harness.dtypes import PRECISION_ALIASES, PRECISION_BYTES, PRECISIONS, canonical_precision
from harness.errors import UserError, suggest
from harness.protocol import Measurement, MemoryProbe, Protocol, measure
from harness.registry import Registry
from harness.tasks import EncoderTask, PrefillTask, ProjectorTask

if TYPE_CHECKING:
    from harness.encoders.zoo import EncoderSpec
    from harness.llms.zoo import LLMSpec

Side = Literal["encoder", "llm"]
#: where a latency came from: timed here, extrapolated from a partial build (layer sampling),
#: or predicted by a model without running anything
LatencySource = Literal["measured", "estimated", "predicted"]

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class Skipped(UserError):
    """This point cannot be measured here (export failed, runtime missing, does not fit).

    Stored as a *skipped* measurement with ``str(exc)`` as the reason; the sweep goes on.
    """


# --------------------------------------------------------------------------------------------
# Typed results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parity:
    """How close a backend's output is to the float32 eager PyTorch reference."""

    cosine: float
    max_abs_err: float
    reference: str = "torch-float32-eager"

    @classmethod
    def between(
        cls, output: Any, reference: Any, reference_name: str = "torch-float32-eager"
    ) -> Parity:
        """Compare two array-likes (numpy arrays, or tensors via ``np.asarray``), flattened."""
        import numpy as np

        a = np.asarray(output, dtype=np.float64).ravel()
        b = np.asarray(reference, dtype=np.float64).ravel()
        if a.shape != b.shape:
            raise ValueError(f"parity: output has {a.size} values, reference {b.size}")
        denom = float(np.linalg.norm(a) * np.linalg.norm(b))
        cos = float(a @ b / denom) if denom > 0 else (1.0 if not a.any() and not b.any() else 0.0)
        return cls(
            cosine=cos,
            max_abs_err=float(np.max(np.abs(a - b))) if a.size else 0.0,
            reference=reference_name,
        )


E = TypeVar("E", bound="Extra")


@dataclass
class Extra:
    """What a measurement recorded besides its samples; stored as the row's ``extra`` JSON.

    Typed fields are what other modules read back (``ttft``, ``points``, reports). Anything
    backend-specific (graph optimisation level, compute units, channels_last, the file a
    model was exported to...) goes in ``settings``, flattened into the same JSON object.
    """

    #: backend-specific recorded settings (flattened into the stored JSON)
    settings: dict[str, Any] = field(default_factory=dict)
    #: one-off compile / export / conversion time in seconds, never part of the latency
    compile_s: float | None = None
    #: output vs the float32 eager reference, when the backend checked it
    parity: Parity | None = None
    #: ``measured`` unless ``estimated`` (layer-sampled) or ``predicted`` (no run at all)
    latency_source: LatencySource = "measured"

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict: settings first, typed fields on top (None fields omitted)."""
        out: dict[str, Any] = dict(self.settings)
        for f in fields(self):
            if f.name == "settings":
                continue
            value = getattr(self, f.name)
            if value is None or (f.name == "latency_source" and value == "measured"):
                continue
            out[f.name] = asdict(value) if isinstance(value, Parity) else value
        return out

    @classmethod
    def from_dict(cls: type[E], data: Mapping[str, Any] | None) -> E:
        """Read a stored ``extra`` back: known keys become fields, the rest ``settings``.

        Tolerant of old rows (missing keys -> defaults) so every stored run stays readable.
        """
        data = dict(data or {})
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "settings" or f.name not in data:
                continue
            value = data.pop(f.name)
            if f.name == "parity" and isinstance(value, Mapping):
                value = Parity(**value)
            kwargs[f.name] = value
        return cls(settings=data, **kwargs)


@dataclass
class EncoderExtra(Extra):
    """Extra of an encoder measurement."""

    out_dim: int | None = None  # channels per token (the projector's in_dim)
    params_m: float | None = None  # encoder parameters, millions
    tile_resolution: int | None = None
    images: int | None = None  # tiles + overview
    gflops: float | None = None


@dataclass
class PrefillExtra(Extra):
    """Extra of a prefill measurement (the projector for ``encoder_dim`` was timed with it)."""

    encoder_dim: int | None = None  # the projector in_dim ``projector_ms`` is for
    projector_ms: float | None = None
    hidden: int | None = None
    params_b: float | None = None  # LLM parameters, billions
    sampled_layers: int | None = None  # layers built and timed (== total_layers: whole model)
    total_layers: int | None = None


@dataclass
class ProjectorExtra(Extra):
    """Extra of a projector measurement."""

    in_dim: int | None = None
    out_dim: int | None = None


@dataclass
class Outcome:
    """What one task produced, ready for the store.

    ``build_s`` is model construction time (never part of the latency; a compile or export
    step goes in ``extra.compile_s``). ``projector`` is a by-product: the projector measured
    together with a prefill, for the prefill's ``in_dim``.
    """

    measurement: Measurement
    extra: Extra = field(default_factory=Extra)
    build_s: float | None = None
    projector: Outcome | None = None

    @property
    def estimated(self) -> bool:
        """True unless the latency was timed on the whole model (stored as ``estimated``)."""
        return self.extra.latency_source != "measured"

    def extra_dict(self) -> dict[str, Any]:
        return self.extra.to_dict()


# --------------------------------------------------------------------------------------------
# Per-backend configuration
# --------------------------------------------------------------------------------------------

C = TypeVar("C", bound="RunnerConfig")


@dataclass
class RunnerConfig:
    """A backend's settings for one side of a sweep. Subclass it and add fields.

    Built by :meth:`from_preset` from a ``sweeps/backend/*.yaml`` preset: ``name`` is the
    side's backend (``encoder_backend`` / ``llm_backend``), ``device`` the preset's device,
    ``precision`` the side's dtype (``dtype`` / ``llm_dtype``); any other field is taken by
    name from the preset's top level, then from ``encoder_options`` / ``llm_options`` (where
    unknown keys are refused with "did you mean").
    """

    name: str = ""
    device: str = "cpu"
    precision: str = "float32"

    #: precisions this backend runs (canonical names from :data:`PRECISIONS`)
    PRECISIONS: ClassVar[tuple[str, ...]] = ("float32",)
    #: devices this backend accepts (``()``: any string; the runner checks it)
    DEVICES: ClassVar[tuple[str, ...]] = ()
    #: importable modules this backend needs, and the hint when one is missing
    REQUIRES: ClassVar[tuple[str, ...]] = ()
    INSTALL_HINT: ClassVar[str] = ""
    #: the preset key holding this side's precision (Core ML keeps its own, ``coreml_precision``)
    PRECISION_KEYS: ClassVar[dict[str, str]] = {"encoder": "dtype", "llm": "llm_dtype"}

    def validate(self) -> None:
        """Check and canonicalise settings (called by :meth:`from_preset`); UserError if bad.

        The default canonicalises ``precision`` against :attr:`PRECISIONS` and checks
        ``device`` against :attr:`DEVICES`. Override to add rules, calling ``super()``.
        """
        self.precision = canonical_precision(
            self.precision, self.PRECISIONS, f"{self.name or 'backend'} dtype"
        )
        if self.DEVICES and self.device not in self.DEVICES:
            raise UserError(suggest(self.device, list(self.DEVICES), f"{self.name} device"))

    def availability(self) -> str | None:
        """None if this backend can run here, else one line saying what is missing.

        E.g. ``"needs macOS on Apple silicon"`` or ``"pip install 'vlm-pareto[onnx]'"``.
        The default checks :attr:`REQUIRES` with ``importlib.util.find_spec`` (no import).
        Must stay cheap: it runs before anything is built.
        """
        missing = [m for m in self.REQUIRES if not is_importable(m)]
        if missing:
            hint = f"; {self.INSTALL_HINT}" if self.INSTALL_HINT else ""
            return f"backend {self.name!r} needs {', '.join(missing)}, not importable here{hint}"
        return None

    def key_dtype(self) -> str:
        """The ``dtype`` column of this side's measurement keys."""
        return self.precision

    def recorded(self) -> dict[str, Any]:
        """Settings recorded with every measurement of this backend (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_preset(cls: type[C], preset: Mapping[str, Any], side: Side) -> C:
        """This side's config from a backend preset mapping (see the class docstring)."""
        names = {f.name for f in fields(cls)}
        options = dict(preset.get(f"{side}_options") or {})
        unknown = [k for k in options if k not in names]
        if unknown:
            raise UserError(
                suggest(
                    unknown[0],
                    sorted(names - {"name", "device", "precision"}),
                    f"{preset.get(f'{side}_backend')} {side}_options key",
                )
            )
        kwargs: dict[str, Any] = {
            "name": str(preset.get(f"{side}_backend") or ""),
            "device": str(preset.get("device", "cpu")),
            "precision": str(preset.get(cls.PRECISION_KEYS[side], "float32")),
        }
        for f in fields(cls):
            if f.name in kwargs:
                continue
            if f.name in options:
                kwargs[f.name] = options[f.name]
            elif f.name in preset and preset[f.name] is not None:
                kwargs[f.name] = preset[f.name]
            elif f.default is MISSING and f.default_factory is MISSING:
                raise UserError(
                    f"backend {kwargs['name']!r} needs setting {f.name!r} (in {side}_options)"
                )
        cfg = cls(**kwargs)
        try:
            cfg.validate()
        except UserError as e:
            raise UserError(f"backend preset {preset.get('name')!r}, {side} side: {e}") from e
        return cfg


def is_importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------


@dataclass
class RunContext:
    """Sweep-wide settings every runner sees (the engine owns it and updates ``round``)."""

    seed: int = 0
    #: run tiles + overview as one batch (else one after another)
    batch_tiles: bool = True
    #: interleaved round (nightly drift control); canned backends vary their jitter with it
    round: int = 0
    #: canonical LLM name -> LLMSpec, for the LLM side
    llm_specs: dict[str, LLMSpec] = field(default_factory=dict)


def _no_context(protocol: Protocol) -> AbstractContextManager[Any]:
    return nullcontext()


@dataclass
class Built:
    """A model ready to time: the step the protocol calls, and how to wait for it.

    ``step()`` runs exactly the timed work for one input; ``synchronize()`` (or None) is
    called before every clock read (CUDA/MPS sync, ``mx.eval``); ``context(protocol)`` is
    entered around warm-up and timing (e.g. ``torch.inference_mode`` + denormal flushing).
    ``tokens``/``out_dim`` are what the model actually produces (checked against the plan).
    """

    step: Callable[[], Any]
    tokens: int
    out_dim: int
    synchronize: Callable[[], None] | None = None
    memory: MemoryProbe | None = None
    context: Callable[[Protocol], AbstractContextManager[Any]] = _no_context
    build_s: float = 0.0
    extra: EncoderExtra = field(default_factory=EncoderExtra)


class EncoderRunner(ABC):
    """Builds and times vision encoders. One instance per sweep side; keep caches on it."""

    def __init__(self, config: RunnerConfig, context: RunContext | None = None):
        self.config = config
        self.context = context or RunContext()

    @abstractmethod
    def build(
        self, spec: EncoderSpec, resolution: int, tiling: str, weights: str | None = None
    ) -> Built:
        """Build ``spec`` for total side ``resolution`` and ``tiling`` (a tiling string such as
        ``"2x2+overview"``); return the timed step. Raise :class:`Skipped` if it cannot run here.
        """

    def measure(self, task: EncoderTask, protocol: Protocol) -> Outcome:
        """Build, time under ``protocol``, check the token count; the default suits most backends.

        Override when the runtime has its own clock (Core ML's native predict time) or
        nothing to build (canned / predicted latencies).
        """
        from harness.encoders.zoo import get_spec

        t0 = time.perf_counter()
        built = self.build(get_spec(task.name), task.resolution, task.tiling, task.weights)
        build_s = built.build_s or (time.perf_counter() - t0)
        with built.context(protocol):
            built.step()  # shape check before timing; lazy compilation happens here too
            if built.synchronize:
                built.synchronize()
            m = measure(built.step, protocol, synchronize=built.synchronize, memory=built.memory)
        check_tokens(task, built.tokens)
        extra = built.extra
        extra.out_dim = built.out_dim
        extra.settings = {**self.config.recorded(), **extra.settings}
        return Outcome(m, extra, build_s=build_s)


class LLMRunner(ABC):
    """Times LLM prefill and the projector. One instance per sweep side; keep caches on it."""

    #: whether the engine may build k of L layers and extrapolate (``sample_layers``)
    SUPPORTS_LAYER_SAMPLING: ClassVar[bool] = True

    def __init__(self, config: RunnerConfig, context: RunContext | None = None):
        self.config = config
        self.context = context or RunContext()

    def fits(self, spec: LLMSpec, tokens: int) -> bool:
        """Whether the whole model fits in memory here (else the engine layer-samples it)."""
        return True

    @abstractmethod
    def prefill(
        self,
        task: PrefillTask,
        spec: LLMSpec,
        in_dim: int,
        protocol: Protocol,
        sample_layers: int | None = None,
    ) -> Outcome:
        """Time the prefill of ``task.tokens`` visual + ``task.prompt_tokens`` text tokens.

        ``in_dim`` is the encoder width feeding the projector; return the projector measured
        on the same inputs as ``Outcome.projector`` (or None). ``sample_layers=k``: build k of
        the L layers and extrapolate (``extra.latency_source = "estimated"``).
        """

    @abstractmethod
    def projector(self, task: ProjectorTask, spec: LLMSpec, protocol: Protocol) -> Outcome:
        """Time the projector ``task.in_dim -> spec.hidden`` on ``task.tokens`` tokens."""


def check_tokens(task: EncoderTask, produced: int) -> None:
    """A runner's output must have the token count the plan (the zoo's rule) predicted."""
    if produced != task.tokens:
        raise RuntimeError(
            f"{task.name} produced {produced} tokens at {task.resolution} ({task.tiling}); "
            f"the plan expected {task.tokens}"
        )


def encoder_outcome(result: Any, task: EncoderTask) -> Outcome:
    """An :class:`Outcome` from a runner function's ``EncoderResult`` (token count checked)."""
    check_tokens(task, int(result.tokens))
    extra = EncoderExtra.from_dict(
        {**result.extra, "params_m": result.params_m, "out_dim": result.out_dim}
    )
    return Outcome(result.measurement, extra, build_s=result.build_s)


def prefill_outcome(result: Any, in_dim: int, hidden: int) -> Outcome:
    """An :class:`Outcome` (with its projector) from a runner function's ``PrefillResult``."""
    extra = PrefillExtra.from_dict(
        {
            **result.extra,
            "encoder_dim": in_dim,  # the projector_ms below is for this encoder width
            "projector_ms": result.projector_ms,
            "sampled_layers": result.sampled_layers,
            "total_layers": result.total_layers,
            "params_b": result.params_b,
        }
    )
    if result.estimated:
        extra.latency_source = "estimated"
    projector = Outcome(
        result.projector, ProjectorExtra(in_dim=in_dim, out_dim=hidden), build_s=0.0
    )
    return Outcome(result.measurement, extra, build_s=result.build_s, projector=projector)


# --------------------------------------------------------------------------------------------
# The descriptor and the registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """A backend module's public face: its config class and the runners it provides."""

    name: str
    config: type[RunnerConfig]
    encoder: type[EncoderRunner] | None = None
    llm: type[LLMRunner] | None = None
    description: str = ""
    #: whether its latencies are timed on this machine (False for canned ones): a sweep whose
    #: sides all say False has no machine speed to reference and skips the canary
    timed_here: bool = True

    def sides(self) -> list[Side]:
        out: list[Side] = []
        if self.encoder is not None:
            out.append("encoder")
        if self.llm is not None:
            out.append("llm")
        return out

    def make_config(self, preset: Mapping[str, Any], side: Side) -> RunnerConfig:
        cfg = self.config.from_preset(preset, side)
        cfg.name = self.name
        return cfg

    def encoder_runner(self, config: RunnerConfig, context: RunContext) -> EncoderRunner:
        if self.encoder is None:
            raise UserError(
                f"backend {self.name!r} has no encoder runner; encoder backends: "
                f"{', '.join(names_for('encoder'))}"
            )
        return self.encoder(config, context)

    def llm_runner(self, config: RunnerConfig, context: RunContext) -> LLMRunner:
        if self.llm is None:
            raise UserError(
                f"backend {self.name!r} has no LLM runner; LLM backends: {', '.join(names_for('llm'))}"
            )
        return self.llm(config, context)


#: name -> Backend, entries registered as lazy ``"module:attr"`` strings
BACKENDS: Registry[Backend] = Registry("backend")

#: which sides each built-in provides, known without importing it (for messages and --help)
_SIDES: dict[str, tuple[Side, ...]] = {}


def register_backend(
    name: str,
    target: str | Backend,
    sides: tuple[Side, ...] = ("encoder", "llm"),
    aliases: tuple[str, ...] = (),
) -> None:
    """Register a backend: ``target`` is a :class:`Backend` or ``"module:attr"`` naming one."""
    BACKENDS.register(name, target, aliases)
    _SIDES[name.lower()] = sides


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (imports its module); UserError with "did you mean"."""
    backend = BACKENDS.get(name)
    if not isinstance(backend, Backend):
        raise UserError(
            f"backend {name!r} does not name a harness.backends.base.Backend (got {type(backend).__name__})"
        )
    return backend


def names_for(side: Side) -> list[str]:
    """Registered backends offering ``side`` (declared at registration; no import)."""
    return [n for n in BACKENDS.names() if side in _SIDES.get(n, ("encoder", "llm"))]


def iter_backends() -> Iterator[str]:
    return iter(BACKENDS.names())


__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "PRECISION_ALIASES",
    "PRECISION_BYTES",
    "Backend",
    "Built",
    "EncoderExtra",
    "EncoderRunner",
    "Extra",
    "LLMRunner",
    "LatencySource",
    "Outcome",
    "Parity",
    "PrefillExtra",
    "ProjectorExtra",
    "RunContext",
    "RunnerConfig",
    "Side",
    "Skipped",
    "canonical_precision",
    "check_tokens",
    "encoder_outcome",
    "get_backend",
    "names_for",
    "prefill_outcome",
    "register_backend",
]
