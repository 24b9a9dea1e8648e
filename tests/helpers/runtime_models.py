"""Tiny models for the runtime tests (tests/test_runtimes.py)."""

from __future__ import annotations

import torch
from torch import nn


class EigenScaled(nn.Module):
    """A stride-8 conv encoder scaled by the mean eigenvalue of a small symmetric matrix that
    depends on its output: eager PyTorch runs it; the ONNX exporter has no translation for
    ``linalg.eigh`` and ExecuTorch refuses it (not in the core ATen opset), so both exports
    fail for real. The matrix is diagonal with distinct positive entries scaled by a factor
    in (0.5, 2.5), so LAPACK always converges (an earlier version's matrix was a buffer, left
    as uninitialised memory by the meta-device build, and eigh failed at random)."""

    def __init__(self, out_dim: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(3, out_dim, 8, stride=8)
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        y = self.conv(images)
        diag = torch.diag(torch.arange(1, self.out_dim + 1, dtype=y.dtype, device=y.device))
        scale = 1.5 + torch.tanh(y.mean())
        return y * torch.linalg.eigvalsh(diag * scale).mean()


def build_eigen_scaled(out_dim: int = 16) -> EigenScaled:
    return EigenScaled(out_dim)


class BufferedConv(nn.Module):
    """A conv encoder whose forward depends on the values of its buffers (a constant matrix
    and an index table): wrong values would change its output or crash the gather."""

    def __init__(self, out_dim: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, out_dim, 8, stride=8)
        self.register_buffer("eye", torch.eye(out_dim))
        self.register_buffer("order", torch.arange(out_dim).flip(0))
        self.register_buffer("scale", torch.full((out_dim,), 0.5), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        y = self.conv(images)
        y = torch.einsum("cd,bdhw->bchw", self.eye, y) * self.scale[:, None, None]
        return y[:, self.order]


def build_buffered_conv(out_dim: int = 8) -> BufferedConv:
    return BufferedConv(out_dim)


class Overflowing(nn.Module):
    """A stride-8 conv encoder whose features reach ~1e6: fine in float32 and bfloat16,
    infinite in float16 (largest finite value 65504)."""

    def __init__(self, out_dim: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, out_dim, 8, stride=8)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images) * 1e6


def build_overflowing(out_dim: int = 8) -> Overflowing:
    return Overflowing(out_dim)
