"""Time a vision encoder in PyTorch: one resolution, one tiling, one device and dtype.

The timed step is exactly the encoder's work for one input: every tile (and the overview)
through the reparameterized, eval-mode encoder under ``torch.inference_mode``, as one batch
or one tile after another, ending in the ``[1, N, C]`` token tensor the projector reads.
Cutting the image into tiles and resizing the overview is preprocessing, done once before
timing. Inputs are CLIP-normalised pixels (uniform [0, 1] images, then mean/std), the scale
the real pipeline feeds -- random N(0, 1) or uninitialised inputs distort CPU timings.

Dtypes: float32 everywhere; bfloat16 and float16 on CPU (torch runs both, float16 often
slowly -- it is allowed and recorded, not refused), CUDA and MPS. An unavailable device is a
UserError.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from harness.denormal import flush_denormal
from harness.devices import CANONICAL_DTYPE, resolve_device, torch_dtype
from harness.encoders import EncoderResult
from harness.encoders.tiling import Tiling, parse_tiling, split_tiles
from harness.encoders.zoo import (
    EncoderSpec,
    TokenEncoder,
    build_encoder,
    get_spec,
    validate_resolution,
)
from harness.errors import UserError
from harness.protocol import MemoryProbe, Protocol, get_protocol, measure

#: OpenAI CLIP's normalisation (SigLIP uses 0.5/0.5; the scale is what matters for timing).
PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)
CONV_FAMILIES = ("fastvit", "convnext")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from a precision name (any device); UserError for unknown names."""
    return torch_dtype(dtype)


