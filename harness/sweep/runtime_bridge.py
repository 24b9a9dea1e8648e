"""Bridge from today's sweep dispatch (:mod:`harness.sweep.runners`) to the deployment-runtime
backends of :mod:`harness.backends` (``onnxrt``, ``executorch``, ``torch-compile``).

The sweep's :class:`~harness.sweep.configs.BackendConfig` is handed to the backend as its
preset mapping (``encoder_options`` / ``llm_options`` hold runtime settings), so a bad
setting, an unsupported precision or a runtime that is not installed is a UserError at
config time (exit 2, before anything is measured). A runtime that is installed but cannot
run on this machine (Core ML off macOS, CUDA without a GPU) makes its points *skipped*
with the reason. Results come back as the sweep's own ``Outcome`` (extra as a flat dict).

Once the backends refactor (issue 11) dispatches every backend through the registry, this
module is no longer needed.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.backends.base import Outcome as RuntimeOutcome
    from harness.protocol import Protocol
    from harness.sweep.configs import BackendConfig, SweepConfig
    from harness.sweep.runners import Outcome

#: backends served through the registry (the others still go through runners.py)
RUNTIMES = ("onnxrt", "executorch", "torch-compile")


def is_runtime(name: str) -> bool:
    return name in RUNTIMES


def preset(b: BackendConfig) -> dict[str, Any]:
    out = asdict(b)
    out["encoder_options"] = dict(b.encoder_options or {})
    out["llm_options"] = dict(b.llm_options or {})
    return out


def side_config(b: BackendConfig, side: str) -> Any:
    """The runtime backend's validated config for ``side`` (UserError if bad / not installed)."""
    from harness.backends import get_backend

    name = b.encoder_backend if side == "encoder" else b.llm_backend
    return get_backend(name).make_config(preset(b), side)  # type: ignore[arg-type]


def validate(cfg: SweepConfig) -> None:
    """Config-time checks of the runtime sides of ``cfg`` (called by configs.validate)."""
    b = cfg.backend
    if is_runtime(b.encoder_backend):
        side_config(b, "encoder")
    if is_runtime(b.llm_backend):
        side_config(b, "llm")


class RuntimeSides:
    """Runners of the runtime sides of one sweep (built once, reused for every task)."""

    def __init__(self, cfg: SweepConfig, llm_specs: dict[str, Any]):
        from harness.backends.base import RunContext

        self.cfg = cfg
        self.context = RunContext(seed=cfg.seed, batch_tiles=cfg.batch_tiles, llm_specs=llm_specs)
        self._enc: Any = None
        self._llm: Any = None

    def _runner(self, side: str) -> Any:
        from harness.backends import get_backend
        from harness.backends.base import Skipped

        b = self.cfg.backend
        config = side_config(b, side)
        reason = config.availability()
        if reason:
            raise Skipped(reason)
        backend = get_backend(config.name)
        return backend.encoder_runner(config, self.context) if side == "encoder" else backend.llm_runner(config, self.context)

    def encoder(self, task: Any, protocol: Protocol, weights: str | None = None) -> Outcome:
        from harness.tasks import EncoderTask

        if self._enc is None:
            self._enc = self._runner("encoder")
        t = EncoderTask(task.label, task.name, task.resolution, task.tiling, task.tokens, task.out_dim, weights)
        return convert(self._enc.measure(t, protocol))

    def prefill(self, task: Any, spec: Any, in_dim: int, protocol: Protocol, sample_layers: int | None) -> Outcome:
        if self._llm is None:
            self._llm = self._runner("llm")
        out = self._llm.prefill(task, spec, in_dim, protocol, sample_layers=sample_layers)
        res = convert(out)
        if out.projector is not None:
            res.side = {("projector", task.llm, task.tokens, in_dim): convert(out.projector)}
        return res

    def projector(self, task: Any, spec: Any, protocol: Protocol) -> Outcome:
        if self._llm is None:
            self._llm = self._runner("llm")
        return convert(self._llm.projector(task, spec, protocol))


def convert(o: RuntimeOutcome) -> Outcome:
    """A registry backend's typed Outcome as the sweep engine's Outcome (flat extra dict)."""
    from harness.sweep.runners import Outcome

    extra = o.extra_dict()
    return Outcome(o.measurement, extra, build_s=o.build_s, estimated=o.estimated)


__all__ = ["RUNTIMES", "RuntimeSides", "convert", "is_runtime", "preset", "side_config", "validate"]
