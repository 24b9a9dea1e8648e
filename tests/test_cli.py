"""The command line: help everywhere, one-line errors with exit 2, --json output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_top_level_help_lists_every_command():
    r = run("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_help(name):
    r = run(name, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower() or name in r.stdout


def test_unknown_command_suggests_and_exits_2():
    r = run("reprot")
    assert r.returncode == 2
    assert "did you mean 'report'" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_corrupt_store_one_line_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    r = run("--db", str(bad), "runs")
    assert r.returncode == 2
    assert r.stderr.startswith("vlm-pareto: error:") and r.stderr.count("\n") == 1
    assert bad.read_bytes() == b"garbage" * 1000


def test_debug_shows_traceback(tmp_path):
    r = run("--debug", "--db", str(tmp_path / "missing.db"), "runs")
    assert r.returncode == 2 and "Traceback" in r.stderr  # still the user-error exit code


def test_runs_json_and_export(db_url, tmp_path, capsys):
    from harness.protocol import Measurement
    from harness.stats import summarize
    from harness.store import MeasurementKey, Store

    s = Store(db_url)
    rid = s.create_run("t", {}, {"machine_id": "m", "machine": "test box"})
    s.add_measurement(
        rid,
        MeasurementKey("encoder", "fastvithd", resolution=256, tokens=16),
        Measurement([1.0, 2.0], summarize([1.0, 2.0]), "quick", 2),
    )
    assert main(["--db", db_url, "runs", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["id"] == rid and out[0]["measurements"] == {"ok": 1, "skipped": 0, "failed": 0}
    assert main(["--db", db_url, "runs", "--export", str(tmp_path / "m.csv")]) == 0
    assert (tmp_path / "m.csv").read_text().startswith("id,run_id,kind")
    assert main(["--db", db_url, "runs", "--run", "nope"]) == 2


def test_python_m_harness_and_console_script_agree():
    # the console script installed beside this interpreter (a venv need not be on PATH)
    script = Path(sys.executable).parent / "vlm-pareto"
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("vlm-pareto ")
