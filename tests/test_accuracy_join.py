"""Join latency with accuracy; the latency CSV import."""

from pathlib import Path

import pandas as pd
import pytest

from harness.accuracy.avg5 import merge_records
from harness.accuracy.csv_io import read_accuracy_csv, read_latency_csv, write_accuracy_csv
from harness.accuracy.join import POINT_COLUMNS, join
from harness.accuracy.paper import paper_accuracy
from harness.errors import UserError

FIX = Path(__file__).parent / "fixtures" / "lmms_eval"


def test_latency_csv_fills_and_checks_ttft():
    lat = read_latency_csv(FIX / "latency.csv")
    assert lat["ttft_ms"].tolist() == [166.0, 152.0, 571.9, 1297.0]
    assert set(lat["latency_source"]) == {"imported"} and lat.loc[0, "machine"] == "iPhone 15 Pro"
    with pytest.raises(UserError, match=r"latency_inconsistent.csv:2: ttft_ms 200.0 != "):
        read_latency_csv(FIX / "bad" / "latency_inconsistent.csv")


def test_join_with_paper_accuracy_lists_unmatched():
    lat = read_latency_csv(FIX / "latency.csv")
    res = join(lat, paper_accuracy(), recipe="llava-1.5")
    pts = res.points
    assert list(pts.columns[: len(POINT_COLUMNS)]) == list(POINT_COLUMNS)
    assert pts[["encoder", "resolution"]].values.tolist() == [
        ["convnext-l", 512],
        ["vit-l-14", 336],
    ]
    assert pts["avg5"].round(2).tolist() == [61.34, 61.26]
    assert set(pts["accuracy_source"]) == {"paper"} and set(pts["latency_source"]) == {"imported"}
    # FastViTHD + Qwen2 latency has no LLaVA-1.5 accuracy: listed, not dropped.
    assert res.unmatched_latency["encoder"].tolist() == ["fastvithd", "fastvithd"]
    assert (res.unmatched_latency["reason"] == "no accuracy row with this key").all()
    assert len(res.unmatched_accuracy) == len(paper_accuracy().query("recipe == 'llava-1.5'")) - 2


def test_latency_without_recipe_matches_every_recipe_and_aliases_normalise():
    lat = pd.DataFrame(
        [
            {
                "encoder": "FastViTHD",
                "resolution": 1024,
                "llm": "Qwen2-0.5B",
                "tiling": "none",
                "encoder_ms": 100.0,
                "prefill_ms": 66.0,
                "ttft_ms": 166.0,
            }
        ]
    )
    res = join(lat, paper_accuracy(), benchmark="docvqa")
    assert res.points["recipe"].tolist() == ["pt15+it1.1", "pt15+it12.5"]
    assert res.points["accuracy"].tolist() == [61.0, 70.4] and res.unmatched_latency.empty


def test_ingested_rows_join_and_rows_without_metric_are_reported(tmp_path):
    rows = merge_records(read_accuracy_csv(FIX / "tidy.csv"), "csv")
    acc = pd.DataFrame([r.to_store() for r in rows])
    lat = read_latency_csv(FIX / "latency.csv")
    res = join(lat, acc)
    assert res.points["accuracy_source"].tolist() == ["csv"]
    assert res.unmatched_accuracy["reason"].str.startswith(
        "no avg5 score (missing: gqa"
    ).tolist() == [True]
    out = tmp_path / "roundtrip.csv"
    write_accuracy_csv(rows, out)
    back = merge_records(read_accuracy_csv(out), "csv")
    assert [(r.key, r.scores, r.avg5) for r in back] == [(r.key, r.scores, r.avg5) for r in rows]


def test_duplicate_accuracy_keys_are_refused():
    acc = paper_accuracy()
    both = pd.concat([acc, acc.assign(source="lmms-eval")])
    with pytest.raises(UserError, match="share a key"):
        join(read_latency_csv(FIX / "latency.csv"), both)
