"""One declaration per schema: points columns, benchmarks, aliases; memory survives the join."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import schema
from harness.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_points_schema_is_declared_once_and_used_by_every_consumer():
    import harness.choose as choose
    import harness.ttft as ttft
    from harness.accuracy import join
    from harness.report import figures

    assert (
        join.POINT_COLUMNS is schema.POINT_COLUMNS
        and join.LATENCY_COLUMNS is schema.LATENCY_COLUMNS
    )
    assert ttft.TTFT_COLUMNS is schema.TTFT_COLUMNS
    assert choose.OPTION_FIELDS is schema.OPTION_FIELDS
    assert figures.BENCH_COLUMNS is schema.BENCHMARK_COLUMNS
    # every latency column the join carries is produced by compose_ttft
    assert set(schema.LATENCY_COLUMNS) <= set(schema.TTFT_COLUMNS)
    assert "peak_mem_bytes" in schema.LATENCY_COLUMNS and "peak_mem_bytes" in schema.POINT_COLUMNS


def test_design_doc_lists_the_points_columns_from_the_schema():
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    assert schema.markdown_points_table() in text


def test_benchmark_aliases_cover_exactly_the_schema_benchmarks():
    from harness.accuracy.keys import AVG5, BENCHMARKS

    assert AVG5 is schema.AVG5
    assert set(BENCHMARKS) == {*schema.BENCHMARK_COLUMNS, *schema.OTHER_BENCHMARKS}


def test_one_alias_table_derived_from_the_zoos():
    from harness.accuracy.keys import normalize_encoder, normalize_llm
    from harness.encoders.zoo import BUILTIN_ORDER, ENCODERS
    from harness.llms.zoo import LLMS

    for name, aliases in LLMS.aliases().items():
        for alias in (name, *aliases):
            assert normalize_llm(alias) == LLMS.canonical(alias) == name
    enc = ENCODERS.aliases()
    for name in BUILTIN_ORDER:
        for alias in (name, *enc[name]):
            assert normalize_encoder(alias) == ENCODERS.canonical(alias) == name
    # 'llama-7b' used to be Vicuna in the zoo and unknown to the accuracy keys
    for lookup in (normalize_llm, LLMS.canonical):
        with pytest.raises(UserError, match="llama-2-7b|vicuna-7b"):
            lookup("llama-7b")


def test_no_second_copy_of_the_benchmark_list_in_the_package():
    listed = re.compile(r'"gqa",\s*"textvqa",\s*"pope",\s*"docvqa",\s*"seedbench"')
    copies = [
        p.relative_to(ROOT)
        for p in (ROOT / "harness").rglob("*.py")
        if listed.search(p.read_text())
    ]
    assert copies == [Path("harness/schema.py")]


def test_choose_max_memory_on_points_loaded_from_a_real_tiny_sweep(db_url, tmp_path):
    """A real (tiny) torch sweep -> store -> load_points -> choose --max-memory-gb."""
    from harness.choose import Limits, choose
    from harness.points import load_points
    from harness.sweep.configs import compose_sweep
    from harness.sweep.engine import run_sweep

    cfg = compose_sweep(
        "quick",
        [
            f"db={db_url}",
            "~encoders.fastvithd",
            "encoders.fastvit.resolutions=[64,128]",
            "~llms.tiny_llama",
            "protocol.max_time_s=2",
            "report=false",
            "progress=false",
        ],
    )
    out = run_sweep(cfg, command="test")
    assert out.exit_code == 0 and out.counts["measured"] >= 4
    from harness.store import Store

    Store(db_url).add_accuracy(
        [
            {
                "encoder": "fastvit",
                "resolution": res,
                "llm": "tiny-qwen2",
                "tiling": "none",
                "recipe": "llava-1.5",
                "scores": dict.fromkeys(schema.AVG5, score),
                "avg5": score,
                "source": "test",
            }
            for res, score in ((64, 40.0), (128, 50.0))
        ]
    )
    res = load_points(db=db_url, paper_accuracy=False)
    pts = res.points
    assert "peak_mem_bytes" in pts.columns
    mem = pts["peak_mem_bytes"].astype(float)
    assert len(pts) == 2 and (mem > 0).all(), pts[["encoder", "resolution", "peak_mem_bytes"]]
    limit_gb = float(mem.max()) / 1e9 * 2  # both fit
    picked = choose(pts, 1e9, limits=Limits(max_memory_gb=limit_gb))
    assert picked.choice is not None and picked.choice["resolution"] == 128
    assert picked.choice["peak_mem_bytes"] == pytest.approx(
        float(mem[pts["resolution"] == 128].iloc[0])
    )
    tight = float(mem.min()) / 1e9 * 0.5  # nothing fits in half the smallest peak
    nothing = choose(pts, 1e9, limits=Limits(max_memory_gb=tight))
    assert nothing.choice is None


def test_export_files_carry_schema_version_and_newer_layouts_are_refused(db_url, tmp_path):
    import json

    from harness.commands.compare import read_measurements_file
    from harness.protocol import Measurement
    from harness.stats import summarize
    from harness.store import MeasurementKey, Store

    s = Store(db_url)
    rid = s.create_run("t", {}, {"machine_id": "m"})
    samples = [1.0, 2.0, 3.0, 4.0, 5.0]
    s.add_measurement(
        rid,
        MeasurementKey("encoder", "fastvit", resolution=64),
        Measurement(samples, summarize(samples), "quick", 1),
    )
    for ext in ("csv", "json", "parquet"):
        rows = read_measurements_file(s.export(tmp_path / f"m.{ext}"))
        assert [int(r["schema_version"]) for r in rows] == [schema.FILE_SCHEMA_VERSION]
    doc = json.loads((tmp_path / "m.json").read_text())
    doc[0]["schema_version"] = schema.FILE_SCHEMA_VERSION + 1
    (tmp_path / "new.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="upgrade vlm-pareto"):
        read_measurements_file(tmp_path / "new.json")
    del doc[0]["schema_version"]  # files from before versioning are read as version 1
    (tmp_path / "old.json").write_text(json.dumps(doc))
    assert len(read_measurements_file(tmp_path / "old.json")) == 1
