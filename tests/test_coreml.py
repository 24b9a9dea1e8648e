"""Core ML: conversion works on Linux (and is cached); prediction needs macOS."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.backends.coreml.encoder import convert_coreml, measure_coreml
from harness.encoders import register_custom_encoder
from harness.errors import UserError

pytest.importorskip("coremltools")
EXAMPLE = (
    Path(__file__).resolve().parents[1] / "examples" / "my_encoder" / "encoder" / "my_encoder.yaml"
)


@pytest.fixture(scope="module")
def tiny():
    return register_custom_encoder(EXAMPLE).name


def test_convert_tiny_encoder_and_cache(tiny, tmp_path):
    art = convert_coreml(tiny, 64, precision="float16", cache_dir=tmp_path)
    assert not art.cached and art.path.is_dir() and art.path.suffix == ".mlpackage"
    assert (art.path / "Manifest.json").is_file()
    assert art.path.name.startswith(f"{tiny}_64px_b1_float16_")
    again = convert_coreml(tiny, 64, precision="float16", cache_dir=tmp_path)
    assert again.cached and again.path == art.path
    fp32 = convert_coreml(tiny, 64, precision="float32", cache_dir=tmp_path)
    assert fp32.path != art.path and not fp32.cached


def test_convert_tiled_batch(tiny, tmp_path):
    art = convert_coreml(tiny, 128, "2x2+overview", cache_dir=tmp_path)
    assert (art.batch, art.tile_resolution) == (5, 64)


def test_bad_options(tiny, tmp_path):
    with pytest.raises(UserError, match="compute units"):
        convert_coreml(tiny, 64, compute_units="NPU", cache_dir=tmp_path)
    with pytest.raises(UserError, match="precision"):
        convert_coreml(tiny, 64, precision="int3", cache_dir=tmp_path)


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-macOS path")
def test_prediction_needs_macos(tiny):
    with pytest.raises(UserError, match="Core ML prediction needs macOS"):
        measure_coreml(tiny, 64)


@pytest.mark.macos
@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML prediction needs macOS")
def test_predict_timed_on_macos(tiny, tmp_path):
    res = measure_coreml(tiny, 64, compute_units="CPU_AND_NE", cache_dir=tmp_path)
    assert res.tokens == 16 and res.out_dim == 256
    assert res.measurement.stats.median_ms > 0


@pytest.mark.slow
def test_convert_fastvithd_256(tmp_path):
    art = convert_coreml("fastvithd", 256, cache_dir=tmp_path)
    assert art.path.is_dir() and art.convert_s > 0
