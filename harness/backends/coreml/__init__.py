"""Core ML backend (encoder side): export with torch.export, convert with coremltools, time
``predict`` on macOS (the paper's Neural Engine setup).

Conversion works anywhere coremltools installs; timing needs macOS, so elsewhere every
encoder point of a Core ML sweep is stored as *skipped* with that reason. The runner's code
is :mod:`.encoder`; importing this module imports neither torch nor coremltools.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.backends.base import (
    Backend,
    Built,
    EncoderExtra,
    EncoderRunner,
    Outcome,
    RunnerConfig,
    encoder_outcome,
)
from harness.backends.coreml.encoder import MACOS_ONLY, compute_units_name
from harness.protocol import Protocol
from harness.tasks import EncoderTask

if TYPE_CHECKING:
    from harness.encoders.zoo import EncoderSpec


@dataclass
class CoreMLConfig(RunnerConfig):
    """``compute_units``: ALL | CPU_AND_NE | CPU_AND_GPU | CPU_ONLY; precision from ``coreml_precision``."""

    PRECISIONS = ("float16", "float32")
    REQUIRES = ("coremltools",)
    INSTALL_HINT = "pip install 'vlm-pareto[coreml]'"
    PRECISION_KEYS = {"encoder": "coreml_precision", "llm": "llm_dtype"}

    compute_units: str = "CPU_AND_NE"

    def validate(self) -> None:
        super().validate()
        self.compute_units = compute_units_name(self.compute_units)

    def availability(self) -> str | None:
        if sys.platform != "darwin":
            return MACOS_ONLY.format(platform=sys.platform)
        return super().availability()


class CoreMLEncoder(EncoderRunner):
    config: CoreMLConfig

    def build(
        self, spec: EncoderSpec, resolution: int, tiling: str, weights: str | None = None
    ) -> Built:
        import time

        import coremltools as ct
        import numpy as np

        from harness.backends.coreml.encoder import convert_coreml
        from harness.encoders.tiling import parse_tiling

        t0 = time.perf_counter()
        t = parse_tiling(tiling)
        art = convert_coreml(
            spec.name,
            resolution,
            t.text,
            precision=self.config.precision,
            compute_units=self.config.compute_units,
            batch_tiles=self.context.batch_tiles,
            weights=weights,
            seed=self.context.seed,
        )
        mlmodel = ct.models.MLModel(
            str(art.path), compute_units=getattr(ct.ComputeUnit, self.config.compute_units)
        )
        rng = np.random.default_rng(self.context.seed)
        x = {
            "images": (
                (rng.random((art.batch, 3, art.tile_resolution, art.tile_resolution)) - 0.45) / 0.27
            ).astype(np.float32)
        }
        calls = 1 if self.context.batch_tiles else t.images

        def step() -> object:
            out = None
            for _ in range(calls):
                out = mlmodel.predict(x)
            return out

        extra = EncoderExtra(
            compile_s=art.convert_s + art.export_s,
            tile_resolution=art.tile_resolution,
            images=t.images,
            settings={
                "compute_units": self.config.compute_units,
                "package": str(art.path),
                "cached": art.cached,
            },
        )
        return Built(
            step=step,
            tokens=t.images * spec.tokens_at(art.tile_resolution),
            out_dim=spec.out_dim,
            build_s=time.perf_counter() - t0,
            extra=extra,
        )

    def measure(self, task: EncoderTask, protocol: Protocol) -> Outcome:
        # The function API times with Core ML's own predict clock where available.
        from harness.backends.coreml.encoder import measure_coreml

        r = measure_coreml(
            task.name,
            task.resolution,
            task.tiling,
            precision=self.config.precision,
            compute_units=self.config.compute_units,
            protocol=protocol,
            batch_tiles=self.context.batch_tiles,
            weights=task.weights,
            seed=self.context.seed,
        )
        return encoder_outcome(r, task)


BACKEND = Backend(
    "coreml",
    CoreMLConfig,
    encoder=CoreMLEncoder,
    description="Core ML package timed with predict on macOS (Neural Engine, GPU or CPU)",
)
