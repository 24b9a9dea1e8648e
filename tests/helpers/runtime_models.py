"""Tiny models for the runtime tests (tests/test_runtimes.py)."""

from __future__ import annotations

import torch
from torch import nn


class EigenScaled(nn.Module):
    """A stride-8 conv encoder scaled by an eigenvalue of its channel Gram matrix: eager
    PyTorch runs it; the ONNX exporter has no translation for ``linalg.eigh`` and ExecuTorch
    refuses it (not in the core ATen opset), so both exports fail for real."""

    def __init__(self, out_dim: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(3, out_dim, 8, stride=8)
        self.register_buffer("eye", torch.eye(out_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        y = self.conv(images)
        gram = torch.einsum("bchw,bdhw->bcd", y, y) / y.shape[-1] ** 2
        return y * torch.linalg.eigvalsh(gram + self.eye).mean()


def build_eigen_scaled(out_dim: int = 16) -> EigenScaled:
    return EigenScaled(out_dim)
