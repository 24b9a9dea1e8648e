"""Alias table and Avg-5 rules."""

import pytest

from harness.accuracy.avg5 import ScoreRecord, avg5, merge_records
from harness.accuracy.keys import (
    Key,
    normalize_benchmark,
    normalize_encoder,
    normalize_key,
    normalize_recipe,
    normalize_tiling,
)
from harness.errors import UserError


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("FastViTHD", "fastvithd"),
        ("C.N-L", "convnext-l"),
        ("ConvNeXT-XXL", "convnext-xxl"),
        ("ViT-L/14", "vit-l-14"),
        ("ViT-SO400M", "siglip-so400m"),
        ("vit-so400m", "siglip-so400m"),
        ("ViT-g/14", "vit-g-14"),
        ("ViT-G/14", "vit-bigg-14"),
        ("ConvNeXT-L + ViT-L/14", "convnext-l+vit-l-14"),
    ],
)
def test_encoder_aliases(alias, canonical):
    assert normalize_encoder(alias) == canonical


def test_key_normalises_every_field():
    key = normalize_key("FastViTHD", "2048", "Qwen2-1.5B", "2x2 + Overview", "15+12.50")
    assert key == Key("fastvithd", 2048, "qwen2-1.5b", "2x2+overview", "pt15+it12.5")
    assert normalize_key("C.N-L", 512.0, "Vic.", None, "pt0.5+it0.6").recipe == "llava-1.5"


def test_unknown_names_suggest_and_custom_names_slugify():
    with pytest.raises(UserError, match="did you mean 'fastvithd'"):
        normalize_encoder("fastvitdh")
    assert normalize_encoder("My Encoder/v2", strict=False) == "my-encoder-v2"
    with pytest.raises(UserError, match="tiling"):
        normalize_tiling("2by2")
    with pytest.raises(UserError, match="recipe"):
        normalize_recipe("lots of data")
    assert normalize_benchmark("textvqa_val") == "textvqa"
    assert normalize_benchmark("SeedBench-I") == "seedbench"


def test_avg5_needs_all_five():
    full = {
        "gqa": 60.6,
        "textvqa": 53.1,
        "pope": 82.3,
        "docvqa": 17.4,
        "seedbench": 63.7,
        "sqa": 1.0,
    }
    value, missing = avg5(full)
    assert value == pytest.approx(55.42) and missing == []
    value, missing = avg5({"gqa": 60.0, "pope": 80.0})
    assert value is None and missing == ["textvqa", "docvqa", "seedbench"]


def test_merge_combines_files_and_refuses_conflicts():
    k = Key("fastvithd", 1024, "qwen2-0.5b", "none", "pt15+it1.1")
    recs = [
        ScoreRecord(k, "gqa", 61.6, "a.json"),
        ScoreRecord(k, "pope", 87.4, "b.json"),
        ScoreRecord(k, "gqa", 61.6, "c.json"),
    ]
    (row,) = merge_records(recs, "lmms-eval")
    assert row.scores == {"gqa": 61.6, "pope": 87.4} and row.missing == [
        "textvqa",
        "docvqa",
        "seedbench",
    ]
    with pytest.raises(UserError, match="conflicting gqa scores.*a.json"):
        merge_records(recs + [ScoreRecord(k, "gqa", 60.0, "d.json")], "lmms-eval")
