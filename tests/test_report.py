"""Report output without a browser: files, offline HTML, escaping, omissions, summary, CLI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.report.html import write_report
from harness.report.summary import analyse

EVIL = "<script>alert(1)</script>"


def points(*, tiled: bool = True, evil: bool = False) -> pd.DataFrame:
    """Two encoders x two LLMs x three resolutions; FastViTHD 2x faster at equal accuracy."""
    rows = []
    for enc, slow, penalty in (("fastvithd", 1.0, 0.0), ("fastvit", 2.0, 0.0)):
        for llm, base in (("qwen2-0.5b", 50.0), ("qwen2-7b", 58.0)):
            for i, res in enumerate((256, 512, 1024)):
                t = slow * (100.0 if llm == "qwen2-0.5b" else 300.0) * 2**i
                rows.append(
                    {
                        "encoder": enc,
                        "resolution": res,
                        "llm": llm,
                        "tiling": "none",
                        "recipe": "llava-1.5",
                        "tokens": (res // 64) ** 2,
                        "encoder_ms": 0.3 * t,
                        "projector_ms": 1.0,
                        "prefill_ms": 0.7 * t - 1,
                        "ttft_ms": t,
                        "ttft_ci_low_ms": 0.95 * t,
                        "ttft_ci_high_ms": 1.05 * t,
                        "ttft_p90_ms": 1.1 * t,
                        "avg5": base + 3 * i - penalty,
                        "latency_source": "measured",
                        "accuracy_source": "ingested",
                        "estimated": llm == "qwen2-7b",
                        "machine": "test-box",
                        "backend": "torch-cpu",
                        "run_id": "r1",
                    }
                )
    if tiled:
        rows.append(
            {
                **rows[2],
                "resolution": 2048,
                "tiling": "2x2+overview",
                "tokens": 1280,
                "ttft_ms": 2000.0,
                "encoder_ms": 1500.0,
                "prefill_ms": 499.0,
                "avg5": 57.0,
            }
        )
    if evil:
        rows.append(
            {**rows[0], "encoder": EVIL, "machine": "<img src=x onerror=alert(2)>", "llm": "a|b"}
        )
    return pd.DataFrame(rows)


def test_writes_every_file_offline(tmp_path):
    paths = write_report(points(), tmp_path / "r", "fixture", static=False)
    for p in (paths.index_html, paths.summary_md, paths.points_csv, paths.plotly_js):
        assert p.exists() and p.stat().st_size > 0
    page = paths.index_html.read_text()
    # plotly.js beside the page, never a CDN.
    assert '<script src="plotly.min.js"></script>' in page
    assert "cdn.plot.ly" not in page and not re.search(r"<script[^>]+src=\"https?:", page)
    assert (
        paths.plotly_js.read_text().startswith("/**")
        or "Plotly" in paths.plotly_js.read_text()[:5000]
    )
    assert set(paths.figures) == {
        "accuracy_vs_ttft_1",
        "breakdown_1",
        "tiling_1",
        "scaling_1",
        "tokens_1",
    }
    assert page.count("Plotly.newPlot(") == 5
    # Every figure states the machine and backend of its latencies on its face.
    assert page.count("latencies: measured here on test-box (torch-cpu)") == 5
    csv = pd.read_csv(paths.points_csv)
    assert len(csv) == 13 and {"ttft_ms", "avg5", "latency_source", "machine"} <= set(csv.columns)
    assert "static images not requested" in paths.notes


def test_inline_js_single_file(tmp_path):
    paths = write_report(
        points(tiled=False), tmp_path / "r", "inline", static=False, inline_js=True
    )
    assert paths.plotly_js is None and not (tmp_path / "r" / "plotly.min.js").exists()
    page = paths.index_html.read_text()
    assert len(page) > 3_000_000 and "<script src=" not in page


def test_user_names_are_escaped(tmp_path):
    paths = write_report(points(evil=True), tmp_path / "r", f"title {EVIL}", static=False)
    page = paths.index_html.read_text()
    # No raw tag from user text anywhere in the page: HTML parts are entity-escaped and the
    # figure JSON writes '<' as \u003c.
    assert EVIL not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\\u003cscript\\u003e" not in page.replace(
        "\\u0026lt;", ""
    )  # plotly text is entity-escaped first
    summary = paths.summary_md.read_text()
    assert EVIL not in summary and "&lt;script&gt;" in summary and "a\\|b" in summary


def test_omitted_figures_are_noted(tmp_path):
    df = points(tiled=False).drop(columns=["encoder_ms", "prefill_ms", "projector_ms"])
    df["avg5"] = np.nan
    paths = write_report(df, tmp_path / "r", "latency only", static=False)
    assert paths.figures == ["tokens_1"]  # TTFT vs tokens needs only TTFT and token counts
    joined = " ".join(paths.notes)
    assert "accuracy vs TTFT omitted" in joined
    assert "latency breakdown omitted" in joined
    assert "static vs tiled omitted" in joined
    assert "encoder scaling omitted" in joined
    assert "accuracy vs TTFT omitted" in paths.index_html.read_text()


def test_mixed_origins_are_never_on_one_axis(tmp_path):
    measured = points(tiled=False)
    paper = measured.assign(
        latency_source="paper",
        machine="Apple M1 Max (paper)",
        backend="coreml+mlx",
        ttft_ms=measured["ttft_ms"] / 10,
    )
    analysis = analyse(pd.concat([measured, paper]))
    assert len(analysis.contexts) == 2
    for ca in analysis.contexts:
        assert ca.context.rows["latency_source"].nunique() == 1
    paths = write_report(pd.concat([measured, paper]), tmp_path / "r", "mixed", static=False)
    assert len([f for f in paths.figures if f.startswith("accuracy_vs_ttft")]) == 2


def test_summary_has_frontier_and_comparison(tmp_path):
    paths = write_report(points(tiled=False), tmp_path / "r", "fixture", static=False)
    md = paths.summary_md.read_text()
    assert "| fastvithd @ 256 px + qwen2-0.5b | 100.0 (95.0-105.0) | 50.0 | measured here |" in md
    assert "estimated (layer-sampled)" in md
    # FastViTHD is exactly 2x faster than FastViT at every accuracy level of the fixture.
    assert "| fastvithd vs fastvit | 2.00x (2.00x) |" in md


def test_paper_comparison_reproduces_table_4_claim():
    from harness.points import load_points

    res = load_points(source="paper", recipe="llava-1.5")
    analysis = analyse(res.points)
    (ca,) = analysis.contexts
    comp = {c.other: c.result for c in ca.comparisons}
    # FastViTHD reaches ViT-L/14's Avg-5 (61.26, 1297 ms) at 387 ms (Table 6 R19 / R31): 3.35x.
    assert comp["vit-l-14"].speedup_best == pytest.approx(1297 / 387)


@pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium not installed"
)
@pytest.mark.browser
def test_static_images_exported(tmp_path):
    df = points(tiled=False)
    df = df[df["encoder"] == "fastvithd"]
    paths = write_report(df, tmp_path / "r", "static", static=True)
    names = sorted(p.name for p in paths.images)
    assert names == sorted(f"{k}.{e}" for k in paths.figures for e in ("png", "svg"))
    png = next(p for p in paths.images if p.suffix == ".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    svg = next(p for p in paths.images if p.suffix == ".svg").read_text()
    assert "latencies: measured here on test-box" in svg


def test_cli_report_from_paper(tmp_path, capsys):
    out = tmp_path / "paper"
    assert main(["report", "--source", "paper", "--out", str(out), "--no-static"]) == 0
    text = capsys.readouterr().out
    assert f"report: {out / 'index.html'}" in text
    assert (
        (out / "index.html").exists()
        and (out / "summary.md").exists()
        and (out / "points.csv").exists()
    )
    assert "fastvithd vs vit-l-14" in (out / "summary.md").read_text()


def test_cli_report_from_csv_and_bad_inputs(tmp_path, capsys):
    lat = tmp_path / "lat.csv"
    lat.write_text(
        "encoder,resolution,llm,tiling,encoder_ms,prefill_ms,machine,backend\n"
        "fastvithd,512,qwen2-0.5b,none,40,90,phone,coreml\n"
        "fastvithd,1024,qwen2-0.5b,none,200,300,phone,coreml\n"
    )
    out = tmp_path / "imp"
    assert (
        main(
            [
                "report",
                "--latency-csv",
                str(lat),
                "--out",
                str(out),
                "--no-static",
                "--recipe",
                "llava-1.5",
            ]
        )
        == 0
    )
    capsys.readouterr()
    page = (out / "index.html").read_text()
    assert "imported on phone (coreml)" in page
    assert main(["report", "--out", str(tmp_path / "x")]) == 2  # empty per-test store
    assert "no runs" in capsys.readouterr().err
    assert (
        main(["report", "--source", "paper", "--benchmark", "avg6", "--out", str(tmp_path / "y")])
        == 2
    )
    assert "did you mean 'avg5'" in capsys.readouterr().err
    assert main(["report", "--run", "nope", "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err  # readers never create the store: there is none yet here
    assert "no run 'nope'" in err or "no results store" in err


def test_store_points_with_compose_ttft(tmp_path, db_url):
    pytest.importorskip("harness.ttft", reason="harness/ttft.py not written yet")
    from harness.points import load_points
    from harness.protocol import Measurement
    from harness.stats import summarize
    from harness.store import MeasurementKey, Store

    store = Store(db_url)
    run = store.create_run("test", {}, {"machine_id": "m1"})

    def m(ms: float) -> Measurement:
        samples = [ms + 0.01 * j for j in range(20)]
        return Measurement(
            samples_ms=samples, stats=summarize(samples), protocol="quick", threads=1
        )

    for res, tok in ((256, 16), (512, 64)):
        store.add_measurement(
            run,
            MeasurementKey("encoder", "fastvithd", res, tokens=tok, protocol="quick"),
            m(res / 10),
        )
        store.add_measurement(
            run,
            MeasurementKey("prefill", "qwen2-0.5b", tokens=tok, prompt_tokens=32, protocol="quick"),
            m(tok),
        )
    res = load_points(db=db_url, run_ids=[run], recipe="llava-1.5")
    assert len(res.points) == 2
    assert (res.points["latency_source"] == "measured").all()
    assert res.points["ttft_ms"].notna().all()


def test_report_cli_json(tmp_path, capsys):
    import json

    from harness.cli import main

    assert (
        main(["report", "--source", "paper", "--out", str(tmp_path / "r"), "--no-static", "--json"])
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["index_html"].endswith("index.html") and doc["points"]
    assert all("ttft_ms" in p and "encoder" in p for p in doc["points"])


def test_origin_label_says_predicted_once():
    from harness.report.summary import origin_label

    assert origin_label("predicted", "predicted for m1-max-ane-mlx", "cost model") == (
        "predicted for m1-max-ane-mlx (cost model)"
    )
    assert origin_label("measured", "host-a", "torch-cpu") == "measured here on host-a (torch-cpu)"


def test_an_unknown_reference_encoder_is_a_did_you_mean(tmp_path, capsys):
    from harness.cli import main

    args = ["report", "--source", "paper", "--out", str(tmp_path / "r")]
    assert main([*args, "--reference-encoder", "fastvithdd"]) == 2
    assert "did you mean 'fastvithd'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
