"""Bad input is refused before anything is written (issue 12): config numbers, ingest parse
errors, command-line options (one line, exit 2, no usage block; global options anywhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import UserError
from harness.store import Store

ROOT = Path(__file__).resolve().parents[1]


def one_line(stderr: str) -> bool:
    return (
        stderr.startswith("vlm-pareto: error:")
        and stderr.count("\n") == 1
        and "Traceback" not in stderr
    )


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=env,
    )


# -- sweep config values ---------------------------------------------------------------------

BAD_OVERRIDES = [
    ("protocol.min_runs=-1", "protocol.min_runs must be >= 1"),
    ("protocol.max_time_s=-5", "protocol.max_time_s must be > 0"),
    ("protocol.confidence=2", "protocol.confidence must be in"),
    ("protocol.warmup_runs=-3", "protocol.warmup_runs must be >= 0"),
    ("protocol.threads=-2", "protocol.threads must be >= 0"),
    ("protocol.min_time_s=-1", "protocol.min_time_s"),
    ("protocol.warmup_min_s=nan", "protocol.warmup_min_s must be a finite number"),
    ("protocol.max_time_s=inf", "finite"),
    ("backend.prefill_step_size=0", "prefill_step_size"),
    ("backend.mlx_quantize_bits=5", "mlx_quantize_bits"),
    ("backend.compute_units=GPU", "compute_units"),
    ("auto_sample_k=0", "auto_sample_k"),
    ("max_measurements=0", "max_measurements"),
    ("seed=-1", "seed"),
]


@pytest.mark.parametrize(("override", "message"), BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_config_values_are_refused_before_a_run_row(override, message, db_url):
    from harness.sweep.configs import compose_sweep
    from harness.sweep.engine import run_sweep

    cfg = compose_sweep("quick", ["backend=fake", f"db={db_url}", override])
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        run_sweep(cfg, command="t")
    assert not Path(db_url.removeprefix("sqlite:///")).exists()  # not even a store was created


def test_bad_protocol_override_on_the_command_line_creates_nothing(tmp_path):
    db = tmp_path / "s.db"
    Store(str(db))
    before = db.read_bytes()
    r = cli(
        "sweep", "--db", str(db), "--config-name", "quick", "backend=fake", "protocol.min_runs=-1"
    )
    assert r.returncode == 2 and one_line(r.stderr) and "protocol.min_runs" in r.stderr
    assert db.read_bytes() == before
    assert Store(str(db), readonly=True).list_runs() == []


# -- ingest parse errors ---------------------------------------------------------------------


def _results(tmp_path: Path, doc: object, name: str = "x_results.json") -> Path:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


KEY = [
    "--encoder",
    "fastvithd",
    "--resolution",
    "256",
    "--llm",
    "qwen2-0.5b",
    "--recipe",
    "llava-1.5",
]


@pytest.mark.parametrize(
    "content",
    [
        "[" * 100000 + "]" * 100000,  # RecursionError in json
        '{"results": {"gqa": {"exact_match,none": 0.6}}, "date": 1e20}',  # OverflowError in dates
        '{"results": {"gqa": {"exact_match,none": 0.6}}, "date": -1e300}',
        '{"results": {"gqa": {"exact_match,none": 0.6}}, "date": 1e308}',
    ],
    ids=["deep-nesting", "date-1e20", "date-neg", "date-1e308"],
)
def test_ingest_parse_errors_are_one_line(tmp_path, content, capsys, db_url):
    path = _results(tmp_path, content)
    assert main(["ingest", str(path), *KEY]) == 2
    assert one_line(capsys.readouterr().err)
    assert not Path(db_url.removeprefix("sqlite:///")).exists()


@pytest.mark.parametrize(
    "body",
    [
        "encoder,resolution,llm,tiling,recipe,benchmark,score\nfastvithd,256,qwen2-0.5b,none,llava-1.5,gqa,\x0060\n",
        "encoder,resolution,llm,tiling,recipe,benchmark,score\n" + "a" * 200_000 + ",1,2,3,4,5,6\n",
    ],
    ids=["nul-byte", "huge-field"],
)
def test_csv_parse_errors_are_one_line(tmp_path, body, capsys):
    p = tmp_path / "acc.csv"
    p.write_text(body)
    assert main(["ingest", str(p)]) == 2
    assert one_line(capsys.readouterr().err)


def test_deeply_nested_manifest_is_one_line(tmp_path, capsys):
    m = tmp_path / "m.yaml"
    m.write_text("[" * 50000 + "]" * 50000)
    assert main(["ingest", "--manifest", str(m)]) == 2
    assert one_line(capsys.readouterr().err)


# -- command line ----------------------------------------------------------------------------


def test_argparse_errors_are_one_line_without_usage():
    for args in (
        ["ingest", "x.json", "--pope-metric", "bogus"],
        ["choose", "--budget-ms", "5", "--by", "bogus"],
        ["--db", "x.db", "bogus"],
        ["runs", "--no-such-flag"],
        ["choose"],
        ["--db"],
    ):
        r = cli(*args)
        assert r.returncode == 2, args
        assert one_line(r.stderr), (args, r.stderr)
        assert "usage:" not in r.stderr


def test_did_you_mean_for_bad_choices(capsys):
    assert main(["choose", "--budget-ms", "5", "--by", "medain"]) == 2
    assert "did you mean 'median'" in capsys.readouterr().err


@pytest.mark.parametrize("order", ["before", "after"])
def test_global_options_before_or_after_the_command(tmp_path, order, capsys):
    db = tmp_path / "s.db"
    s = Store(str(db))
    s.create_run("c", {}, {"machine_id": "m", "machine": "box"}, run_id="r1")
    g = ["--db", str(db), "--json"]
    argv = [*g, "runs"] if order == "before" else ["runs", *g]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "r1"
    assert main(["runs", f"--db={db}"]) == 0


def test_debug_after_the_command_shows_the_traceback(tmp_path):
    r = cli("runs", "--db", str(tmp_path / "missing.db"), "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr
    assert not (tmp_path / "missing.db").exists()


def test_json_before_a_command_without_json_is_one_line(capsys):
    assert main(["--json", "db", "migrate"]) == 2
    assert one_line(capsys.readouterr().err)
