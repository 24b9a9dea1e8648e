"""One place that turns a torch device string into what the protocol needs.

``resolve_device("cuda:1")`` validates the device (an unavailable one is a UserError) and
returns the ``synchronize`` hook called before every clock read and the memory probe for the
measured step: step-local peak RSS on CPU, the allocator's peak on CUDA, the driver's
allocation on MPS. Encoder and LLM runners both use it, so every backend is synced and
probed the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from harness.dtypes import FLOAT_PRECISIONS, canonical_precision
from harness.errors import UserError
from harness.protocol import RSSProbe

#: canonical precision name -> torch dtype (the float precisions torch runs eagerly)
TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
CANONICAL_DTYPE: dict[torch.dtype, str] = {v: k for k, v in TORCH_DTYPES.items()}


def torch_dtype(name: str | torch.dtype, device: str | torch.device | None = None) -> torch.dtype:
    """The torch dtype for precision ``name`` ('fp16', 'bfloat16', ...); UserError if unknown.

    With ``device``, also refuses bfloat16 where that CUDA / MPS device cannot run it.
    """
    if isinstance(name, torch.dtype):
        return name
    key = canonical_precision(name, FLOAT_PRECISIONS)
    if device is not None and key == "bfloat16":
        dev = torch.device(device).type
        if dev == "mps" and not _mps_supports_bf16():
            raise UserError("bfloat16 is not supported by this MPS device; use float16 or float32")
        if dev == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("bfloat16 is not supported by this CUDA device; use float16 or float32")
    return TORCH_DTYPES[key]


def _mps_supports_bf16() -> bool:
    try:
        torch.ones(1, dtype=torch.bfloat16, device="mps")
        return True
    except (RuntimeError, TypeError):
        return False


def torch_synchronizer(device: str) -> Callable[[], None] | None:
    """The clock-read hook for ``device``: waits for queued GPU work; None on CPU."""
    return resolve_device(device)[1]


class CudaProbe:
    """Peak CUDA memory allocated by one step (``reset_peak_memory_stats`` before it)."""

    name = "cuda-max-allocated"

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int | None:
        return int(torch.cuda.max_memory_allocated(self.device))


class MPSProbe:
    """MPS has no peak counter: the driver's allocation after the step (an upper-bound proxy)."""

    name = "mps-driver-allocated"

    def reset(self) -> None:
        torch.mps.synchronize()

    def peak(self) -> int | None:
        return int(torch.mps.driver_allocated_memory())


def resolve_device(
    device: str | torch.device,
) -> tuple[torch.device, Callable[[], None] | None, Any]:
    """Return (device, synchronize hook or None on CPU, memory probe); UserError if unavailable."""
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from e
    if dev.type == "cpu":
        return dev, None, RSSProbe()
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device {str(dev)!r} asked for but CUDA is not available; use --device cpu"
            )
        return dev, lambda: torch.cuda.synchronize(dev), CudaProbe(dev)
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError(
                "device 'mps' asked for but Metal (MPS) is not available here; use --device cpu"
            )
        return dev, torch.mps.synchronize, MPSProbe()
    raise UserError(f"device {str(device)!r} is not supported; use cpu, cuda or mps")
