"""The main job's report gets its PNG/SVG figures from a real chromium; without one, one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.report.html import CHROMIUM, NO_BROWSER, find_browser

ROOT = Path(__file__).resolve().parents[1]


def sweep(db_url: str, out: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    # the main job (the default preset, paper_table4) with canned latencies: the report path is the real one
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "--db",
            db_url,
            "sweep",
            "backend=fake",
            f"report_dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


@pytest.mark.browser
@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"
)
def test_main_job_report_has_pngs_with_chromium(db_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "BROWSER_PATH"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "--db",
            db_url,
            "sweep",
            "backend=fake",
            f"report_dir={tmp_path / 'r'}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr
    assert "static images skipped" not in r.stderr
    pngs = sorted((tmp_path / "r").glob("*.png"))
    assert any(p.name.startswith("accuracy") for p in pngs), [p.name for p in pngs]
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert len(list((tmp_path / "r").glob("*.svg"))) == len(pngs)
    assert find_browser() == (CHROMIUM, "")


def test_without_a_browser_one_line_says_what_to_install_and_html_is_written(db_url, tmp_path):
    r = sweep(db_url, tmp_path / "r", env={"BROWSER_PATH": str(tmp_path / "no-such-browser")})
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if "static images" in ln]
    assert notes == [
        f"note: static images skipped: BROWSER_PATH='{tmp_path / 'no-such-browser'}' is not an "
        "executable; point it at Chrome/Chromium or unset it (index.html is written)"
    ]
    assert (tmp_path / "r" / "index.html").stat().st_size > 0
    assert not list((tmp_path / "r").glob("*.png"))
    assert "plotly_get_chrome)" not in r.stderr  # kaleido's own message never reaches the user
    assert "apt-get install chromium" in NO_BROWSER and "BROWSER_PATH" in NO_BROWSER
