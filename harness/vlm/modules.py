"""Torch pieces the VLM families share: token reductions, tiling inputs, buffer restoration.

Every vision module here has ``prepare(images)`` (preprocessing, run once before timing, as
the encoder runner does for tiles) and ``forward(prepared) -> [1, tokens, channels]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.encoders.tokens import pixel_shuffle


def square_tiles(
    images: torch.Tensor, rows: int, cols: int, tile: int, extra: str | None
) -> torch.Tensor:
    """``[1, 3, H, W]`` resized to ``rows*tile x cols*tile`` and cut into tiles (row-major).

    ``extra``: ``"first"``/``"last"`` adds the whole image resized to one tile (LLaVA's base
    image comes first; Idefics3's global image and InternVL's thumbnail come last).
    """
    h, w = rows * tile, cols * tile
    if images.shape[-2:] != (h, w):
        images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)
    c = images.shape[1]
    tiles = (
        images.reshape(1, c, rows, tile, cols, tile)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(rows * cols, c, tile, tile)
    )
    if extra is None:
        return tiles.contiguous()
    whole = F.interpolate(
        images, size=(tile, tile), mode="bilinear", align_corners=False, antialias=True
    )
    parts = [whole, tiles] if extra == "first" else [tiles, whole]
    return torch.cat(parts, dim=0).contiguous()


@torch.no_grad()
def restore_buffers(model: nn.Module) -> nn.Module:
    """Refill non-persistent buffers that ``to_empty`` leaves as garbage.

    ``position_ids`` -> arange; rotary ``*inv_freq`` -> recomputed by a fresh module of the same
    class; ``embed_scale`` -> its scalar. Anything else non-persistent is refused (a silent
    garbage buffer would corrupt the measurement).
    """
    for m in model.modules():
        names = [n for n in m._non_persistent_buffers_set if getattr(m, n, None) is not None]
        if not names:
            continue
        fresh = None
        for n in names:
            buf = getattr(m, n)
            if n == "position_ids":
                setattr(
                    m,
                    n,
                    torch.arange(buf.shape[-1], device=buf.device, dtype=buf.dtype)
                    .expand(buf.shape)
                    .contiguous(),
                )
            elif "inv_freq" in n:
                if fresh is None:
                    cfg = getattr(m, "config", None)
                    with torch.device(buf.device):
                        fresh = (
                            type(m)(cfg)
                            if cfg is not None
                            else type(m)(*getattr(m, "_vlm_args", ()))
                        )
                setattr(m, n, getattr(fresh, n).to(device=buf.device))
            elif n == "embed_scale" and hasattr(m, "scalar_embed_scale"):
                scale: Any = m.scalar_embed_scale
                buf.fill_(float(scale))
            else:
                raise RuntimeError(
                    f"cannot restore non-persistent buffer {type(m).__name__}.{n} after to_empty"
                )
    return model


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class VisionTokens(nn.Module):
    """Base class: a tower, a ``prepare`` step and the ``[1, tokens, channels]`` contract."""

    out_dim: int = 0

    def prepare(self, images: torch.Tensor) -> Any:  # pragma: no cover - overridden
        return images


class AnyResSiglip(VisionTokens):
    """LLaVA-OneVision: base image + AnyRes tiles through SigLIP (last layer, no post-norm),
    grid features unpadded/shrunk and closed by one newline vector per row."""

    def __init__(self, tower: Any, layout: dict[str, int], tile: int):
        super().__init__()
        tower.post_layernorm = (
            nn.Identity()
        )  # vision_feature_layer=-1 reads the pre-norm hidden state
        self.tower = tower
        self.layout = dict(layout)
        self.tile = tile
        self.out_dim = tower.config.hidden_size
        self.image_newline = nn.Parameter(torch.empty(self.out_dim))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return square_tiles(images, self.layout["rows"], self.layout["cols"], self.tile, "first")

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        feats = self.tower(pixel_values=tiles).last_hidden_state  # [1 + rows*cols, g*g, C]
        lay, c = self.layout, feats.shape[-1]
        g, rows, cols = lay["grid"], lay["rows"], lay["cols"]
        base, grid = feats[0], feats[1:]
        grid = grid.view(rows, cols, g, g, c).permute(4, 0, 2, 1, 3).reshape(c, rows * g, cols * g)
        fh, fw = lay["feat_h"], lay["feat_w"]
        if (fh, fw) != (
            rows * g,
            cols * g,
        ):  # anyres_max_N: shrink (square images need no unpadding)
            grid = F.interpolate(grid[None], size=(fh, fw), mode="bilinear")[0]
        newline = self.image_newline[:, None, None].expand(c, fh, 1)
        grid = torch.cat([grid, newline], dim=-1).flatten(1, 2).transpose(0, 1)
        return torch.cat([base, grid], dim=0).unsqueeze(0)


class QwenMergeOnly(nn.Module):
    """Qwen2.5-VL's merger without its MLP: RMSNorm and the 2 x 2 concatenation (4C channels)."""

    def __init__(self, ln_q: nn.Module, merge: int):
        super().__init__()
        self.ln_q = ln_q
        self.merge = merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_q(x).view(-1, x.shape[-1] * self.merge * self.merge)


