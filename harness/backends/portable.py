"""One runner template for every deployment runtime (ONNX Runtime, ExecuTorch, torch.compile).

A runtime backend only says how to turn a float32 module into a callable
(:meth:`PortableEncoderRunner.compile_graph`, returning a :class:`Compiled`); this module does
the rest the same way for all of them:

1. build the model with the harness's random weights and the real pipeline's inputs, and
   run it in float32 eager PyTorch: the **reference** (:mod:`harness.backends.graphs`);
2. export / lower / compile it (the time is ``extra.compile_s``, never part of the latency);
   an exporter failure is :class:`~harness.backends.base.Skipped` with the exporter's reason;
3. run it once and compare with the reference (:mod:`harness.backends.parity`); a wrong
   output raises :class:`~harness.backends.parity.ParityError` -> a *failed* point whose
   reason carries the numbers;
4. hand the timed step to the protocol; the parity numbers are stored with the measurement.

The LLM side times the decoder prefill (``inputs_embeds`` -> last logits + KV cache) and the
projector through the same runtime, so TTFT can be composed entirely from one runtime. With
layer sampling (``sample_layers=k``) the 0-layer and k-layer decoders are compiled and timed
and the estimate is extrapolated exactly as the torch runner does
(:func:`harness.llms.sampling.estimated_measurement`).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from harness.backends.base import (
    Built,
    EncoderExtra,
    EncoderRunner,
    LLMRunner,
    Outcome,
    Parity,
    PrefillExtra,
    ProjectorExtra,
    Skipped,
)
from harness.backends.parity import ParityResult, check
from harness.protocol import Measurement, Protocol, measure

if TYPE_CHECKING:
    import torch
    from torch import nn

    from harness.encoders.zoo import EncoderSpec
    from harness.llms.zoo import LLMSpec
    from harness.tasks import PrefillTask, ProjectorTask


@dataclass
class Compiled:
    """A module made runnable by a runtime: the timed step and what its first run produced."""

    #: runs the graph once on the prepared inputs (the timed work)
    step: Callable[[], Any]
    #: the first output (logits / tokens) as something numpy can read, for the parity check
    first_output: Any
    compile_s: float
    settings: dict[str, Any] = field(default_factory=dict)
    #: entered around warm-up and timing (e.g. torch.inference_mode)
    context: Callable[[], AbstractContextManager[Any]] = nullcontext
    #: called to free the runtime's copy of the model (sessions, programs, temp files)
    close: Callable[[], None] | None = None


def _as_numpy(x: Any) -> Any:
    import numpy as np

    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def parity_of(result: ParityResult) -> Parity:
    return Parity(cosine=result.cosine, max_abs_err=result.max_abs_err)


class _CompilerMixin:
    """What a runtime implements: turn a float32 module + example inputs into a runner."""

    config: Any

    @abstractmethod
    def compile_graph(
        self, module: nn.Module, inputs: tuple[torch.Tensor, ...], tag: str
    ) -> Compiled:
        """Export / lower / compile ``module`` (float32, eval) for ``inputs`` at this backend's
        precision and return the runnable step; raise :class:`Skipped` if the runtime cannot
        convert it (with the converter's reason). ``tag`` names the graph (file names)."""

    def _compile(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], tag: str) -> Compiled:
        from harness.backends.graphs import ExportFailed

        try:
            return self.compile_graph(module, inputs, tag)
        except ExportFailed as e:
            raise Skipped(str(e)) from e

    def _parity(self, compiled: Compiled, reference: torch.Tensor, what: str) -> ParityResult:
        out = compiled.first_output
        if isinstance(out, (list, tuple)):
            out = out[0]
        try:
            return check(
                _as_numpy(out),
                _as_numpy(reference),
                self.config.precision,
                f"{self.config.name} {what}",
            )
        except Exception:
            if compiled.close:
                compiled.close()
            raise


class PortableEncoderRunner(_CompilerMixin, EncoderRunner):
    """Encoder runner for any runtime that implements :meth:`compile_graph`."""

    def build(
        self, spec: EncoderSpec, resolution: int, tiling: str, weights: str | None = None
    ) -> Built:
        from harness.backends.graphs import encoder_case

        case = encoder_case(spec.name, resolution, tiling, seed=self.context.seed, weights=weights)
        what = f"{spec.name}@{resolution} ({tiling})"
        compiled = self._compile(
            case.graph, (case.inputs,), f"{spec.name}-{resolution}-{tiling.replace('+', '_')}"
        )
        parity = self._parity(compiled, case.reference, what)
        extra = EncoderExtra(
            settings={**compiled.settings, **parity.to_dict(), "batch_tiles": True},
            compile_s=compiled.compile_s,
            parity=parity_of(parity),
            params_m=case.params_m,
            tile_resolution=case.tile,
            images=case.images,
        )
        tokens, out_dim, build_s = case.tokens, case.out_dim, case.build_s
        del case
        context = compiled.context
        return Built(
            step=compiled.step,
            tokens=tokens,
            out_dim=out_dim,
            context=lambda protocol: context(),
            build_s=build_s,
            extra=extra,
        )


