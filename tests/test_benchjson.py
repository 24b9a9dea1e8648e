"""pytest-benchmark JSON -> compare rows, and the round trip through ``vlm-pareto compare``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.benchjson import benchmark_machine_id, read_benchmark_json, rows_from_benchmark_json
from harness.cli import main
from harness.errors import UserError

MACHINE = {
    "node": "ci-1",
    "machine": "x86_64",
    "processor": "x86_64",
    "python_implementation": "CPython",
    "python_version": "3.11.7",
    "cpu": {"brand_raw": "Some CPU"},
}


def _doc(data_s, name="test_x", machine=MACHINE, save_data=True):
    stats = {
        "min": min(data_s),
        "max": max(data_s),
        "median": sorted(data_s)[len(data_s) // 2],
        "rounds": len(data_s),
        "iterations": 1,
    }
    if save_data:
        stats["data"] = list(data_s)
    return {
        "machine_info": machine,
        "commit_info": {"id": "abc"},
        "datetime": "2026-11-21T00:00:00",
        "version": "5.2.3",
        "benchmarks": [
            {
                "group": None,
                "name": name,
                "fullname": f"t.py::{name}",
                "stats": stats,
                "options": {},
            }
        ],
    }


def test_rows_convert_seconds_to_ms_and_carry_the_machine():
    rows = rows_from_benchmark_json(_doc([0.001, 0.002, 0.003]))
    (r,) = rows
    assert r["samples_ms"] == pytest.approx([1.0, 2.0, 3.0])
    assert (
        r["name"] == "t.py::test_x"
        and r["kind"] == "benchmark"
        and r["backend"] == "pytest-benchmark"
    )
    assert r["machine_id"] == benchmark_machine_id(MACHINE)
    assert r["git_commit"] == "abc"


def test_machine_id_is_stable_and_hardware_specific():
    assert benchmark_machine_id(dict(MACHINE)) == benchmark_machine_id(dict(MACHINE))
    assert benchmark_machine_id(
        {**MACHINE, "cpu": {"brand_raw": "Other CPU"}}
    ) != benchmark_machine_id(MACHINE)


def test_without_saved_data_it_refuses_and_names_the_flag():
    with pytest.raises(UserError, match="--benchmark-save-data"):
        rows_from_benchmark_json(_doc([0.001] * 5, save_data=False))


def test_not_a_benchmark_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("[1, 2]")
    with pytest.raises(UserError, match="not a pytest-benchmark JSON"):
        read_benchmark_json(p)
    with pytest.raises(UserError, match="no such file"):
        read_benchmark_json(tmp_path / "missing.json")


TINY_BENCH = """
def work():
    return sum(i * i for i in range(2000))

def test_work(benchmark):
    benchmark(work)

def test_work_twice(benchmark):
    benchmark(lambda: (work(), work()))
"""


def _pytest_benchmark_session(folder: Path, name: str) -> tuple[Path, Path]:
    """Run a tiny pytest-benchmark session in a subprocess, isolated from this repo's config.

    Writes both a ``--benchmark-json`` file and a stored run (``--benchmark-save``, without
    ``--benchmark-save-data``). pytest-benchmark 5 always puts the raw rounds into the JSON
    file; the stored run keeps only summary statistics. Returns (json file, stored file).
    """
    folder.mkdir(exist_ok=True)
    (folder / "test_tiny_bench.py").write_text(TINY_BENCH)
    (folder / "pytest.ini").write_text("[pytest]\n")
    out, storage = folder / f"{name}.json", folder / "storage"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "pytest_benchmark.plugin",
        "--rootdir",
        str(folder),
        "-c",
        str(folder / "pytest.ini"),
        str(folder / "test_tiny_bench.py"),
        "--benchmark-min-rounds=20",
        "--benchmark-max-time=0.05",
        "--benchmark-warmup=off",
        "--benchmark-disable-gc",
        f"--benchmark-json={out}",
        f"--benchmark-save={name}",
        f"--benchmark-storage={storage}",
    ]
    # No plugin autoloading: the session needs only pytest-benchmark, and loading every
    # installed plugin costs seconds on a busy machine.
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    res = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    (saved,) = storage.glob(f"*/*_{name}.json")
    return out, saved


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """Two real pytest-benchmark sessions of the same code."""
    root = tmp_path_factory.mktemp("bench")
    return _pytest_benchmark_session(root, "first"), _pytest_benchmark_session(root, "second")


def test_round_trip_two_sessions_through_compare(sessions, tmp_path, capsys):
    (a, _), (b, _) = sessions
    rows = read_benchmark_json(a)
    assert {r["name"].split("::")[-1] for r in rows} == {"test_work", "test_work_twice"}
    assert all(len(r["samples_ms"]) >= 20 for r in rows)

    # Two real sessions: a verdict per benchmark, exit 0 or 1 depending on the machine.
    code = main(["compare", "--baseline", str(a), "--candidate", str(b), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == (1 if doc["regressions"] else 0)
    assert len(doc["rows"]) == 2
    for r in doc["rows"]:
        assert r["verdict"] in ("~", "regression", "improvement")
        assert r["n_baseline"] >= 20 and 0.0 <= r["p_value"] <= 1.0

    # A file against itself: no change; against itself slowed by 30%: a regression (exit 1).
    assert main(["compare", "--baseline", str(a), "--candidate", str(a)]) == 0
    assert "0 regression(s)" in capsys.readouterr().out
    slowed = json.loads(a.read_text())
    for bench in slowed["benchmarks"]:
        bench["stats"]["data"] = [x * 1.3 for x in bench["stats"]["data"]]
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(slowed))
    assert (
        main(["compare", "--baseline", str(a), "--candidate", str(slow), "--benchmark-json"]) == 1
    )
    assert "2 regression(s)" in capsys.readouterr().out


def test_saved_session_without_save_data_is_refused_by_compare(sessions, capsys):
    (a, saved), _ = sessions
    assert "data" not in json.loads(saved.read_text())["benchmarks"][0]["stats"]
    assert main(["compare", "--baseline", str(saved), "--candidate", str(a)]) == 2
    err = capsys.readouterr().err
    assert "--benchmark-save-data" in err and err.count("\n") == 1
