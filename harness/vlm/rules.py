"""Visual-token rules of the open-VLM families, as pure functions (no torch, no transformers).

Each rule answers "how many visual tokens reach the LLM for an H x W image" under the
family's resolution policy, and which sizes that policy can produce at all. The numbers
follow the families' transformers 5.24 processors and models (see docs/vlms.md):

- LLaVA-OneVision (AnyRes): the image is fitted to the best of a list of grid resolutions
  (multiples of the 384 px tile), cut into tiles, plus one base image; the grid's features
  are unpadded to the image's aspect ratio, bilinearly shrunk when they exceed
  ``anyres_max_N`` tiles' worth, and followed by one newline token per feature row.
- Qwen2.5-VL (dynamic resolution): the image is resized to multiples of 28 px (14 px patches,
  2 x 2 merge) with ``min_pixels <= H*W <= max_pixels``; one token per 28 x 28 px.
- SmolVLM2 / Idefics3 (image splitting + pixel shuffle): tiles of the encoder's side plus a
  global image when the image is larger than one tile; ``(side/patch)^2 / s^2`` tokens each.
- InternVL (dynamic 448 px tiles + pixel shuffle 0.5): 1..max_num tiles matched to the aspect
  ratio, plus a thumbnail when there is more than one tile; 256 tokens per tile.
- Gemma 3: SigLIP at 896 px, average-pooled to a fixed 256 tokens (pan-and-scan off).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from harness.errors import UserError


def nearest(value: int, valid: Sequence[int], n: int = 2) -> list[int]:
    """The ``n`` entries of ``valid`` closest to ``value`` (ascending)."""
    return sorted(sorted(set(valid), key=lambda v: (abs(v - value), v))[:n])


def refuse(model: str, size: int, why: str, valid: Sequence[int]) -> UserError:
    """The one-line error for a size the policy cannot produce, with the nearest valid sizes."""
    near = nearest(size, valid)
    return UserError(
        f"{model} cannot run a {size} px image: {why}; nearest valid sizes: {', '.join(map(str, near))}"
    )


# --------------------------------------------------------------------------- LLaVA-OneVision


def select_best_resolution(h: int, w: int, pinpoints: Sequence[Sequence[int]]) -> tuple[int, int]:
    """The grid resolution (h, w) LLaVA's AnyRes picks: most of the image kept, least padding."""
    best: tuple[int, int] | None = None
    best_eff, best_waste = -1, math.inf
    for ph, pw in pinpoints:
        scale = min(pw / w, ph / h)
        dw, dh = int(w * scale), int(h * scale)
        eff = min(dw * dh, w * h)
        waste = ph * pw - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (int(ph), int(pw)), eff, waste
    assert best is not None
    return best


def unpadded_shape(ch: int, cw: int, h: int, w: int) -> tuple[int, int]:
    """Feature-grid shape after removing the padding AnyRes added to fit ``h x w``."""
    if w / h > cw / ch:
        new_h = int(round(h * (cw / w), 7))
        pad = (ch - new_h) // 2
        return ch - 2 * pad, cw
    new_w = int(round(w * (ch / h), 7))
    pad = (cw - new_w) // 2
    return ch, cw - 2 * pad


