"""Turn a sweep config into a factorized measurement plan (pure; no model is built).

TTFT of a grid point (encoder, resolution, tiling, LLM) needs the encoder at (resolution,
tiling), the projector at (encoder channels, LLM, tokens) and the prefill at (LLM, tokens).
Each unique task is listed once, so a grid of E encoder settings x L LLMs costs about
E + L x (distinct token counts) measurements instead of E x L.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.errors import UserError
from harness.tasks import EncoderTask, MeasurementKey, PrefillTask, ProjectorTask, Task

if TYPE_CHECKING:
    from harness.sweep.configs import SweepConfig

__all__ = [
    "EncoderTask",
    "GridPoint",
    "Job",
    "Plan",
    "PrefillTask",
    "ProjectorTask",
    "build_plan",
    "jobs",
    "encoder_task",
    "llm_tasks",
    "point_tasks",
]


@dataclass(frozen=True)
class GridPoint:
    encoder: str
    resolution: int
    tiling: str
    llm: str
    tokens: int
    in_dim: int


@dataclass
class Plan:
    points: list[GridPoint] = field(default_factory=list)
    encoder_tasks: list[EncoderTask] = field(default_factory=list)
    projector_tasks: list[ProjectorTask] = field(default_factory=list)
    prefill_tasks: list[PrefillTask] = field(default_factory=list)

    @property
    def n_measurements(self) -> int:
        return len(self.encoder_tasks) + len(self.projector_tasks) + len(self.prefill_tasks)

    def summary(self) -> str:
        return (
            f"{len(self.points)} grid points -> {self.n_measurements} measurements "
            f"({len(self.encoder_tasks)} encoder, {len(self.prefill_tasks)} prefill, "
            f"{len(self.projector_tasks)} projector)"
        )


def encoder_task(
    cfg: SweepConfig, encoder_label: str, resolution: int, tiling: str, tokens: int, out_dim: int
) -> EncoderTask:
    """The encoder task of a grid point (the one place it is made; see :func:`point_tasks`)."""
    enc = cfg.encoders[encoder_label]
    return EncoderTask(encoder_label, enc.name, resolution, tiling, tokens, out_dim, enc.weights)


def llm_tasks(
    cfg: SweepConfig, llm_label: str, llm: str, tokens: int, out_dim: int
) -> tuple[PrefillTask, ProjectorTask]:
    """The prefill of ``tokens`` visual tokens and the projector from ``out_dim`` channels."""
    return (
        PrefillTask(llm_label, llm, tokens, cfg.prompt_tokens),
        ProjectorTask(llm_label, llm, tokens, out_dim),
    )


def point_tasks(
    cfg: SweepConfig,
    encoder_label: str,
    llm_label: str,
    llm: str,
    resolution: int,
    tiling: str,
    tokens: int,
    out_dim: int,
) -> tuple[EncoderTask, PrefillTask, ProjectorTask]:
    """The three tasks one grid point needs (encoder, prefill, its projector), made as
    :func:`build_plan` makes them; ``harness.search`` measures a configuration with them."""
    return (
        encoder_task(cfg, encoder_label, resolution, tiling, tokens, out_dim),
        *llm_tasks(cfg, llm_label, llm, tokens, out_dim),
    )


def build_plan(
    cfg: SweepConfig,
    encoder_info: Callable[[str, int, str], tuple[int, int]],
    llm_names: dict[str, str],
) -> Plan:
    """Enumerate the grid and its unique tasks.

    ``encoder_info(name, resolution, tiling) -> (tokens, out_dim)`` validates and counts without
    building (raises UserError for an invalid resolution); ``llm_names`` maps LLM labels to
    canonical names.
    """
    plan = Plan()
    seen_enc: set[tuple] = set()
    seen_pre: set[tuple] = set()
    seen_proj: set[tuple] = set()
    vlm_llms = set(cfg.vlms)  # a VLM's own decoder pairs only with the encoders that name it
    for label, enc in cfg.encoders.items():
        pairs = {
            k: v
            for k, v in llm_names.items()
            if (k in enc.llms if enc.llms is not None else k not in vlm_llms)
        }
        if enc.llms is not None and (unknown := [k for k in enc.llms if k not in llm_names]):
            raise UserError(
                f"encoders.{label}.llms: no LLM labelled {unknown[0]!r} in the grid (labels: {', '.join(llm_names)})"
            )
        tilings = enc.tilings or [cfg.tiling.spec]
        for resolution in enc.resolutions:
            for tiling in tilings:
                tokens, out_dim = encoder_info(enc.name, resolution, tiling)
                ek = (enc.name, resolution, tiling)
                if ek not in seen_enc:
                    seen_enc.add(ek)
                    plan.encoder_tasks.append(
                        encoder_task(cfg, label, resolution, tiling, tokens, out_dim)
                    )
                for llm_label, llm in pairs.items():
                    pt, jt = llm_tasks(cfg, llm_label, llm, tokens, out_dim)
                    plan.points.append(
                        GridPoint(enc.name, resolution, tiling, llm, tokens, out_dim)
                    )
                    pk = (llm, tokens)
                    if pk not in seen_pre:
                        seen_pre.add(pk)
                        plan.prefill_tasks.append(pt)
                    jk = (llm, tokens, out_dim)
                    if jk not in seen_proj:
                        seen_proj.add(jk)
                        plan.projector_tasks.append(jt)
    if not plan.points:
        raise UserError("empty grid: no (encoder, resolution, tiling, LLM) combination to measure")
    if plan.n_measurements > cfg.max_measurements:
        raise UserError(
            f"the grid needs {plan.n_measurements} measurements (> max_measurements={cfg.max_measurements}); "
            "narrow it or raise max_measurements"
        )
    # Prefill tasks of one LLM are grouped so its model is built once.
    plan.prefill_tasks.sort(key=lambda t: (list(llm_names.values()).index(t.llm), t.tokens))
    plan.projector_tasks.sort(
        key=lambda t: (list(llm_names.values()).index(t.llm), t.in_dim, t.tokens)
    )
    return plan


@dataclass(frozen=True)
class Job:
    """One task to measure under its store key (what :class:`harness.sweep.engine.Measurer` runs).

    A prefill job also times the projector for ``in_dim`` encoder channels on the same
    inputs; that by-product is stored under ``projector_key``.
    """

    key: MeasurementKey
    label: str
    task: Task
    in_dim: int = 0
    projector_key: MeasurementKey | None = None


def label_of(task: Task) -> str:
    """A short human label for progress lines and skip/failure reports."""
    if isinstance(task, EncoderTask):
        return f"{task.name} @ {task.resolution} {task.tiling}"
    if isinstance(task, PrefillTask):
        return f"{task.llm} prefill {task.tokens}+{task.prompt_tokens} tok"
    return f"projector {task.in_dim}->{task.llm} {task.tokens} tok"


def jobs(plan: Plan, key: Callable[[Task], MeasurementKey]) -> list[Job]:
    """The plan's tasks as jobs, in measuring order: encoders, prefills, projectors.

    ``key(task)`` makes each store key (``Runners.key``: backend, device and precision of
    the task's side). Each prefill carries the first planned projector width of its
    (LLM, tokens), so that projector usually comes along for free.
    """
    first_in_dim: dict[tuple[str, int], ProjectorTask] = {}
    for pt in plan.projector_tasks:
        first_in_dim.setdefault((pt.llm, pt.tokens), pt)
    out = [Job(key(t), label_of(t), t) for t in plan.encoder_tasks]
    for t in plan.prefill_tasks:
        pj = first_in_dim[(t.llm, t.tokens)]
        out.append(Job(key(t), label_of(t), t, in_dim=pj.in_dim, projector_key=key(pj)))
    out += [Job(key(t), label_of(t), t) for t in plan.projector_tasks]
    return out
