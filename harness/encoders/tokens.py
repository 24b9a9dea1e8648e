"""Token-grid operations shared by encoder families and VLM vision towers."""

from __future__ import annotations

import math

import torch


def pixel_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Space-to-depth on a token grid: ``[B, N, C]`` -> ``[B, N / s^2, C * s^2]`` (Idefics3, InternVL).

    Tokens are a square ``sqrt(N) x sqrt(N)`` grid; ``scale`` must divide its side.
    """
    b, n, c = x.shape
    side = math.isqrt(n)
    if side * side != n or side % scale:
        raise ValueError(
            f"pixel shuffle by {scale} needs a square token grid divisible by it, got {n} tokens"
        )
    x = x.reshape(b, side, side // scale, c * scale)
    x = x.permute(0, 2, 1, 3).reshape(b, side // scale, side // scale, c * scale * scale)
    return x.permute(0, 2, 1, 3).reshape(b, n // (scale * scale), c * scale * scale)
