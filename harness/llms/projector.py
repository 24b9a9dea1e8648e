"""The LLaVA-style projector: encoder channels -> LLM hidden -> LLM hidden (two Linear, GELU).

It runs on every image, between the encoder and the LLM, so its cost is part of TTFT; it is
measured as its own step and reported on its own line (by the LLM backends:
``harness.backends.torch.prefill.measure_projector``, ``harness.backends.mlx.prefill``).
"""

from __future__ import annotations

import torch
from torch import nn

from harness.init import materialize


class Projector(nn.Module):
    """Two-layer GELU MLP mapping ``in_dim`` encoder features to ``hidden`` LLM embeddings."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.in_dim, self.hidden = in_dim, hidden
        self.fc1 = nn.Linear(in_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(features)))


def build_projector(
    in_dim: int,
    hidden: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    seed: int = 0,
) -> Projector:
    """A projector with well-conditioned random weights (no default init), in eval mode."""
    proj = materialize(lambda: Projector(in_dim, hidden), device=device, dtype=dtype, seed=seed)
    return proj.requires_grad_(False)


def encoder_features(
    tokens: int,
    in_dim: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    seed: int = 0,
) -> torch.Tensor:
    """Stand-in encoder output, ``1 x tokens x in_dim``, at the scale real encoders produce.

    Vision-encoder outputs (after a final norm or activation) are O(1) per channel, so
    standard-normal features are used; the projector then maps them to LLM-embedding
    inputs exactly as the real pipeline does.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(1, tokens, in_dim, generator=gen).to(device=device, dtype=dtype)
