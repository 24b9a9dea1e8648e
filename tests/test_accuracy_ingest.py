"""`vlm-pareto ingest` end to end: golden output, idempotency, nothing written on bad input."""

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.store import Store

FIX = Path(__file__).parent / "fixtures" / "lmms_eval"
KEY_FLAGS = [
    "--encoder",
    "fastvithd",
    "--resolution",
    "1024",
    "--llm",
    "qwen2-0.5b",
    "--recipe",
    "pt15+it1.1",
]


def _ingest_json(capsys, *argv):
    assert main(["ingest", *argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for r in rows:
        r.pop("files")
    return rows


def test_manifest_ingest_matches_golden_and_is_idempotent(capsys):
    golden = json.loads((FIX / "expected_manifest.json").read_text())
    assert _ingest_json(capsys, "--manifest", str(FIX / "manifest.yaml")) == golden
    first = Store().accuracy()
    assert _ingest_json(capsys, "--manifest", str(FIX / "manifest.yaml")) == golden
    again = Store().accuracy()
    assert len(again) == 2
    assert again.drop(columns="created_at").equals(first.drop(columns="created_at"))


def test_human_summary_says_what_is_missing(capsys):
    assert main(["ingest", "--manifest", str(FIX / "manifest.yaml")]) == 0
    out = capsys.readouterr().out
    assert "1 with Avg-5" in out and "Avg-5 66.60" in out
    assert "no Avg-5 (missing: docvqa, seedbench)" in out and "2 inserted" in out


def test_later_files_add_to_a_stored_row(capsys):
    files = sorted((FIX / "run_a").rglob("*_results.json"))
    assert main(["ingest", str(files[0]), *KEY_FLAGS]) == 0
    assert main(["ingest", str(files[1]), str(files[2]), *KEY_FLAGS]) == 0
    capsys.readouterr()
    (row,) = Store().accuracy().to_dict("records")
    assert row["avg5"] == pytest.approx(66.604) and row["missing"] == []


def test_partial_runs_need_allow_partial(capsys):
    argv = [
        "ingest",
        str(FIX / "partial"),
        "--encoder",
        "fastvithd",
        "--resolution",
        "256",
        "--llm",
        "vicuna-7b",
        "--recipe",
        "llava-1.5",
    ]
    assert main(argv) == 2
    assert (
        "evaluated on a subset (n-samples effective 500 < original 12578)"
        in capsys.readouterr().err
    )
    assert Store().accuracy().empty
    assert main([*argv, "--allow-partial"]) == 0
    assert bool(Store().accuracy()["partial"].iloc[0]) is True


def test_conflicting_duplicates_and_prefer_newest(capsys):
    argv = ["ingest", str(FIX / "conflict"), *KEY_FLAGS]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "conflicting gqa scores" in err
        and "20250310_100000_results.json" in err
    )
    # The second file has no 'date' field: its name's timestamp makes it the newest.
    assert _ingest_json(capsys, *argv[1:], "--prefer", "newest")[0]["scores"] == {"gqa": 61.8}


def test_bad_input_writes_nothing(capsys, tmp_path):
    good = FIX / "run_a"
    bad = tmp_path / "mixed"
    shutil.copytree(good, bad / "good")
    src = (good / "checkpoints__fastvlm-0.5b-stage3" / "20250301_143000_results.json").read_text()
    (bad / "z_results.json").write_text(src.replace("0.6103", "NaN"))
    assert main(["ingest", str(bad), *KEY_FLAGS]) == 2
    err = capsys.readouterr().err
    assert "z_results.json: results.docvqa_val.anls,none: score is nan" in err
    assert Store().accuracy().empty
    assert main(["ingest", str(FIX / "tidy.csv"), str(FIX / "bad" / "conflict.csv")]) == 2
    assert "conflict.csv:2" in capsys.readouterr().err and Store().accuracy().empty


def test_dry_run_and_key_flags_required(capsys, _isolated_store):
    assert main(["ingest", str(FIX / "tidy.csv"), "--dry-run"]) == 0
    assert "would ingest 2 accuracy row(s)" in capsys.readouterr().out
    assert not _isolated_store.exists()
    assert main(["ingest", str(FIX / "run_b")]) == 2
    assert "give --encoder, --resolution, --llm, --recipe" in capsys.readouterr().err


def test_ingest_and_paper_never_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, harness.commands.ingest, harness.accuracy.paper, harness.accuracy.join, "
        "harness.store; harness.accuracy.paper.paper_points(); "
        "assert not {'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
