"""ExecuTorch backend (``executorch``): models captured with ``torch.export``, lowered with a
delegate's partitioner and run through the ExecuTorch runtime (``executorch.runtime``).

- ``delegate: xnnpack`` (XnnpackPartitioner, the CPU delegate ExecuTorch ships for Android /
  Linux) runs here; ``coreml`` and ``mps`` are the macOS delegates: they validate everywhere
  and are stored as *skipped* off macOS.
- precisions: ``float32``; ``int8`` = XNNPACK's dynamic quantization (PT2E
  ``XNNPACKQuantizer``: int8 per-channel weights, activations quantized per token at run
  time) of linear layers, XNNPACK only.
- encoders and the decoder prefill at the plan's fixed token count (a static-shape program
  per token count). A model ``torch.export`` or the partitioner cannot handle is a *skipped*
  point with the exporter's reason.
- recorded: delegate, how many delegate calls / leftover portable ops the lowered graph has,
  the runtime's thread-pool size, lowering seconds (``compile_s``), parity vs float32 eager.

Needs the ``[executorch]`` extra.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.backends.base import Backend, RunnerConfig
from harness.backends.onnxrt import missing_runtime
from harness.backends.portable import Compiled, PortableEncoderRunner, PortableLLMRunner
from harness.errors import UserError, suggest

if TYPE_CHECKING:
    import torch
    from torch import nn

DELEGATES = ("xnnpack", "coreml", "mps")
EXTRA = "executorch"


@dataclass
class ExecuTorchConfig(RunnerConfig):
    """Settings of the ExecuTorch backend (``encoder_options`` / ``llm_options``)."""

    PRECISIONS: ClassVar[tuple[str, ...]] = ("float32", "float16", "int8")
    REQUIRES: ClassVar[tuple[str, ...]] = ("executorch",)
    INSTALL_HINT: ClassVar[str] = f"pip install 'vlm-pareto[{EXTRA}]'"

    #: partitioner / delegate: xnnpack | coreml | mps
    delegate: str = "xnnpack"
    #: ExecuTorch thread-pool size; 0 = leave the runtime's default (all cores)
    threads: int = 0

    def validate(self) -> None:
        super().validate()
        if self.delegate not in DELEGATES:
            raise UserError(suggest(self.delegate, list(DELEGATES), "executorch delegate"))
        if self.threads < 0:
            raise UserError("executorch threads must be >= 0")
        if self.precision == "float16" and self.delegate == "xnnpack":
            raise UserError(
                "executorch float16 runs on the coreml and mps delegates; with xnnpack use float32 or int8"
            )
        if self.precision == "int8" and self.delegate != "xnnpack":
            raise UserError(
                f"executorch int8 (dynamic quantization) runs on the xnnpack delegate, not {self.delegate}"
            )
        err = missing_runtime(self.name or "executorch", self.REQUIRES, EXTRA)
        if err:
            raise err

    def availability(self) -> str | None:
        reason = super().availability()
        if reason:
            return reason
        if self.delegate in ("coreml", "mps") and sys.platform != "darwin":
            return f"executorch delegate {self.delegate} needs macOS on Apple silicon"
        return None


def _threadpool(threads: int) -> int | None:
    """Set (when ``threads`` > 0) and return the ExecuTorch thread-pool size, if exposed."""
    try:
        from executorch.extension.pybindings import portable_lib as lib
    except ImportError:  # pragma: no cover - depends on the wheel
        return None
    if threads > 0 and hasattr(lib, "_unsafe_reset_threadpool"):
        lib._unsafe_reset_threadpool(threads)
    getter = getattr(lib, "_threadpool_get_thread_count", None)
    return int(getter()) if getter else None


class _ExecuTorchCompiler:
    """``compile_graph`` for the runner classes below (their ``config`` is a ExecuTorchConfig)."""

    def compile_graph(
        self, module: nn.Module, inputs: tuple[torch.Tensor, ...], tag: str
    ) -> Compiled:
        import copy

        from harness.backends.graphs import lower_executorch, quiet

        cfg: ExecuTorchConfig = self.config  # type: ignore[attr-defined]
        args = inputs
        if cfg.precision == "float16":
            module = copy.deepcopy(module).half()
            args = tuple(x.half() for x in inputs)
        buffer, compile_s, info = lower_executorch(
            module, args, cfg.delegate, quantize="int8" if cfg.precision == "int8" else None
        )
        t0 = time.perf_counter()
        with quiet():
            from executorch.runtime import Runtime

            program = Runtime.get().load_program(buffer)
            method = program.load_method("forward")
        if method is None:
            from harness.backends.base import Skipped

            raise Skipped("executorch program has no 'forward' method")
        compile_s += time.perf_counter() - t0
        feed = list(args)
        first = method.execute(feed)
        import executorch

        settings: dict[str, Any] = {
            **info,
            "program_bytes": len(buffer),
            "threadpool_threads": _threadpool(cfg.threads),
            "executorch": getattr(executorch, "__version__", None) or _dist_version("executorch"),
        }
        # The loaded program reads the serialised buffer in place: it (and the program) must
        # outlive every execute() -- freeing it early crashes the runtime (a segfault).
        keep = (buffer, program)

        def step() -> Any:
            assert keep
            return method.execute(feed)

        return Compiled(step=step, first_output=first[0], compile_s=compile_s, settings=settings)


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


class ExecuTorchEncoderRunner(_ExecuTorchCompiler, PortableEncoderRunner):
    """Encoders through the ExecuTorch runtime."""


class ExecuTorchLLMRunner(_ExecuTorchCompiler, PortableLLMRunner):
    """Decoder prefill (fixed token count) + projector through the ExecuTorch runtime."""


BACKEND = Backend(
    "executorch",
    ExecuTorchConfig,
    encoder=ExecuTorchEncoderRunner,
    llm=ExecuTorchLLMRunner,
    description="ExecuTorch (torch.export + XNNPACK / Core ML / MPS delegates)",
)

__all__ = ["BACKEND", "DELEGATES", "ExecuTorchConfig"]
