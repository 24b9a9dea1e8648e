"""AnyRes tiling: parsing, tile sides, token counts, and the tile split itself."""

from __future__ import annotations

import pytest
import torch

from harness.encoders import encoder_tokens, parse_tiling
from harness.encoders.tiling import Tiling, split_tiles
from harness.errors import UserError


@pytest.mark.parametrize(
    "text,rows,cols,overview,canonical",
    [
        ("none", 1, 1, False, "none"),
        (None, 1, 1, False, "none"),
        ("1x1", 1, 1, False, "none"),
        ("2x2", 2, 2, False, "2x2"),
        ("2x2+overview", 2, 2, True, "2x2+overview"),
        (" 1X2 ", 1, 2, False, "1x2"),
        ("3x3+overview", 3, 3, True, "3x3+overview"),
    ],
)
def test_parse(text, rows, cols, overview, canonical):
    t = parse_tiling(text)
    assert (t.rows, t.cols, t.overview, t.text) == (rows, cols, overview, canonical)
    assert parse_tiling(t.text) == t


@pytest.mark.parametrize("bad", ["2x", "x2", "2x2+global", "0x2", "9x9", "two by two"])
def test_parse_rejects(bad):
    with pytest.raises(UserError, match="tiling"):
        parse_tiling(bad)


def test_paper_table6_token_count():
    # 2048 input, 2x2 grid of 1024 tiles + a 1024 overview: 5 x 256 = 1280 (Table 6).
    assert encoder_tokens("fastvithd", 2048, "2x2+overview") == 1280
    assert encoder_tokens("fastvithd", 2048, "2x2") == 1024
    assert encoder_tokens("fastvithd", 1024, "1x2") == 2 * 64
    assert encoder_tokens("convnext-l", 1536, "3x3") == 9 * 256
    assert parse_tiling("2x2+overview").tile_resolution(2048) == 1024


def test_tile_side_must_divide_and_fit_the_stride():
    with pytest.raises(UserError, match="divisible by 3"):
        parse_tiling("3x3").tile_resolution(1024)
    assert encoder_tokens("fastvithd", 1536, "2x2") == 4 * 144  # 768 tiles


def test_tile_side_not_multiple():
    # 1200 / 3 = 400 px tiles, not a multiple of FastViTHD's stride 64
    with pytest.raises(UserError, match="multiple of its stride 64"):
        encoder_tokens("fastvithd", 1200, "3x3")


def test_split_tiles_are_the_crops_and_overview_last():
    img = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    t = Tiling(2, 2, overview=True)
    out = split_tiles(img, t)
    assert out.shape == (2 * 5, 3, 4, 4)
    assert torch.equal(out[0], img[0, :, :4, :4])
    assert torch.equal(out[1], img[0, :, :4, 4:])
    assert torch.equal(out[2], img[0, :, 4:, :4])
    assert torch.equal(out[3], img[0, :, 4:, 4:])
    assert torch.equal(
        out[5], img[1, :, :4, :4]
    )  # second image's tiles follow the first's overview
    over = out[4]
    assert over.shape == (3, 4, 4) and over.min() >= img[0].min() and over.max() <= img[0].max()


def test_split_rectangular_grid():
    img = torch.rand(1, 3, 4, 8)
    out = split_tiles(img, parse_tiling("1x2"))
    assert out.shape == (2, 3, 4, 4)
    assert torch.equal(out[1], img[0, :, :, 4:])
    assert parse_tiling("1x2").input_shape(8) == (4, 8)