class QwenVision(VisionTokens):
    """Qwen2.5-VL's vision transformer (window attention, 2D RoPE) on one image's patches."""

    def __init__(self, visual: Any, size: int):
        super().__init__()
        cfg = visual.config
        self.merge = cfg.spatial_merge_size
        visual.merger = QwenMergeOnly(visual.merger.ln_q, self.merge)
        self.visual = visual
        self.patch, self.temporal = cfg.patch_size, cfg.temporal_patch_size
        self.grid = (1, size // self.patch, size // self.patch)
        self.out_dim = cfg.hidden_size * self.merge * self.merge

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """``[1, 3, R, R]`` -> ``[(R/14)^2, 3 * 2 * 14 * 14]`` flattened patches (the frame repeated in time)."""
        _, c, h, w = images.shape
        p, t = self.patch, self.temporal
        x = images.expand(t, c, h, w).reshape(t, c, h // p, p, w // p, p)
        return x.permute(2, 4, 1, 0, 3, 5).reshape((h // p) * (w // p), c * t * p * p).contiguous()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        grid = torch.tensor([self.grid], device=patches.device)
        out = self.visual(patches, grid_thw=grid)
        return out.pooler_output.unsqueeze(0)


class SplitShuffle(VisionTokens):
    """SmolVLM2 / Idefics3: tiles (+ global image) through the SigLIP-style tower, then pixel shuffle."""

    def __init__(self, tower: Any, rows: int, cols: int, tile: int, scale: int):
        super().__init__()
        self.tower, self.rows, self.cols, self.tile, self.scale = tower, rows, cols, tile, scale
        self.out_dim = tower.config.hidden_size * scale * scale

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        if self.rows == 0:
            return square_tiles(images, 1, 1, self.tile, None)
        return square_tiles(images, self.rows, self.cols, self.tile, "last")

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values=tiles).last_hidden_state
        out = pixel_shuffle(hidden, self.scale)
        return out.reshape(1, -1, out.shape[-1])


class InternTiles(VisionTokens):
    """InternVL: 448 px tiles (+ thumbnail) through InternViT, CLS dropped, pixel shuffle by 1/ratio."""

    def __init__(self, tower: Any, cols: int, rows: int, tile: int, scale: int, thumbnail: bool):
        super().__init__()
        self.tower, self.cols, self.rows, self.tile, self.scale = tower, cols, rows, tile, scale
        self.thumbnail = thumbnail and cols * rows > 1
        self.out_dim = tower.config.hidden_size * scale * scale

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return square_tiles(
            images, self.rows, self.cols, self.tile, "last" if self.thumbnail else None
        )

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values=tiles).last_hidden_state[:, 1:]
        out = pixel_shuffle(hidden, self.scale)
        return out.reshape(1, -1, out.shape[-1])


class PooledSiglip(VisionTokens):
    """Gemma 3: SigLIP at its fixed size, the patch grid average-pooled to ``mm_tokens_per_image``."""

    def __init__(self, tower: Any, kernel: int):
        super().__init__()
        self.tower, self.kernel = tower, kernel
        self.side = tower.config.image_size
        self.out_dim = tower.config.hidden_size

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.side:
            images = F.interpolate(
                images, size=(self.side, self.side), mode="bilinear", align_corners=False
            )
        return images.contiguous()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(
            pixel_values=images
        ).last_hidden_state  # [1, g*g, C] (post-norm, as Gemma 3 reads it)
        b, n, c = hidden.shape
        g = math.isqrt(n)
        grid = hidden.transpose(1, 2).reshape(b, c, g, g)
        pooled = F.avg_pool2d(grid, kernel_size=self.kernel, stride=self.kernel)
        return pooled.flatten(2).transpose(1, 2)
