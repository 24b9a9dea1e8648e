"""The paper's tables as data: Avg-5 reproduces the paper, cross-table facts hold."""

import math

import pytest

from harness.accuracy.keys import KEY_FIELDS
from harness.accuracy.paper import (
    PAPER_MACHINE,
    paper_accuracy,
    paper_latency,
    paper_points,
    paper_rows,
)
from harness.errors import UserError


def test_every_table_is_transcribed():
    rows = paper_rows()
    assert rows.groupby("table").size().to_dict() == {1: 4, 2: 3, 3: 4, 4: 8, 5: 22, 6: 44}
    assert rows["label"].is_unique
    assert rows.set_index("label").loc["R12", "source"] == "Table 6, row R12"


def test_avg5_reproduces_tables_1_2_4():
    rows = paper_rows()
    printed = rows[rows["avg5_paper"].notna()]
    assert len(printed) == 15  # every row of Tables 1, 2 and 4
    for _, r in printed.iterrows():
        assert abs(r["avg5"] - r["avg5_paper"]) <= 0.1 + 1e-9, r["label"]


def test_table6_row_values():
    r = paper_rows().set_index("label")
    assert (r.loc["R3", "ttft_ms"], r.loc["R3", "docvqa"], r.loc["R3", "recipe"]) == (
        166.0,
        61.0,
        "pt15+it1.1",
    )
    assert r.loc["R5", "tiling"] == "2x2+overview" and r.loc["R5", "tokens"] == 1280
    assert r.loc["R15", "recipe"] == "llava-1.5" and r.loc["R2", "llm"] == "qwen2-0.5b"
    assert r.loc["R44", "encoder"] == "siglip-so400m+convnext-xxl+dinov2-vit-l-14+vit-l-14"
    assert math.isnan(r.loc["R2", "gqa"]) and r.loc["R2", "seedbench"] == 65.5


def test_same_model_agrees_across_tables_and_notes_disagreements():
    r = paper_rows().set_index("label")
    for a, b in (
        ("T4.1", "R15"),
        ("T4.5", "R19"),
        ("T4.8", "R27"),
        ("T1.1", "R31"),
        ("T1.4", "T2.1"),
    ):
        for col in ("gqa", "textvqa", "pope", "docvqa", "seedbench"):
            assert r.loc[a, col] == r.loc[b, col], (a, b, col)
    # Table 5's SeedBench is another metric: kept apart, and the data says why.
    assert (r.loc["T5.3", "seedbench_all"], r.loc["T4.1", "seedbench"]) == (58.8, 63.7)
    assert "seedbench_all" in r.loc["T5.3", "note"]
    # Table 6's TTFT for FastViTHD-1024 + Qwen2-0.5B is below Table 4's encoder latency alone.
    assert r.loc["R3", "ttft_ms"] < r.loc["T4.8", "encoder_ms"]
    assert "166" in r.loc["T4.8", "note"] and "55.5" in r.loc["T4.1", "note"]


def test_paper_accuracy_has_unique_keys_and_merges_tables():
    acc = paper_accuracy()
    assert not acc.duplicated(list(KEY_FIELDS)).any()
    row = acc[acc["source"].str.contains("R15")].iloc[0]
    assert row["source"] == "Table 4, row 1; Table 5, row 3; Table 6, row R15"
    assert row["avg5"] == pytest.approx(55.42) and row["scores"]["mmmu"] == 36.2
    assert len(paper_accuracy(variants=True)) > len(acc)


def test_paper_latency_shares_ttft_within_an_architecture():
    lat = paper_latency()
    assert (lat["latency_source"] == "paper").all() and (lat["machine"] == PAPER_MACHINE).all()
    hd256 = lat[(lat.encoder == "fastvithd") & (lat.resolution == 256)].iloc[0]
    assert (hd256["encoder_ms"], hd256["ttft_ms"]) == (10.1, 150.0) and math.isnan(
        hd256["prefill_ms"]
    )
    r3 = lat[
        (lat.encoder == "fastvithd") & (lat.resolution == 1024) & (lat.llm == "qwen2-0.5b")
    ].iloc[0]
    assert r3["ttft_ms"] == 166.0 and math.isnan(r3["encoder_ms"])  # never carried across LLMs
    assert "none" not in set(lat["llm"]) and "none" in set(
        paper_latency(include_encoder_only=True)["llm"]
    )


def test_paper_points_reproduce_table6_groups():
    pts = paper_points("table6-0.5b")
    assert pts["labels"].tolist() == ["R1", "R2", "R3", "R4", "R5"]
    assert pts["ttft_ms"].tolist() == [535.0, 14124.0, 166.0, 166.0, 918.0]
    assert pts.loc[2, "avg5"] == pytest.approx(66.6) and math.isnan(pts.loc[0, "avg5"])
    t4 = paper_points("table4")
    assert len(t4) == 8 and set(t4["accuracy_source"]) == {"paper"}
    assert t4["ttft_ms"].notna().sum() == 3  # FastViTHD 256/768/1024 via R15/R19/R27
    with pytest.raises(UserError, match="paper group"):
        paper_points("table9")