def llava_ov_layout(
    h: int, w: int, tile: int, patch: int, pinpoints: Sequence[Sequence[int]], max_tiles: int
) -> dict[str, int]:
    """Grid rows/cols and the packed feature shape for an ``h x w`` image."""
    g = tile // patch
    bh, bw = select_best_resolution(h, w, pinpoints)
    rows, cols = bh // tile, bw // tile
    ch, cw = unpadded_shape(rows * g, cols * g, h, w)
    ratio = math.sqrt(ch * cw / (max_tiles * g * g))
    if ratio > 1.1:
        ch, cw = int(ch // ratio), int(cw // ratio)
    return {"rows": rows, "cols": cols, "grid": g, "feat_h": ch, "feat_w": cw}


def llava_ov_tokens(
    h: int,
    w: int,
    tile: int = 384,
    patch: int = 14,
    pinpoints: Sequence[Sequence[int]] = (),
    max_tiles: int = 9,
    newline: bool = True,
) -> int:
    """Base image (g^2) + the unpadded, possibly shrunk grid + one newline per grid row."""
    lay = llava_ov_layout(h, w, tile, patch, pinpoints, max_tiles)
    g = lay["grid"]
    return g * g + lay["feat_h"] * lay["feat_w"] + (lay["feat_h"] if newline else 0)


def llava_ov_sizes(tile: int, pinpoints: Sequence[Sequence[int]]) -> list[int]:
    """Square sizes the AnyRes grid runs at without resizing: the square pinpoints."""
    return sorted({int(ph) for ph, pw in pinpoints if ph == pw and ph % tile == 0})


# --------------------------------------------------------------------------- Qwen2.5-VL


def smart_resize(
    h: int,
    w: int,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 14 * 14 * 4 * 1280,
) -> tuple[int, int]:
    """Qwen2-VL's resize: sides rounded to ``factor``, area kept within [min_pixels, max_pixels]."""
    if max(h, w) / min(h, w) > 200:
        raise UserError(f"aspect ratio of {h}x{w} is above Qwen2-VL's limit of 200")
    hb, wb = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = (
            max(factor, math.floor(h / beta / factor) * factor),
            max(factor, math.floor(w / beta / factor) * factor),
        )
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def qwen_tokens(h: int, w: int, factor: int = 28, merge: int = 2) -> int:
    """One token per ``factor x factor`` pixels of the (already resized) image."""
    return (h // factor) * (w // factor)


def qwen_sizes(factor: int, min_pixels: int, max_pixels: int) -> list[int]:
    """Square sizes that pass smart_resize unchanged: multiples of ``factor`` within the pixel bounds."""
    lo = max(factor, math.ceil(math.sqrt(min_pixels) / factor) * factor)
    hi = math.floor(math.sqrt(max_pixels) / factor) * factor
    return list(range(lo, hi + 1, factor))


# --------------------------------------------------------------------------- SmolVLM2 / Idefics3


def split_grid(h: int, w: int, tile: int) -> tuple[int, int]:
    """Idefics3's split: ceil(side / tile) tiles per side; (0, 0) when one tile holds the image."""
    if h <= tile and w <= tile:
        return 0, 0
    return math.ceil(h / tile), math.ceil(w / tile)


def split_shuffle_tokens(h: int, w: int, tile: int, patch: int, scale: int) -> int:
    """(tiles + global image, or the one image) x (tile/patch)^2 / scale^2."""
    per = (tile // patch) ** 2 // (scale * scale)
    rows, cols = split_grid(h, w, tile)
    images = rows * cols + 1 if rows else 1
    return images * per


def split_sizes(tile: int, longest_edge: int) -> list[int]:
    """Square sizes the splitter produces: multiples of the tile up to the processor's longest edge."""
    return list(range(tile, longest_edge + 1, tile))


# --------------------------------------------------------------------------- InternVL


def internvl_grid(
    h: int, w: int, min_num: int = 1, max_num: int = 12, tile: int = 448
) -> tuple[int, int]:
    """InternVL's dynamic_preprocess: the (cols, rows) grid whose aspect ratio is closest to the image's."""
    aspect = w / h
    ratios = sorted(
        {
            (i, j)
            for n in range(min_num, max_num + 1)
            for i in range(1, n + 1)
            for j in range(1, n + 1)
            if min_num <= i * j <= max_num
        },
        key=lambda x: x[0] * x[1],
    )
    best, best_diff, area = (1, 1), math.inf, w * h
    for c, r in ratios:
        diff = abs(aspect - c / r)
        if diff < best_diff:
            best, best_diff = (c, r), diff
        elif diff == best_diff and area > 0.5 * tile * tile * c * r:
            best = (c, r)
    return best


def internvl_tokens(
    h: int,
    w: int,
    tile: int = 448,
    patch: int = 14,
    downsample: float = 0.5,
    max_num: int = 12,
    thumbnail: bool = True,
) -> int:
    """Tiles (+ thumbnail when more than one) x (tile/patch * downsample)^2."""
    c, r = internvl_grid(h, w, 1, max_num, tile)
    per = int((tile // patch) * downsample) ** 2
    images = c * r + (1 if thumbnail and c * r > 1 else 0)
    return images * per


def internvl_sizes(tile: int, max_num: int) -> list[int]:
    """Square sizes whose n x n grid is within ``max_num`` tiles."""
    return [tile * n for n in range(1, max_num + 1) if n * n <= max_num]


# --------------------------------------------------------------------------- Gemma 3


def pooled_tokens(image_size: int, patch: int, tokens: int) -> tuple[int, int]:
    """(tokens, pooling kernel) for SigLIP at ``image_size`` average-pooled to ``tokens``."""
    side = image_size // patch
    out = int(math.isqrt(tokens))
    if out * out != tokens or side % out:
        raise UserError(
            f"mm_tokens_per_image={tokens} does not pool a {side}x{side} patch grid evenly"
        )
    return tokens, side // out
