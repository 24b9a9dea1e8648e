"""Dynamic tiling (AnyRes): split a large image into a grid of tiles, plus an optional overview.

``resolution`` is always the *total* input side. With an ``R x C`` grid the tile side is
``resolution / R`` (rows and columns must both divide it; tiles are square, so a ``1x2``
grid of a 2048 input has two 1024 tiles of the 1024 x 2048 image's halves -- we model the
input as ``(rows * tile) x (cols * tile)``). The overview is the whole image resized to one
tile. Tokens = (tiles + overview) x tokens per tile: 2048 with ``2x2+overview`` on FastViTHD
-> 5 x 256 = 1280 (the paper's Table 6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

_GRID = re.compile(r"^\s*(\d+)\s*[x×]\s*(\d+)\s*(\+\s*overview)?\s*$", re.IGNORECASE)
MAX_TILES = 64


@dataclass(frozen=True)
class Tiling:
    """A parsed tiling: ``rows x cols`` tiles and whether a global overview image is added."""

    rows: int = 1
    cols: int = 1
    overview: bool = False

    @property
    def tiled(self) -> bool:
        return self.rows * self.cols > 1 or self.overview

    @property
    def tiles(self) -> int:
        return self.rows * self.cols

    @property
    def images(self) -> int:
        """Images the encoder sees: tiles plus the overview."""
        return self.tiles + int(self.overview)

    @property
    def text(self) -> str:
        """Canonical spelling: ``none``, ``2x2``, ``2x2+overview``."""
        if not self.tiled:
            return "none"
        return f"{self.rows}x{self.cols}" + ("+overview" if self.overview else "")

    def tile_resolution(self, resolution: int) -> int:
        """Tile side for a total input side ``resolution`` (the longer grid side divides it)."""
        side = max(self.rows, self.cols)
        if resolution % side:
            raise UserError(
                f"tiling {self.text} needs a resolution divisible by {side}, got {resolution}"
            )
        return resolution // side

    def input_shape(self, resolution: int) -> tuple[int, int]:
        """(height, width) of the full input image this tiling covers."""
        tile = self.tile_resolution(resolution)
        return self.rows * tile, self.cols * tile

    def tokens(self, tokens_per_tile: int) -> int:
        return self.images * tokens_per_tile


def parse_tiling(text: str | Tiling | None) -> Tiling:
    """Parse ``none``, ``RxC`` or ``RxC+overview`` (``1x1`` is ``none``); anything else is a UserError."""
    if isinstance(text, Tiling):
        return text
    if text is None or str(text).strip().lower() in ("", "none", "no", "off", "1x1"):
        return Tiling()
    m = _GRID.match(str(text))
    if not m:
        raise UserError(
            f"unknown tiling {text!r}; use 'none', a grid like '2x2' or '1x2', optionally with '+overview' (e.g. '2x2+overview')"
        )
    rows, cols, overview = int(m.group(1)), int(m.group(2)), bool(m.group(3))
    if rows < 1 or cols < 1 or rows * cols > MAX_TILES:
        raise UserError(f"tiling {text!r}: grid must have between 1 and {MAX_TILES} tiles")
    return Tiling(rows, cols, overview)


def split_tiles(images: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    """``[B, 3, rows*t, cols*t]`` -> ``[B * (tiles + overview), 3, t, t]`` (tiles row-major, overview last).

    This is preprocessing (done once, outside the timed encoder step): tiles are contiguous
    crops; the overview is the whole image bilinearly resized (antialiased) to one tile.
    """
    import torch
    import torch.nn.functional as F

    b, c, h, w = images.shape
    if h % tiling.rows or w % tiling.cols or h // tiling.rows != w // tiling.cols:
        raise UserError(
            f"image {h}x{w} does not split into square {tiling.rows}x{tiling.cols} tiles"
        )
    t = h // tiling.rows
    tiles = (
        images.reshape(b, c, tiling.rows, t, tiling.cols, t)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(b * tiling.tiles, c, t, t)
    )
    parts = [tiles.reshape(b, tiling.tiles, c, t, t)]
    if tiling.overview:
        over = F.interpolate(
            images, size=(t, t), mode="bilinear", antialias=True, align_corners=False
        )
        parts.append(over.unsqueeze(1))
    return torch.cat(parts, dim=1).reshape(b * tiling.images, c, t, t).contiguous()
