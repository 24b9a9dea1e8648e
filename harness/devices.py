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

from harness.errors import UserError
from harness.protocol import RSSProbe


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


def resolve_device(device: str | torch.device) -> tuple[torch.device, Callable[[], None] | None, Any]:
    """Return (device, synchronize hook or None on CPU, memory probe); UserError if unavailable."""
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from e
    if dev.type == "cpu":
        return dev, None, RSSProbe()
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {str(dev)!r} asked for but CUDA is not available; use --device cpu")
        return dev, lambda: torch.cuda.synchronize(dev), CudaProbe(dev)
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError("device 'mps' asked for but Metal (MPS) is not available here; use --device cpu")
        return dev, torch.mps.synchronize, MPSProbe()
    raise UserError(f"device {str(device)!r} is not supported; use cpu, cuda or mps")
