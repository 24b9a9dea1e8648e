"""ONNX Runtime backend (``onnxrt``): encoders and decoder prefill exported with
``torch.onnx.export(dynamo=True)`` and run by an ONNX Runtime execution provider.

- ``provider: cpu`` (CPUExecutionProvider) runs here; ``cuda`` (CUDAExecutionProvider) and
  ``coreml`` (CoreMLExecutionProvider, macOS) are configs that validate everywhere and are
  stored as *skipped* where the provider is not available.
- precisions: ``float32``; ``int8`` = ONNX Runtime's dynamic quantization (int8 weights,
  activations quantized at run time) of MatMul/Gemm (``int8_ops``; Conv optional), CPU
  provider only;
  ``float16`` = the model exported in half precision, CUDA / Core ML providers only.
- recorded with every measurement: provider, graph optimisation level, intra-/inter-op
  threads, the ONNX opset, export seconds (``compile_s``), parity vs float32 eager.

The decoder graph takes ``inputs_embeds`` (visual + prompt embeddings) and returns the last
position's logits plus the KV cache (:class:`harness.backends.graphs.PrefillGraph`); the
projector is exported too, so TTFT can be composed entirely from ONNX Runtime.
Needs the ``[onnx]`` extra (onnxruntime, onnx, onnxscript).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.backends.base import Backend, RunnerConfig, Skipped
from harness.backends.portable import Compiled, PortableEncoderRunner, PortableLLMRunner
from harness.errors import UserError, suggest

if TYPE_CHECKING:
    import torch
    from torch import nn

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
OPT_LEVELS = ("disable", "basic", "extended", "all")
EXTRA = "onnx"


def missing_runtime(name: str, modules: tuple[str, ...], extra: str) -> UserError | None:
    """A one-line UserError naming the extra to install if any of ``modules`` is missing."""
    from harness.backends.base import is_importable

    missing = [m for m in modules if not is_importable(m)]
    if not missing:
        return None
    return UserError(
        f"backend {name!r} needs {', '.join(missing)}, which is not installed: "
        f"pip install 'vlm-pareto[{extra}]'"
    )


@dataclass
class OnnxRTConfig(RunnerConfig):
    """Settings of the ONNX Runtime backend (``encoder_options`` / ``llm_options``)."""

    PRECISIONS: ClassVar[tuple[str, ...]] = ("float32", "float16", "int8")
    REQUIRES: ClassVar[tuple[str, ...]] = ("onnxruntime", "onnx", "onnxscript")
    INSTALL_HINT: ClassVar[str] = f"pip install 'vlm-pareto[{EXTRA}]'"

    #: execution provider: cpu | cuda | coreml
    provider: str = "cpu"
    #: ONNX Runtime graph optimisation level: disable | basic | extended | all
    graph_optimization_level: str = "all"
    #: intra-op threads; 0 = as many as the protocol uses (all cores by default)
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    #: op types int8 quantizes (Conv is left out by default: ONNX Runtime's ConvInteger is
    #: slower than its float32 convolution on x86 CPUs)
    int8_ops: tuple[str, ...] = ("MatMul", "Gemm")
    #: folder for exported models (a temporary folder, deleted afterwards, if unset)
    export_dir: str | None = None

    def validate(self) -> None:
        super().validate()
        if self.provider not in PROVIDERS:
            raise UserError(suggest(self.provider, list(PROVIDERS), "onnxrt provider"))
        if self.graph_optimization_level not in OPT_LEVELS:
            raise UserError(
                suggest(
                    self.graph_optimization_level,
                    list(OPT_LEVELS),
                    "onnxrt graph_optimization_level",
                )
            )
        self.int8_ops = tuple(self.int8_ops)
        bad = [op for op in self.int8_ops if op not in ("MatMul", "Gemm", "Conv")]
        if bad:
            raise UserError(suggest(bad[0], ["MatMul", "Gemm", "Conv"], "onnxrt int8_ops entry"))
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise UserError("onnxrt intra_op_threads / inter_op_threads must be >= 0")
        if self.precision == "float16" and self.provider == "cpu":
            raise UserError(
                "onnxrt float16 runs on the cuda and coreml providers; on cpu use float32 or int8"
            )
        if self.precision == "int8" and self.provider != "cpu":
            raise UserError(
                f"onnxrt int8 (dynamic quantization) runs on the cpu provider, not {self.provider}; "
                "use float16 there"
            )
        err = missing_runtime(self.name or "onnxrt", self.REQUIRES, EXTRA)
        if err:
            raise err

    def availability(self) -> str | None:
        reason = super().availability()
        if reason:
            return reason
        if self.provider == "coreml" and sys.platform != "darwin":
            return "onnxrt provider coreml (CoreMLExecutionProvider) needs macOS"
        import onnxruntime as ort

        have = ort.get_available_providers()
        if PROVIDERS[self.provider] not in have:
            return f"this onnxruntime build has no {PROVIDERS[self.provider]} (it has {', '.join(have)})"
        return None


class _OnnxCompiler:
    """``compile_graph`` for the runner classes below (their ``config`` is a OnnxRTConfig)."""

    _dir: Path | None = None

    def _workdir(self) -> Path:
        if self.config.export_dir:  # type: ignore[attr-defined]
            d = Path(self.config.export_dir)  # type: ignore[attr-defined]
            d.mkdir(parents=True, exist_ok=True)
            return d
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="vlm-pareto-onnx-"))
        return self._dir

    def compile_graph(
        self, module: nn.Module, inputs: tuple[torch.Tensor, ...], tag: str
    ) -> Compiled:
        import copy

        import torch

        from harness.backends.graphs import export_onnx, remove_onnx

        cfg: OnnxRTConfig = self.config  # type: ignore[attr-defined]
        work = self._workdir()
        path = work / f"{tag}-{cfg.precision}.onnx"
        args = inputs
        if cfg.precision == "float16":
            module = copy.deepcopy(module).half()
            args = tuple(x.half() for x in inputs)
        compile_s = export_onnx(
            module, args, path, input_names=[f"input{i}" for i in range(len(args))]
        )
        settings: dict[str, Any] = {
            "exporter": f"torch.onnx.export(dynamo=True) torch {torch.__version__}"
        }
        model_path = path
        if cfg.precision == "int8":
            t0 = time.perf_counter()
            model_path = work / f"{tag}-quantized.onnx"
            try:
                quantize_int8(path, model_path, tuple(cfg.int8_ops))
            except Exception as e:
                from harness.backends.graphs import short_reason

                raise Skipped(f"onnxruntime int8 quantization failed: {short_reason(e)}") from e
            finally:
                remove_onnx(path)
            compile_s += time.perf_counter() - t0
            settings["quantization"] = (
                f"onnxruntime quantize_dynamic QInt8 ({', '.join(cfg.int8_ops)})"
            )
        t0 = time.perf_counter()
        session, info = make_session(model_path, cfg)
        compile_s += time.perf_counter() - t0
        settings.update(info)
        feed = {inp.name: x.numpy() for inp, x in zip(session.get_inputs(), args, strict=True)}
        first = session.run(None, feed)

        def step() -> Any:
            return session.run(None, feed)

        def close() -> None:
            remove_onnx(model_path)

        return Compiled(
            step=step, first_output=first[0], compile_s=compile_s, settings=settings, close=close
        )

    def __del__(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def quantize_int8(src: Path, dst: Path, ops: tuple[str, ...] = ("MatMul", "Gemm")) -> None:
    """ONNX Runtime dynamic int8 quantization of the ``ops`` nodes' weights (``src`` -> ``dst``)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from harness.backends.graphs import quiet

    logging.getLogger("root").setLevel(logging.ERROR)
    big = src.stat().st_size > 1.8 * 2**30 or any(src.parent.glob(src.name + ".data"))
    with quiet():
        quantize_dynamic(
            src,
            dst,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(ops),
            per_channel=False,
            use_external_data_format=big,
        )


