"""Progress off a terminal: one line per finished measurement (sweep, search, nightly)."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from harness.progress import Progress, describe_row, fmt_duration, fmt_ms

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(sweep|search) \[ *(\d+)/(\d+)\] (.+?): (.+); (\d+) left(, eta (\S+))?$")


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # stdout and stderr are pipes: not a terminal, so the engine prints lines, not the bar
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def progress_lines(stderr: str, title: str = "sweep") -> list[re.Match]:
    return [m for line in stderr.splitlines() if (m := LINE.match(line)) and m.group(1) == title]


def test_piped_quick_sweep_prints_one_line_per_measurement(db_url):
    """The real quick sweep (torch, tiny LLM) through a pipe: every measurement is a line."""
    r = cli(
        "--db",
        db_url,
        "sweep",
        "--config-name",
        "quick",
        "encoders.fastvithd.resolutions=[128]",
        "~encoders.fastvit",
        "~llms.tiny_llama",
        "report=false",
    )
    assert r.returncode == 0, r.stderr
    lines = progress_lines(r.stderr)
    # 1 encoder + 1 prefill + 1 projector
    assert [int(m.group(2)) for m in lines] == [1, 2, 3], r.stderr
    assert {int(m.group(3)) for m in lines} == {3}
    assert [m.group(4) for m in lines] == [
        "fastvithd @ 128 none",
        "tiny-qwen2 prefill 4+16 tok",
        "projector 3072->tiny-qwen2 4 tok",
    ]
    for m in lines:  # median with its CI and a unit
        assert re.match(r"^[\d.]+ m?s \(95% CI [\d.]+-[\d.]+ m?s\)", m.group(5)), m.group(0)
    assert [int(m.group(6)) for m in lines] == [2, 1, 0]
    assert lines[0].group(8) and lines[1].group(8), (
        "an estimate of the time left while work is left"
    )
    assert lines[2].group(7) is None  # nothing left: no estimate
    # the medians printed are the stored ones
    from harness.store import Store

    rows = Store(db_url).measurement_rows(status="ok")
    enc = next(r for r in rows if r["kind"] == "encoder")
    assert lines[0].group(5).startswith(fmt_ms(enc["median_ms"]))


def test_resumed_sweep_says_reused_and_progress_false_is_silent(db_url):
    first = cli(
        "--db",
        db_url,
        "sweep",
        "--config-name",
        "quick",
        "backend=fake",
        "report=false",
        "json=true",
    )
    assert first.returncode == 0, first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    lines = progress_lines(first.stderr)
    assert len(lines) == 13 and lines[-1].group(6) == "0"
    again = cli(
        "--db",
        db_url,
        "sweep",
        "--config-name",
        "quick",
        "backend=fake",
        "report=false",
        f"run_id={run_id}",
    )
    assert again.returncode == 0, again.stderr
    relines = progress_lines(again.stderr)
    assert len(relines) == 13 and all(m.group(5).endswith(", reused") for m in relines)
    quiet = cli(
        "--db",
        db_url,
        "sweep",
        "--config-name",
        "quick",
        "backend=fake",
        "report=false",
        "progress=false",
    )
    assert quiet.returncode == 0, quiet.stderr
    assert progress_lines(quiet.stderr) == [] and "sweep [" not in quiet.stderr


def test_search_prints_measurement_and_trial_lines(db_url):
    r = cli(
        "--db",
        db_url,
        "search",
        "--encoders",
        "fastvithd",
        "--llms",
        "qwen2-0.5b",
        "--backend",
        "fake",
        "--resolution-range",
        "256:512",
        "--trials",
        "2",
    )
    assert r.returncode in (0, 1), r.stderr
    meas = [ln for ln in r.stderr.splitlines() if ln.startswith("search [trial ")]
    trials = [ln for ln in r.stderr.splitlines() if ln.startswith("trial ")]
    assert len(trials) >= 2
    # the first trial measures its encoder, prefill and projector (projector may come with the prefill)
    assert any(
        re.match(r"search \[trial 1/2\] fastvithd @ \d+ none: [\d.]+ m?s \(95% CI", ln)
        for ln in meas
    ), r.stderr
    assert any("trials left, eta" in ln for ln in meas)
    quiet = cli(
        "--db",
        db_url,
        "search",
        "--encoders",
        "fastvithd",
        "--llms",
        "qwen2-0.5b",
        "--backend",
        "fake",
        "--resolution-range",
        "256:512",
        "--trials",
        "1",
        "--quiet",
        "--study-name",
        "q",
    )
    assert "search [" not in quiet.stderr and "trial " not in quiet.stderr


def test_nightly_measuring_prints_lines(db_url, capsys):
    """Nightly measures through run_preset(progress=True); captured stderr is not a terminal."""
    from harness.sweep.preset import run_preset

    run_preset("quick", "quick", rounds=2, db=db_url, overrides=["backend=fake"], progress=True)
    lines = progress_lines(capsys.readouterr().err)
    assert len(lines) == 26 and lines[-1].group(2) == "26" and lines[-1].group(6) == "0"
    assert lines[0].group(4).endswith("(round 1/2)") and lines[-1].group(4).endswith("(round 2/2)")
    run_preset("quick", "quick", rounds=1, db=db_url, overrides=["backend=fake"], progress=False)
    assert progress_lines(capsys.readouterr().err) == []
    from harness.commands.nightly import add_parser

    parser = add_parser(argparse.ArgumentParser().add_subparsers())
    assert parser.parse_args(["--quiet"]).quiet and not parser.parse_args([]).quiet


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_draws_and_no_lines_are_printed():
    stream = _Tty()
    counts = {"measured": 0, "reused": 0, "skipped": 0, "failed": 0}
    p = Progress(2, True, counts=counts, stream=stream)
    assert p.mode == "bar"
    for i in range(2):
        p.step(f"point {i}")
        counts["measured"] += 1
        p.advance({"status": "ok", "median_ms": 5.0, "ci_low_ms": 4.0, "ci_high_ms": 6.0})
    p.close()
    out = stream.getvalue()
    assert "2/2" in out and "sweep [" not in out
    assert Progress(2, False, stream=_Tty()).mode == "off"
    assert Progress(2, True, stream=io.StringIO()).mode == "lines"


def test_line_format_and_estimate():
    stream = io.StringIO()
    counts = {"measured": 0, "reused": 0, "skipped": 0, "failed": 0}
    p = Progress(3, True, counts=counts, stream=stream)
    p.step("a")
    counts["skipped"] += 1
    p.advance({"status": "skipped", "reason": "Core ML prediction needs macOS\nmore"})
    p.step("b")
    counts["reused"] += 1
    p.advance({"status": "ok", "median_ms": 1234.5, "ci_low_ms": 1200.0, "ci_high_ms": 1300.0})
    first, second = stream.getvalue().splitlines()
    assert first.startswith("sweep [1/3] a: skipped: Core ML prediction needs macOS; 2 left, eta ")
    assert (
        second
        == "sweep [2/3] b: 1.23 s (95% CI 1.20-1.30 s), reused; 1 left, eta "
        + fmt_duration(p.eta_s() or 0)
    )
    assert (
        describe_row(
            {
                "status": "ok",
                "median_ms": 3.2,
                "ci_low_ms": 3.1,
                "ci_high_ms": 3.3,
                "estimated": True,
            }
        )
        == "3.20 ms (95% CI 3.10-3.30 ms), estimated"
    )
    assert (
        fmt_duration(59) == "59s" and fmt_duration(190) == "3m10s" and fmt_duration(3900) == "1h05m"
    )
