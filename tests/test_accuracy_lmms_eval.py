"""lmms-eval results parsing: golden files and every kind of bad input."""

import json
from pathlib import Path

import pytest

from harness.accuracy.lmms_eval import find_results_files, parse_results, read_results
from harness.accuracy.manifest import read_manifest
from harness.errors import UserError

FIX = Path(__file__).parent / "fixtures" / "lmms_eval"
RUN_A = FIX / "run_a" / "checkpoints__fastvlm-0.5b-stage3"


def test_golden_results_file_scores_are_0_to_100():
    rf = read_results(RUN_A / "20250301_101500_results.json")
    got = {s.benchmark: s.value for s in rf.scores}
    assert got == {"gqa": 61.6, "textvqa": 57.4, "pope": 87.4}
    assert not any(s.partial for s in rf.scores)
    assert rf.date.strftime("%Y%m%d_%H%M%S") == "20250301_101500"
    f1 = read_results(RUN_A / "20250301_101500_results.json", pope_metric="f1")
    assert {s.benchmark: s.value for s in f1.scores}["pope"] == 86.98


def test_seedbench_image_and_all_are_separate():
    rf = read_results(RUN_A / "20250302_090000_results.json")
    got = {s.benchmark: s.value for s in rf.scores}
    assert got["seedbench"] == 65.59 and got["seedbench_all"] == 60.01 and got["sqa"] == 61.4


def test_limit_run_is_partial():
    (path,) = find_results_files(FIX / "partial")
    rf = read_results(path)
    assert rf.limit == 500 and all(s.partial and s.n_effective == 500 for s in rf.scores)


def test_directory_walk_finds_every_results_file():
    assert [p.name for p in find_results_files(FIX / "run_a")] == [
        "20250301_101500_results.json",
        "20250301_143000_results.json",
        "20250302_090000_results.json",
    ]


def _doc(**results):
    return {"results": results, "config": {"limit": None}, "n-samples": {}}


@pytest.mark.parametrize(
    "data, message",
    [
        (
            _doc(gqa={"exact_match,none": "0.61"}),
            r"x.json: results.gqa.exact_match,none: score must be a number",
        ),
        (
            _doc(gqa={"exact_match,none": float("nan")}),
            r"results.gqa.exact_match,none: score is nan",
        ),
        (
            _doc(gqa={"exact_match,none": 61.6}),
            r"results.gqa.exact_match,none: score 61.6 is outside 0-1",
        ),
        (
            _doc(mmvet={"gpt_eval_score,none": 130.0}),
            r"results.mmvet.gpt_eval_score,none: score 130.0 is outside 0-100",
        ),
        (_doc(gqa_lite={"exact_match,none": 0.5}), r"results.gqa_lite: unknown benchmark task"),
        (_doc(gqa={"anls,none": 0.5}), r"results.gqa has no 'exact_match,none'"),
        ({"configs": {}}, r"x.json: no 'results' object"),
        ([1, 2], r"x.json: top level must be a JSON object"),
    ],
)
def test_bad_documents_name_file_and_field(data, message):
    with pytest.raises(UserError, match=message):
        parse_results(data, "x.json")


def test_truncated_json_and_unknown_task_skipping(tmp_path):
    with pytest.raises(UserError, match=r"truncated_results.json: invalid JSON at line \d+"):
        read_results(FIX / "bad" / "truncated_results.json")
    rf = parse_results(
        _doc(gqa={"exact_match,none": 0.5}, ok_vqa={"x,none": 1}), "x.json", skip_unknown=True
    )
    assert [s.benchmark for s in rf.scores] == ["gqa"]


def test_json_parsing_never_executes(tmp_path):
    # A results file is data only: a YAML/pickle-style payload stays an inert string.
    p = tmp_path / "evil_results.json"
    p.write_text(
        json.dumps({"results": {"gqa": {"exact_match,none": "__import__('os').system('x')"}}})
    )
    with pytest.raises(UserError, match="must be a number"):
        read_results(p)


def test_manifest_resolves_globs_and_lists(tmp_path):
    entries = read_manifest(FIX / "manifest.yaml")
    assert [e.key.resolution for e in entries] == [1024, 768]
    assert len(entries[0].files) == 3 and entries[0].key.recipe == "pt15+it1.1"
    assert entries[0].key.llm == "qwen2-0.5b" and len(entries[1].files) == 1


def test_manifest_errors(tmp_path):
    with pytest.raises(
        UserError,
        match=r"entries\[1\].files: '../run_c/does_not_exist_results.json' does not exist",
    ):
        read_manifest(FIX / "bad" / "missing_file_manifest.yaml")
    bad = tmp_path / "m.yaml"
    bad.write_text(
        "entries:\n  - files: x.json\n    encoder: fastvithd\n    llm: qwen2-0.5b\n    recipe: llava-1.5\n"
    )
    with pytest.raises(UserError, match=r"entries\[0\].resolution: missing"):
        read_manifest(bad)
    bad.write_text("!!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(UserError, match="invalid YAML"):
        read_manifest(bad)