class PortableLLMRunner(_CompilerMixin, LLMRunner):
    """Prefill + projector runner for any runtime that implements :meth:`compile_graph`."""

    SUPPORTS_LAYER_SAMPLING = True
    #: peak memory of an export / compile as a multiple of the float32 weights (the model, the
    #: exporter's working copy, the runtime's own copy)
    EXPORT_COPIES: ClassVar[float] = 3.0

    def fits(self, spec: LLMSpec, tokens: int) -> bool:
        """Whether the float32 model, its exported copies and one prefill fit in RAM here
        (else the engine layer-samples it)."""
        from harness.llms.build import available_memory_bytes, estimate_memory

        est = estimate_memory(spec, tokens, "float32")
        need = est.total_bytes + (self.EXPORT_COPIES - 1.0) * est.params_bytes
        return need < available_memory_bytes("cpu")

    def _time(self, compiled: Compiled, protocol: Protocol) -> Measurement:
        with compiled.context():
            return measure(compiled.step, protocol)

    def prefill(
        self,
        task: PrefillTask,
        spec: LLMSpec,
        in_dim: int,
        protocol: Protocol,
        sample_layers: int | None = None,
    ) -> Outcome:
        from harness.backends.graphs import prefill_case
        from harness.llms.sampling import ESTIMATOR, estimated_measurement

        sampled = sample_layers is not None and sample_layers < spec.layers
        counts = [0, int(sample_layers)] if sampled and sample_layers is not None else [spec.layers]
        timings: dict[int, Measurement] = {}
        parity: ParityResult | None = None
        compile_s = build_s = 0.0
        settings: dict[str, Any] = {}
        projector: Outcome | None = None
        for n in counts:
            case = prefill_case(
                spec,
                task.tokens,
                task.prompt_tokens,
                encoder_dim=in_dim,
                layers=None if n == spec.layers else n,
                seed=self.context.seed,
            )
            build_s += case.build_s
            tag = f"{spec.name}-L{n}-T{task.tokens}+{task.prompt_tokens}"
            compiled = self._compile(case.graph, (case.embeds,), tag)
            compile_s += compiled.compile_s
            result = self._parity(compiled, case.reference, f"{spec.name} prefill ({n} layers)")
            parity = result if parity is None or n else parity  # keep the deepest model's numbers
            settings.update(compiled.settings)
            try:
                timings[n] = self._time(compiled, protocol)
            finally:
                if compiled.close:
                    compiled.close()
            if projector is None:
                projector = self._projector_outcome(
                    case.projector, case.features, protocol, in_dim, spec.hidden
                )
            del case, compiled
        assert parity is not None
        if sampled:
            k = counts[1]
            m = estimated_measurement(timings[0], timings[k], k, spec.layers)
            settings.update(
                {
                    "estimator": ESTIMATOR,
                    "base_ms": timings[0].stats.median_ms,
                    "k_layers_ms": timings[k].stats.median_ms,
                }
            )
        else:
            m = timings[spec.layers]
        extra = PrefillExtra(
            settings={**self.config.recorded(), **settings, **parity.to_dict()},
            compile_s=compile_s,
            parity=parity_of(parity),
            latency_source="estimated" if sampled else "measured",
            encoder_dim=in_dim,
            projector_ms=projector.measurement.stats.median_ms if projector else None,
            hidden=spec.hidden,
            params_b=spec.params_b,
            sampled_layers=counts[-1],
            total_layers=spec.layers,
        )
        return Outcome(m, extra, build_s=build_s, projector=projector)

    def _projector_outcome(
        self,
        module: nn.Module,
        features: torch.Tensor,
        protocol: Protocol,
        in_dim: int,
        hidden: int,
    ) -> Outcome:
        import torch

        with torch.inference_mode():
            reference = module(features).float()
        compiled = self._compile(
            module, (features,), f"projector-{in_dim}x{hidden}-T{features.shape[1]}"
        )
        try:
            parity = self._parity(compiled, reference, f"projector {in_dim}->{hidden}")
            m = self._time(compiled, protocol)
        finally:
            if compiled.close:
                compiled.close()
        extra = ProjectorExtra(
            settings={**self.config.recorded(), **compiled.settings, **parity.to_dict()},
            compile_s=compiled.compile_s,
            parity=parity_of(parity),
            in_dim=in_dim,
            out_dim=hidden,
        )
        return Outcome(m, extra, build_s=0.0)

    def projector(self, task: ProjectorTask, spec: LLMSpec, protocol: Protocol) -> Outcome:
        from harness.backends.graphs import ProjectorGraph
        from harness.llms.projector import build_projector, encoder_features

        t0 = time.perf_counter()
        module = ProjectorGraph(
            build_projector(task.in_dim, spec.hidden, seed=self.context.seed + 1)
        ).eval()
        features = encoder_features(task.tokens, task.in_dim, seed=self.context.seed + 2)
        out = self._projector_outcome(module, features, protocol, task.in_dim, spec.hidden)
        out.build_s = time.perf_counter() - t0 - (out.extra.compile_s or 0.0)
        return out


__all__ = ["Compiled", "PortableEncoderRunner", "PortableLLMRunner", "parity_of"]
