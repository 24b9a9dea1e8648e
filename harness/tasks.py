"""What can be measured, as plain values: the store key and the three task kinds.

Pure dataclasses with no heavy imports (no SQLAlchemy, no torch), so the planner, the
backend interfaces (:mod:`harness.backends.base`) and the store all share one definition.

- :class:`MeasurementKey` -- the full identity of one stored measurement within a run.
- :class:`EncoderTask`, :class:`PrefillTask`, :class:`ProjectorTask` -- one unique unit of
  work of a plan; a backend runner turns a task into an :class:`~harness.backends.base.Outcome`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.errors import UserError

#: the measurement kinds, in the order a sweep runs them
KINDS = ("encoder", "prefill", "projector")
#: every kind a store row can have: ``canary`` is a run's machine-speed reference workload
#: (harness/canary.py), never a point
MEASUREMENT_KINDS = (*KINDS, "canary")


@dataclass(frozen=True)
class MeasurementKey:
    """The full identity of one measurement within a run (see docs/DESIGN.md).

    Not-applicable fields are ``0`` / ``'none'``, never None (NULLs break unique keys).
    ``backend`` is the runner's registry name and ``dtype`` its precision, so the same
    model timed by two runtimes or at two precisions is two measurements.
    """

    kind: str
    name: str
    resolution: int = 0
    tiling: str = "none"
    tokens: int = 0
    prompt_tokens: int = 0
    in_dim: int = 0
    backend: str = "torch"
    device: str = "cpu"
    dtype: str = "float32"
    protocol: str = "standard"

    def __post_init__(self) -> None:
        if self.kind not in MEASUREMENT_KINDS:
            raise UserError(
                f"measurement kind must be one of {', '.join(MEASUREMENT_KINDS)}, got {self.kind!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EncoderTask:
    """Time encoder ``name`` on one image of total side ``resolution`` cut by ``tiling``."""

    label: str  # key in the sweep's encoders mapping
    name: str  # canonical zoo name
    resolution: int
    tiling: str
    tokens: int  # visual tokens the zoo predicts (the runner's output is checked against it)
    out_dim: int  # channels per token (the projector's in_dim)
    weights: str | None = None  # checkpoint file; None -> random weights from the seed


@dataclass(frozen=True)
class PrefillTask:
    """Time LLM ``llm``'s prefill of ``tokens`` visual + ``prompt_tokens`` text tokens."""

    llm_label: str
    llm: str
    tokens: int
    prompt_tokens: int


@dataclass(frozen=True)
class ProjectorTask:
    """Time the projector from ``in_dim`` encoder channels to ``llm``'s width on ``tokens`` tokens."""

    llm_label: str
    llm: str
    tokens: int
    in_dim: int


Task = EncoderTask | PrefillTask | ProjectorTask
