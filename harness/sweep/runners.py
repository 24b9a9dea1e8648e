"""The two runners of a sweep: its encoder backend and its LLM backend, chosen by name.

A backend preset (``sweeps/backend/*.yaml``, typed as :class:`BackendConfig`) names one
backend per side (``encoder_backend``, ``llm_backend``); each is looked up in the backend
registry (:mod:`harness.backends`), configured from the preset by its own config class and
asked for its runner. Nothing here knows any particular backend: adding one is a module and
a YAML. A preset may register backends of its own (``runtimes: {name: "module:attr"}``,
with ``import_path`` resolved like a custom encoder's).

:class:`Runners` also makes each task's :class:`~harness.tasks.MeasurementKey` (backend
name, device and precision come from the side's config) and decides layer sampling.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

from harness.backends import BACKENDS, get_backend, names_for, register_backend
from harness.backends.base import (
    EncoderRunner,
    LLMRunner,
    Outcome,
    RunContext,
    RunnerConfig,
    Side,
    Skipped,
)
from harness.errors import UserError, suggest
from harness.protocol import Protocol, protocol_from_fields
from harness.sweep.configs import BackendConfig, SweepConfig, import_dir
from harness.tasks import EncoderTask, MeasurementKey, PrefillTask, ProjectorTask, Task

__all__ = ["Outcome", "Runners", "configure_backend", "protocol_of"]


def protocol_of(cfg: SweepConfig) -> Protocol:
    """The sweep's protocol config as a validated :class:`Protocol` (same fields by name)."""
    return protocol_from_fields(asdict(cfg.protocol))


def register_runtimes(backend: BackendConfig) -> None:
    """Register the backends a preset defines itself (``runtimes``), importable from ``import_path``."""
    if not backend.runtimes:
        return
    folder = import_dir(backend.import_path, "backend")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    for name, target in backend.runtimes.items():
        if not isinstance(target, str) or ":" not in target:
            raise UserError(
                f"backend preset {backend.name!r}: runtimes.{name} must be 'module:attr', got {target!r}"
            )
        register_backend(name, target)


def configure_backend(backend: BackendConfig) -> dict[Side, RunnerConfig]:
    """Each side's backend config from the preset; UserError for unknown names or bad settings."""
    register_runtimes(backend)
    preset = asdict(backend)
    out: dict[Side, RunnerConfig] = {}
    sides: tuple[tuple[Side, str], ...] = (("encoder", "encoder_backend"), ("llm", "llm_backend"))
    for side, key in sides:
        name = str(preset[key])
        what = "encoder backend" if side == "encoder" else "LLM backend"
        if name not in BACKENDS:
            raise UserError(suggest(name, names_for(side), what))
        chosen = get_backend(name)
        if side not in chosen.sides():
            raise UserError(
                f"backend {name!r} has no {side} runner (backend.{key}); "
                f"{what}s: {', '.join(names_for(side))}"
            )
        out[side] = chosen.make_config(preset, side)
    return out


