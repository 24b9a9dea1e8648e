"""``torch-compile``: the torch backend's compiled mode (TorchInductor), with low precision.

The same encoder / decoder graphs as the eager torch runner, wrapped in ``torch.compile``
(inductor; CPU here, CUDA where present). Compilation happens on the first call, whose time
is stored as ``extra.compile_s`` and never as latency; warm-up and timing start after it.

- precisions: ``float32``; ``bfloat16`` (CPU with AVX512_BF16 / AMX, CUDA) and ``float16``
  (CUDA; allowed on CPU, usually slow); ``int8`` = torchao's dynamic quantization of every
  ``nn.Linear`` (int8 weights per channel, activations per token at run time) -- for
  encoders only their linear layers (ViT blocks, ConvNeXt's point-wise MLPs, FastViTHD's
  attention stages) are quantized; convolutions stay float32.
- ``compile: false`` runs the same converted model eagerly (with the same parity check),
  which is how the runtime benchmark measures bf16 / int8 *eager* next to compiled.
- ``freezing`` (default true): inductor's inference freezing -- weights become constants,
  so convolutions and linears get oneDNN weight pre-packing and constant folding on the CPU
  (PyTorch's recommended setting for CPU inference; ``TORCHINDUCTOR_FREEZING=1``).
- recorded: inductor mode, freezing, dynamic shapes off, torch version, compile seconds, parity.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.backends.base import Backend, RunnerConfig, Skipped
from harness.backends.portable import Compiled, PortableEncoderRunner, PortableLLMRunner
from harness.denormal import flush_denormal
from harness.errors import UserError, suggest

if TYPE_CHECKING:
    import torch
    from torch import nn

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TorchCompileConfig(RunnerConfig):
    """Settings of the compiled torch backend (``encoder_options`` / ``llm_options``)."""

    PRECISIONS: ClassVar[tuple[str, ...]] = ("float32", "bfloat16", "float16", "int8")
    DEVICES: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    REQUIRES: ClassVar[tuple[str, ...]] = ("torch",)

    #: wrap in torch.compile (false: the converted model eagerly)
    compile: bool = True
    #: torch.compile mode
    mode: str = "default"
    #: inductor freezing (weights as constants: pre-packed, folded); inference only
    freezing: bool = True

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            raise UserError(suggest(self.mode, list(MODES), "torch.compile mode"))
        if self.precision == "int8" and self.device != "cpu":
            raise UserError(
                "torch-compile int8 (torchao dynamic quantization) is set up for the cpu here; "
                "on cuda use float16 or bfloat16"
            )
        if self.precision == "int8":
            from harness.backends.onnxrt import missing_runtime

            err = missing_runtime(self.name or "torch-compile", ("torchao",), "torchao")
            if err:
                raise err

    def availability(self) -> str | None:
        reason = super().availability()
        if reason:
            return reason
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return "torch-compile on cuda needs an NVIDIA GPU and a CUDA build of torch (none here)"
            if self.precision == "bfloat16" and not torch.cuda.is_bf16_supported():
                return "this CUDA device has no bfloat16 support"
        return None


_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "int8": "float32"}


class _TorchCompiler:
    """``compile_graph`` for the runner classes below (their ``config`` is a TorchCompileConfig)."""

    def compile_graph(
        self, module: nn.Module, inputs: tuple[torch.Tensor, ...], tag: str
    ) -> Compiled:
        import torch

        from harness.backends.graphs import count_linears, quiet, short_reason, torch_quantize_int8

        cfg: TorchCompileConfig = self.config  # type: ignore[attr-defined]
        dtype = getattr(torch, _DTYPES[cfg.precision])
        device = torch.device(cfg.device)
        t0 = time.perf_counter()
        module = module.to(device=device, dtype=dtype)
        args = tuple(x.to(device=device, dtype=dtype) for x in inputs)
        settings: dict[str, Any] = {
            "torch": torch.__version__,
            "compile": cfg.compile,
            "compile_mode": cfg.mode if cfg.compile else None,
            "freezing": bool(cfg.compile and cfg.freezing),
            "dynamic": False,
        }
        if cfg.precision == "int8":
            n = count_linears(module)
            if n == 0:
                raise Skipped(
                    "torch-compile int8 quantizes nn.Linear layers and this model has none"
                )
            try:
                settings["quantization"] = torch_quantize_int8(module)
            except Exception as e:
                raise Skipped(f"torchao int8 quantization failed: {short_reason(e)}") from e
            settings["quantized_linears"] = n
        runner: Any = module
        if cfg.compile:
            runner = torch.compile(module, mode=cfg.mode, dynamic=False)
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        freeze: Any = contextlib.nullcontext()
        if cfg.compile and cfg.freezing:
            import torch._inductor.config as inductor_config

            freeze = inductor_config.patch(freezing=True)
        try:
            # inductor compiles on the first call, under the settings in force then
            with quiet(), torch.inference_mode(), flush_denormal(True), freeze:
                first = runner(*args)
                if sync:
                    sync()
        except Exception as e:
            if not cfg.compile:
                raise
            raise Skipped(f"torch.compile (inductor) failed: {short_reason(e)}") from e
        compile_s = time.perf_counter() - t0
        first_out = first[0] if isinstance(first, (tuple, list)) else first

        def step() -> Any:
            out = runner(*args)
            if sync:
                sync()
            return out

        @contextlib.contextmanager
        def context() -> Iterator[None]:
            with torch.inference_mode(), flush_denormal(True):
                yield

        return Compiled(
            step=step,
            first_output=first_out,
            compile_s=compile_s,
            settings=settings,
            context=context,
        )


class TorchCompileEncoderRunner(_TorchCompiler, PortableEncoderRunner):
    """Encoders through torch.compile (inductor)."""


class TorchCompileLLMRunner(_TorchCompiler, PortableLLMRunner):
    """Decoder prefill + projector through torch.compile (inductor)."""


BACKEND = Backend(
    "torch-compile",
    TorchCompileConfig,
    encoder=TorchCompileEncoderRunner,
    llm=TorchCompileLLMRunner,
    description="PyTorch with torch.compile (inductor), float32 / bf16 / fp16 / torchao int8",
)

__all__ = ["BACKEND", "MODES", "TorchCompileConfig"]
