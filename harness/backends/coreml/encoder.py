"""Core ML runner: export an encoder to an ML program, cache it, and time ``predict`` on macOS.

The paper times its encoders as Core ML packages on an M1 Max (Neural Engine). Here:

1. the zoo builds the encoder (reparameterized, eval) and wraps it so its output is the
   ``[B, N, C]`` token tensor;
2. ``torch.export.export(...).run_decompositions({})`` gives an ATen-level program (the
   ``torch.jit.trace`` path fails with torch 2.13) and ``coremltools.convert`` turns it into
   an ``mlprogram`` (fp16 or fp32);
3. the ``.mlpackage`` is cached under ``results/cache/coreml/`` keyed by encoder, tile side,
   batch, precision and a weights hash (file hash, or a hash of architecture + seed);
4. on macOS the model is loaded for the chosen compute units and ``predict`` is timed with the
   protocol, using Core ML's own ``last_predict_duration_in_nano_seconds`` when available;
   the compute plan, where available, says which fraction of ops prefer the Neural Engine.

Conversion works on Linux; timing there raises ``UserError("Core ML prediction needs
macOS ...")``, which a sweep records as *skipped*. coremltools is imported only inside functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.dtypes import canonical_precision
from harness.encoders.tiling import parse_tiling
from harness.encoders.zoo import build_encoder, get_spec, validate_resolution
from harness.errors import UserError, suggest
from harness.protocol import Measurement, Protocol, get_protocol, measure

COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
#: canonical precision (harness/dtypes.py) -> coremltools ``ct.precision`` member
PRECISIONS = {"float16": "FLOAT16", "float32": "FLOAT32"}
DEFAULT_CACHE = Path("results") / "cache" / "coreml"
MACOS_ONLY = (
    "Core ML prediction needs macOS (this is {platform}); conversion works here via convert_coreml(), "
    "timing does not"
)


@dataclass
class CoreMLArtifact:
    """A converted encoder package and how it was made."""

    path: Path
    encoder: str
    tile_resolution: int
    batch: int
    precision: str
    weights_hash: str
    cached: bool
    convert_s: float
    export_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


def is_macos() -> bool:
    return sys.platform == "darwin"


def _precision(precision: str) -> str:
    return canonical_precision(precision, tuple(PRECISIONS), "Core ML precision")


def compute_units_name(units: str) -> str:
    key = str(units).upper().replace("-", "_")
    if key not in COMPUTE_UNITS:
        raise UserError(suggest(units, COMPUTE_UNITS, "compute units"))
    return key


def weights_hash(module: Any, weights: str | None, seed: int) -> str:
    """A short hash naming the weights: the file's bytes, or architecture + parameter shapes + seed."""
    h = hashlib.sha256()
    if weights:
        with open(weights, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(repr(module).encode())
        for name, p in module.state_dict().items():
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(f"random-seed-{seed}".encode())
    return h.hexdigest()[:12]


class _TokensOut:
    """Builds an nn.Module whose forward returns the encoder's ``[B, N, C]`` tokens."""

    @staticmethod
    def wrap(encoder: Any) -> Any:
        from torch import nn

        from harness.encoders.zoo import to_tokens

        class Tokens(nn.Module):
            def __init__(self, inner: nn.Module):
                super().__init__()
                self.inner = inner

            def forward(self, images):  # type: ignore[no-untyped-def]
                return to_tokens(self.inner(images))

        return Tokens(encoder.module).eval()


def convert_coreml(
    name: str,
    resolution: int,
    tiling: str = "none",
    *,
    precision: str = "float16",
    compute_units: str = "ALL",
    batch_tiles: bool = True,
    weights: str | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    minimum_deployment_target: str = "macOS14",
) -> CoreMLArtifact:
    """Export and convert ``name`` for ``resolution``/``tiling``; reuse the cached package if present.

    With tiling, the package takes the whole tile batch (``batch_tiles``) or one tile.
    """
    import torch

    spec = get_spec(name)
    prec = _precision(precision)
    units = compute_units_name(compute_units)
    t = parse_tiling(tiling)
    tile = validate_resolution(spec.name, resolution, t.text)
    batch = t.images if batch_tiles else 1

    encoder = build_encoder(
        spec.name, tile, device="cpu", dtype=torch.float32, seed=seed, weights=weights
    )
    whash = weights_hash(encoder.module, weights, seed)
    root = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    path = root / f"{spec.name}_{tile}px_b{batch}_{prec}_{whash}.mlpackage"
    meta = {
        "encoder": spec.name,
        "tile_resolution": tile,
        "batch": batch,
        "precision": prec,
        "weights_hash": whash,
        "tiling": t.text,
        "resolution": resolution,
    }
    if path.exists() and not force:
        return CoreMLArtifact(
            path, spec.name, tile, batch, prec, whash, cached=True, convert_s=0.0, meta=meta
        )

    import coremltools as ct

    model = _TokensOut.wrap(encoder)
    example = torch.rand(batch, 3, tile, tile) * 2 - 1
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            program = torch.export.export(model, (example,)).run_decompositions({})
    except Exception as e:
        raise UserError(
            f"torch.export failed for {spec.name} at {tile}px: {type(e).__name__}: {e}"
        ) from e
    export_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    try:
        mlmodel = ct.convert(
            program,
            inputs=[ct.TensorType(name="images", shape=tuple(example.shape))],
            outputs=[ct.TensorType(name="tokens")],
            convert_to="mlprogram",
            compute_precision=getattr(ct.precision, PRECISIONS[prec]),
            compute_units=getattr(ct.ComputeUnit, units),
            minimum_deployment_target=getattr(ct.target, minimum_deployment_target),
            skip_model_load=not is_macos(),
        )
    except Exception as e:
        raise UserError(
            f"coremltools.convert failed for {spec.name} at {tile}px: {type(e).__name__}: {e}"
        ) from e
    convert_s = time.perf_counter() - t1
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mlpackage")
    shutil.rmtree(tmp, ignore_errors=True)
    mlmodel.save(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)  # atomic publish: a concurrent reader never sees half a package
    # Sidecar next to (not inside) the package, so the package stays exactly what coremltools wrote.
    path.with_suffix(".json").write_text(
        json.dumps({**meta, "export_s": export_s, "convert_s": convert_s}, indent=2)
    )
    return CoreMLArtifact(
        path,
        spec.name,
        tile,
        batch,
        prec,
        whash,
        cached=False,
        convert_s=convert_s,
        export_s=export_s,
        meta=meta,
    )


def neural_engine_fraction(mlmodel: Any, compute_units: str) -> dict[str, Any] | None:
    """Fraction of ML-program ops whose preferred device is the Neural Engine (macOS 14.4+)."""
    try:
        import coremltools as ct
        from coremltools.models.compute_device import (
            MLCPUComputeDevice,
            MLGPUComputeDevice,
            MLNeuralEngineComputeDevice,
        )
        from coremltools.models.compute_plan import MLComputePlan

        plan = MLComputePlan.load_from_path(
            path=mlmodel.get_compiled_model_path(),
            compute_units=getattr(ct.ComputeUnit, compute_units),
        )
        counts = {"neural_engine": 0, "gpu": 0, "cpu": 0, "other": 0}
        program = plan.model_structure.program
        if program is None:
            return None
        for function in program.functions.values():
            for op in function.block.operations:
                usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
                dev = usage.preferred_compute_device if usage else None
                if isinstance(dev, MLNeuralEngineComputeDevice):
                    counts["neural_engine"] += 1
                elif isinstance(dev, MLGPUComputeDevice):
                    counts["gpu"] += 1
                elif isinstance(dev, MLCPUComputeDevice):
                    counts["cpu"] += 1
                else:
                    counts["other"] += 1  # constants and ops with no device
        placed = counts["neural_engine"] + counts["gpu"] + counts["cpu"]
        return {**counts, "ne_fraction": counts["neural_engine"] / placed if placed else None}
    except Exception:  # older macOS / coremltools: no compute plan
        return None


def measure_coreml(
    name: str,
    resolution: int,
    tiling: str = "none",
    *,
    precision: str = "float16",
    compute_units: str = "CPU_AND_NE",
    protocol: str | Protocol = "quick",
    batch_tiles: bool = True,
    weights: str | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """Time the Core ML package's ``predict`` under ``protocol``; returns an EncoderResult.

    Raises UserError on anything but macOS (checked first, before any conversion work).
    """
    from harness.encoders import EncoderResult

    units = compute_units_name(compute_units)
    _precision(precision)
    if not is_macos():
        raise UserError(MACOS_ONLY.format(platform=sys.platform))
    import coremltools as ct
    import numpy as np

    spec = get_spec(name)
    t = parse_tiling(tiling)
    proto = get_protocol(protocol)
    t0 = time.perf_counter()
    art = convert_coreml(
        spec.name,
        resolution,
        t.text,
        precision=precision,
        compute_units=units,
        batch_tiles=batch_tiles,
        weights=weights,
        seed=seed,
        cache_dir=cache_dir,
    )
    mlmodel = ct.models.MLModel(str(art.path), compute_units=getattr(ct.ComputeUnit, units))
    build_s = time.perf_counter() - t0

    rng = np.random.default_rng(seed)
    calls = 1 if batch_tiles else t.images
    x = {
        "images": (
            (rng.random((art.batch, 3, art.tile_resolution, art.tile_resolution)) - 0.45) / 0.27
        ).astype(np.float32)
    }
    native_ns: list[int] = []

    def step() -> Any:
        total: int | None = 0
        out = None
        for _ in range(calls):
            out = mlmodel.predict(x)
            ns = _last_predict_ns(mlmodel)
            total = total + ns if ns is not None and total is not None else None
        native_ns.append(total if total is not None else -1)
        return out

    out = step()
    wall = measure(step, proto)
    measurement, timing = wall, "wall"
    timed = native_ns[-len(wall.samples_ms) :]
    if timed and all(n > 0 for n in timed):
        from harness.stats import summarize

        samples = [n / 1e6 for n in timed]
        measurement = Measurement(
            samples_ms=samples,
            stats=summarize(samples, proto.confidence),
            protocol=wall.protocol,
            threads=wall.threads,
            warmup_ms=wall.warmup_ms,
            capped=wall.capped,
            wall_s=wall.wall_s,
        )
        timing = "last_predict_duration_in_nano_seconds"
    tokens_arr = out["tokens"]
    tokens = int(np.prod(tokens_arr.shape[:-1])) * (1 if batch_tiles else t.images)
    extra = {
        "backend": "coreml",
        "compute_units": units,
        "precision": art.precision,
        "timing": timing,
        "wall_median_ms": wall.stats.median_ms,
        "package": str(art.path),
        "cached": art.cached,
        "convert_s": art.convert_s,
        "compute_plan": neural_engine_fraction(mlmodel, units),
        "tile_resolution": art.tile_resolution,
        "images": t.images,
        "batch_tiles": batch_tiles,
    }
    from harness.encoders.zoo import count_params

    return EncoderResult(
        measurement=measurement,
        tokens=tokens,
        out_dim=int(tokens_arr.shape[-1]),
        params_m=count_params(spec.name, False) / 1e6,
        build_s=build_s,
        extra=extra,
    )


def _last_predict_ns(mlmodel: Any) -> int | None:
    try:
        value = mlmodel.last_predict_duration_in_nano_seconds
        value = value() if callable(value) else value
        return int(value) if value else None
    except Exception:
        return None
