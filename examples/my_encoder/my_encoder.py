"""A worked custom encoder: a small stride-16 conv net whose factory the zoo can instantiate.

Any callable returning an ``nn.Module`` works; its forward takes ``images[B, 3, H, W]`` and
returns a feature map ``[B, C, h, w]`` (or tokens ``[B, N, C]``). The harness probes stride,
channels, token count and parameters from a real forward pass, so nothing here is declared.
"""

from __future__ import annotations

from torch import nn


class TinyConvEncoder(nn.Module):
    """Four stride-2 conv stages (stride 16), GELU, then a 1x1 projection to ``out_dim``."""

    def __init__(self, width: int = 32, out_dim: int = 256, stages: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i in range(stages):
            cout = width * 2**i
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.GELU()]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.proj = nn.Conv2d(cin, out_dim, 1)

    def forward(self, images):
        return self.proj(self.body(images))


def build_tiny_encoder(width: int = 32, out_dim: int = 256, stages: int = 4) -> TinyConvEncoder:
    """The factory named by ``_target_`` in my_encoder.yaml."""
    return TinyConvEncoder(width=width, out_dim=out_dim, stages=stages)