def make_session(path: Path, cfg: OnnxRTConfig) -> tuple[Any, dict[str, Any]]:
    """An InferenceSession with the config's provider, optimisation level and threads."""
    import onnxruntime as ort
    import torch

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[cfg.graph_optimization_level]
    threads = cfg.intra_op_threads or torch.get_num_threads()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = cfg.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    providers = [PROVIDERS[cfg.provider]]
    if cfg.provider != "cpu":
        providers.append("CPUExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), so, providers=providers)
    except Exception as e:
        from harness.backends.graphs import short_reason

        raise Skipped(f"onnxruntime could not load the exported model: {short_reason(e)}") from e
    info = {
        "provider": PROVIDERS[cfg.provider],
        "providers_used": session.get_providers(),
        "graph_optimization_level": cfg.graph_optimization_level,
        "intra_op_threads": threads,
        "inter_op_threads": cfg.inter_op_threads,
        "denormal_as_zero": True,
        "onnxruntime": ort.__version__,
    }
    return session, info


class OnnxEncoderRunner(_OnnxCompiler, PortableEncoderRunner):
    """Encoders through ONNX Runtime."""


class OnnxLLMRunner(_OnnxCompiler, PortableLLMRunner):
    """Decoder prefill + projector through ONNX Runtime."""


BACKEND = Backend(
    "onnxrt",
    OnnxRTConfig,
    encoder=OnnxEncoderRunner,
    llm=OnnxLLMRunner,
    description="ONNX Runtime (torch.onnx dynamo export; CPU / CUDA / Core ML providers)",
)

__all__ = [
    "BACKEND",
    "OPT_LEVELS",
    "PROVIDERS",
    "OnnxRTConfig",
    "make_session",
    "missing_runtime",
    "quantize_int8",
]