class Runners:
    """Measures tasks for one sweep config; caches runners, LLM specs and sampling decisions."""

    def __init__(self, cfg: SweepConfig, llm_specs: dict[str, Any]):
        self.cfg = cfg
        self.protocol = protocol_of(cfg)
        self.llm_specs = llm_specs  # canonical name -> LLMSpec
        self.context = RunContext(seed=cfg.seed, batch_tiles=cfg.batch_tiles, llm_specs=llm_specs)
        configs = configure_backend(cfg.backend)
        self.encoder_config, self.llm_config = configs["encoder"], configs["llm"]
        self._encoder: EncoderRunner | None = None
        self._llm: LLMRunner | None = None
        from harness.llms.zoo import LLMS

        self.llm_specs_by_label = {
            label: LLMS.canonical(llm.name) if llm.name in LLMS else llm.name
            for label, llm in cfg.llms.items()
        }

    # -- pairing (a VLM's vision tower joins only its own decoder; docs/vlms.md) ------------
    def _llm_names(self, labels: list[str]) -> list[str]:
        return [self.llm_specs_by_label[x] for x in labels if x in self.llm_specs_by_label]

    def encoder_pairs(self, label: str) -> dict[str, Any]:
        """``pairs_with`` for an encoder restricted to some LLMs (TTFT joins only those)."""
        llms = self.cfg.encoders[label].llms
        return {"pairs_with": self._llm_names(llms)} if llms is not None else {}

    def llm_pairs(self, llm_label: str) -> dict[str, Any]:
        """``pairs_with`` for a VLM's own decoder: the encoders that name it."""
        if llm_label not in self.cfg.vlms:
            return {}
        encs = sorted(
            {
                e.name
                for e in self.cfg.encoders.values()
                if e.llms is not None and llm_label in e.llms
            }
        )
        return {"pairs_with": encs}

    # -- round (interleaved repetitions; canned backends vary their jitter with it) ---------
    @property
    def round(self) -> int:
        return self.context.round

    @round.setter
    def round(self, value: int) -> None:
        self.context.round = value

    # -- runners, created on first use after the availability check ----------------------
    def encoder_runner(self) -> EncoderRunner:
        if self._encoder is None:
            reason = self.encoder_config.availability()
            if reason:
                raise Skipped(reason)
            self._encoder = get_backend(self.encoder_config.name).encoder_runner(
                self.encoder_config, self.context
            )
        return self._encoder

    def llm_runner(self) -> LLMRunner:
        if self._llm is None:
            reason = self.llm_config.availability()
            if reason:
                raise Skipped(reason)
            self._llm = get_backend(self.llm_config.name).llm_runner(self.llm_config, self.context)
        return self._llm

    # -- keys -------------------------------------------------------------------------------
    def key(self, task: Task) -> MeasurementKey:
        """The store key of ``task``: backend name, device and precision of its side's config."""
        proto = self.protocol.name
        if isinstance(task, EncoderTask):
            c = self.encoder_config
            return MeasurementKey(
                "encoder",
                task.name,
                resolution=task.resolution,
                tiling=task.tiling,
                tokens=task.tokens,
                backend=c.name,
                device=c.device,
                dtype=c.key_dtype(),
                protocol=proto,
            )
        c = self.llm_config
        if isinstance(task, PrefillTask):
            return MeasurementKey(
                "prefill",
                task.llm,
                tokens=task.tokens,
                prompt_tokens=task.prompt_tokens,
                backend=c.name,
                device=c.device,
                dtype=c.key_dtype(),
                protocol=proto,
            )
        return MeasurementKey(
            "projector",
            task.llm,
            tokens=task.tokens,
            in_dim=task.in_dim,
            backend=c.name,
            device=c.device,
            dtype=c.key_dtype(),
            protocol=proto,
        )

    # -- measuring --------------------------------------------------------------------------
    def encoder(self, task: EncoderTask) -> Outcome:
        out = self.encoder_runner().measure(task, self.protocol)
        out.extra.settings.update(self.encoder_pairs(task.label))
        return out

    def sample_layers_for(self, llm: str) -> int | None:
        """k layers to build and time, or None for the whole model."""
        if self.cfg.sample_layers is not None:
            return self.cfg.sample_layers
        if not self.cfg.auto_sample:
            return None
        backend = get_backend(self.llm_config.name)
        if backend.llm is None or not backend.llm.SUPPORTS_LAYER_SAMPLING:
            return None
        spec = self.llm_specs[llm]
        if spec.params_b > self.cfg.auto_sample_above_b:
            return min(self.cfg.auto_sample_k, spec.layers)
        if not self.llm_runner().fits(spec, 4096):
            return min(self.cfg.auto_sample_k, spec.layers)
        return None

    def prefill(self, task: PrefillTask, in_dim: int) -> Outcome:
        """Prefill for (LLM, tokens); the projector for ``in_dim`` comes along as ``Outcome.projector``."""
        runner = self.llm_runner()
        k = self.sample_layers_for(task.llm)
        out = runner.prefill(task, self.llm_specs[task.llm], in_dim, self.protocol, sample_layers=k)
        out.extra.settings.update(self.llm_pairs(task.llm_label))
        return out

    def projector(self, task: ProjectorTask) -> Outcome:
        return self.llm_runner().projector(task, self.llm_specs[task.llm], self.protocol)

    def measure(self, task: Task, in_dim: int = 0) -> Outcome:
        """Dispatch any task to its side's runner (``in_dim`` is for prefill tasks)."""
        if isinstance(task, EncoderTask):
            return self.encoder(task)
        if isinstance(task, PrefillTask):
            return self.prefill(task, in_dim)
        return self.projector(task)