def make_images(
    tiling: Tiling, resolution: int, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> torch.Tensor:
    """A ``[1, 3, H, W]`` CLIP-normalised random image covering the tiling's full input."""
    h, w = tiling.input_shape(resolution) if tiling.tiled else (resolution, resolution)
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.rand(1, 3, h, w, generator=gen)
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return ((pixels - mean) / std).to(device=device, dtype=dtype)


def encode_step(
    encoder: TokenEncoder, inputs: torch.Tensor, batch_tiles: bool
) -> Callable[[], torch.Tensor]:
    """The timed callable: all images through the encoder -> ``[1, N_total, C]`` tokens."""
    if batch_tiles or inputs.shape[0] == 1:

        def run() -> torch.Tensor:
            tok = encoder.tokens(inputs)
            return tok.reshape(1, -1, tok.shape[-1])

    else:
        singles = [inputs[i : i + 1] for i in range(inputs.shape[0])]

        def run() -> torch.Tensor:
            return torch.cat([encoder.tokens(x) for x in singles], dim=1)

    return run


def count_gflops(name: str, resolution: int, tiling: str = "none") -> float | None:
    """Forward GFLOPs (matmul/conv/attention, as FlopCounterMode counts) for one input.

    Counted on the meta device (shapes only, no compute, and CPU's fused attention kernel is
    counted there, which it is not on real CPU tensors). ``None`` if the model cannot run on meta.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from harness.encoders.zoo import builder_call_kwargs, builder_fn, fuse_branches

    spec = get_spec(name)
    t = parse_tiling(tiling)
    tile = validate_resolution(spec.name, resolution, t.text)
    try:
        with torch.device("meta"):
            model = builder_fn(spec)(**builder_call_kwargs(spec, tile, False))
            fuse_branches(model)
            model.eval()
            x = torch.empty(t.images, 3, tile, tile)
            if callable(getattr(model, "prepare", None)):
                x = model.prepare(x)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x)
        return counter.get_total_flops() / 1e9
    except Exception:  # data-dependent code cannot run on meta; report "unknown"
        return None


@dataclass
class TorchEncoderStep:
    """A built encoder and its timed step (what ``TorchEncoderRunner.build`` wraps)."""

    spec: EncoderSpec
    encoder: TokenEncoder
    step: Callable[[], torch.Tensor]
    device: torch.device
    synchronize: Callable[[], None] | None
    probe: MemoryProbe | None
    dtype: torch.dtype
    tiling: Tiling
    tile: int
    channels_last: bool
    compile: bool
    batch_tiles: bool
    build_s: float


def build_encoder_step(
    name: str | EncoderSpec,
    resolution: int,
    tiling: str = "none",
    *,
    device: str = "cpu",
    dtype: str = "float32",
    channels_last: bool | None = None,
    compile: bool = False,
    batch_tiles: bool = True,
    weights: str | None = None,
    seed: int = 0,
) -> TorchEncoderStep:
    """Build encoder ``name`` for total side ``resolution`` with ``tiling``, and its input.

    ``channels_last=None`` means "where it helps": on for convolutional families, off for ViTs.
    ``compile`` wraps the module in ``torch.compile`` (compilation happens in warm-up).
    ``batch_tiles`` runs tiles + overview as one batch, else one after another.
    """
    spec = get_spec(name.name if isinstance(name, EncoderSpec) else name)
    t = parse_tiling(tiling)
    tdtype = resolve_dtype(dtype)
    dev, sync, probe = resolve_device(device)
    tile = validate_resolution(
        spec.name, resolution, t.text, dtype_bytes=torch.tensor([], dtype=tdtype).element_size()
    )
    if channels_last is None:
        channels_last = spec.family in CONV_FAMILIES

    t0 = time.perf_counter()
    encoder = build_encoder(
        spec.name, tile, device=str(dev), dtype=tdtype, seed=seed, weights=weights
    )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    encoder.module = encoder.module.to(memory_format=memory_format)  # type: ignore[call-overload]
    if compile:
        try:
            encoder.module = torch.compile(encoder.module)  # type: ignore[assignment]
        except Exception as e:  # pragma: no cover - depends on toolchain
            raise UserError(f"torch.compile failed for {spec.name}: {e}") from e
    build_s = time.perf_counter() - t0

    images = make_images(t, resolution, dev, tdtype, seed)
    inputs = split_tiles(images, t) if t.tiled else images
    inputs = inputs.contiguous(memory_format=memory_format)
    prepare = getattr(encoder.module, "prepare", None)
    if callable(prepare):  # a VLM family's own tiling / patchifying: preprocessing, not timed
        inputs = prepare(inputs)
    step = encode_step(encoder, inputs, batch_tiles or callable(prepare))
    return TorchEncoderStep(
        spec,
        encoder,
        step,
        dev,
        sync,
        probe,
        tdtype,
        t,
        tile,
        bool(channels_last),
        bool(compile),
        bool(batch_tiles),
        build_s,
    )


def measure_encoder(
    name: str,
    resolution: int,
    tiling: str = "none",
    *,
    device: str = "cpu",
    dtype: str = "float32",
    protocol: str | Protocol = "quick",
    channels_last: bool | None = None,
    compile: bool = False,
    batch_tiles: bool = True,
    weights: str | None = None,
    seed: int = 0,
    flops: bool = True,
) -> EncoderResult:
    """Build and time encoder ``name`` at total side ``resolution`` with ``tiling``.

    Settings as in :func:`build_encoder_step`. Returns an :class:`EncoderResult`; ``extra``
    records gflops, gflops_per_s, channels_last, compile, batch_tiles, flush_denormal, dtype,
    device, tile_resolution, images, memory probe.
    """
    proto = get_protocol(protocol)
    b = build_encoder_step(
        name,
        resolution,
        tiling,
        device=device,
        dtype=dtype,
        channels_last=channels_last,
        compile=compile,
        batch_tiles=batch_tiles,
        weights=weights,
        seed=seed,
    )
    spec, t, tile, step, sync = b.spec, b.tiling, b.tile, b.step, b.synchronize

    with torch.inference_mode(), flush_denormal(proto.flush_denormal, b.device.type) as flushed:
        out = step()  # shape check before timing; also the first compile happens here
        if sync:
            sync()
        measurement = measure(step, proto, synchronize=sync, memory=b.probe)
    tokens, out_dim = int(out.shape[1]), int(out.shape[2])
    expected = t.images * spec.tokens_at(tile)
    if tokens != expected:
        raise RuntimeError(
            f"{spec.name} produced {tokens} tokens at {resolution} ({t.text}); the zoo predicts {expected}"
        )

    gflops = count_gflops(spec.name, resolution, t.text) if flops else None
    median_s = measurement.stats.median_ms / 1e3
    extra: dict[str, Any] = {
        "gflops": gflops,
        "gflops_per_s": (gflops / median_s) if gflops and median_s > 0 else None,
        "channels_last": b.channels_last,
        "compile": b.compile,
        "batch_tiles": b.batch_tiles,
        "flush_denormal": bool(flushed),
        "dtype": CANONICAL_DTYPE[b.dtype],
        "device": str(b.device),
        "tile_resolution": tile,
        "images": t.images,
        "reparameterized": b.encoder.reparameterized,
        "memory_probe": measurement.memory_probe,
        "params_include_head": False,
        "input": "clip-normalised uniform pixels",
    }
    return EncoderResult(
        measurement=measurement,
        tokens=tokens,
        out_dim=out_dim,
        params_m=b.encoder.params() / 1e6,
        build_s=b.build_s,
        extra=extra,
    )
