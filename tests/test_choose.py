"""choose: known answers on a small fixture, the CLI's exit codes, text and JSON output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness.choose import Limits, choose
from harness.cli import main
from harness.errors import UserError


def fixture() -> pd.DataFrame:
    """Five configurations; CI highs chosen so that median and ci-high budgets disagree."""
    rows = [
        # encoder, res, llm, tokens, ttft, ci_high, p90, avg5, enc_params, llm_b, mem
        ("fastvithd", 256, "qwen2-0.5b", 16, 100.0, 110.0, 108.0, 55.0, 125.1, 0.5, 1.0e9),
        ("fastvithd", 512, "qwen2-0.5b", 64, 180.0, 230.0, 210.0, 60.0, 125.1, 0.5, 1.5e9),
        ("fastvithd", 512, "qwen2-1.5b", 64, 195.0, 205.0, 200.0, 62.0, 125.1, 1.5, 3.5e9),
        ("fastvit", 768, "qwen2-1.5b", 576, 240.0, 250.0, 248.0, 63.0, 35.7, 1.5, 4.0e9),
        ("fastvithd", 1024, "qwen2-7b", 256, 500.0, 520.0, 515.0, 66.0, 125.1, 7.0, 16e9),
        (
            "vit-l-14",
            336,
            "qwen2-7b",
            576,
            90.0,
            95.0,
            94.0,
            np.nan,
            304.0,
            7.0,
            15e9,
        ),  # no accuracy
    ]
    df = pd.DataFrame(
        rows,
        columns=[
            "encoder",
            "resolution",
            "llm",
            "tokens",
            "ttft_ms",
            "ttft_ci_high_ms",
            "ttft_p90_ms",
            "avg5",
            "encoder_params_m",
            "llm_params_b",
            "peak_mem_bytes",
        ],
    )
    df["tiling"] = "none"
    df["recipe"] = "llava-1.5"
    df["ttft_ci_low_ms"] = df["ttft_ms"] * 0.9
    df["encoder_ms"] = df["ttft_ms"] * 0.4
    df["projector_ms"] = 1.0
    df["prefill_ms"] = df["ttft_ms"] * 0.6 - 1.0
    df["gqa"] = [50.0, 61.0, 59.0, 58.0, 64.0, 70.0]
    df["latency_source"] = "measured"
    df["machine"] = "box"
    return df


def test_budget_checked_against_ci_high_by_default():
    r = choose(fixture(), 220)
    # fastvithd-512-1.5b (ci-high 205) fits; fastvithd-512-0.5b (230) does not, though its median 180 would.
    assert (r.choice["encoder"], r.choice["resolution"], r.choice["llm"]) == (
        "fastvithd",
        512,
        "qwen2-1.5b",
    )
    assert r.choice["basis"] == "ttft_ci_high_ms" and r.by == "ci-high"
    assert [a["resolution"] for a in r.alternatives] == [256]
    # The next frontier point is fastvit-768 (ci-high 250): 30 ms more buys +1 Avg-5.
    assert r.next_step.option["encoder"] == "fastvit"
    assert r.next_step.extra_ms == pytest.approx(30.0)
    assert r.next_step.accuracy_gain == pytest.approx(1.0)
    assert [f["ttft_ci_high_ms"] for f in r.frontier] == [110.0, 205.0, 250.0, 520.0]


def test_by_median_and_p90():
    # Median 240 fits a 240 ms budget exactly (<=), 239 does not.
    assert choose(fixture(), 240, by="median").choice["encoder"] == "fastvit"
    assert choose(fixture(), 239, by="median").choice["llm"] == "qwen2-1.5b"
    r = choose(fixture(), 185, by="median")
    assert (r.choice["resolution"], r.choice["llm"]) == (512, "qwen2-0.5b")
    r = choose(fixture(), 205, by="p90")
    assert (r.choice["resolution"], r.choice["llm"], r.choice["basis"]) == (
        512,
        "qwen2-1.5b",
        "ttft_p90_ms",
    )


def test_fallback_to_p90_then_median_is_noted():
    df = fixture()
    df.loc[2, "ttft_ci_high_ms"] = np.nan
    df.loc[1, ["ttft_ci_high_ms", "ttft_p90_ms"]] = np.nan
    r = choose(df, 199)
    assert (
        r.choice["basis"] == "ttft_ms"
        and r.choice["resolution"] == 512
        and r.choice["llm"] == "qwen2-0.5b"
    )
    assert any("ttft_p90_ms was compared" in n for n in r.notes)
    assert any("ttft_ms was compared" in n for n in r.notes)


def test_limits_and_other_benchmark():
    df = fixture()
    assert choose(df, 1000, limits=Limits(max_llm_params_b=2)).choice["encoder"] == "fastvit"
    assert choose(df, 1000, limits=Limits(max_tokens=256)).choice["resolution"] == 1024
    assert choose(df, 1000, limits=Limits(max_encoder_params_m=100)).choice["encoder"] == "fastvit"
    assert choose(df, 1000, limits=Limits(max_memory_gb=3.9)).choice["resolution"] == 512
    r = choose(df, 1000, benchmark="gqa")
    # vit-l-14 has the best GQA but no Avg-5; with --benchmark gqa it wins.
    assert r.choice["encoder"] == "vit-l-14" and r.choice["accuracy"] == 70.0


def test_nothing_fits_reports_fastest():
    r = choose(fixture(), 50)
    assert r.choice is None and r.alternatives == [] and r.next_step is None
    assert r.fastest["resolution"] == 256 and r.fastest["budget_ttft_ms"] == 110.0


@pytest.mark.parametrize("budget", [0, -5, "abc", float("nan"), float("inf")])
def test_bad_budget(budget):
    with pytest.raises(UserError, match="budget"):
        choose(fixture(), budget)


def test_bad_inputs():
    with pytest.raises(UserError, match="did you mean 'textvqa'"):
        choose(fixture(), 100, benchmark="textvq")
    with pytest.raises(UserError, match="no points"):
        choose(fixture().iloc[0:0], 100)
    with pytest.raises(UserError, match="no point has docvqa"):
        choose(fixture().assign(docvqa=np.nan), 100, benchmark="docvqa")
    with pytest.raises(UserError, match="by value"):
        choose(fixture(), 100, by="mean")
    with pytest.raises(UserError, match="peak_mem_bytes"):
        choose(fixture().drop(columns="peak_mem_bytes"), 100, limits=Limits(max_memory_gb=1))
    for bad in (Limits(max_encoder_params_m=float("nan")), Limits(max_llm_params_b=-1.0)):
        with pytest.raises(UserError, match="must be a positive number"):
            choose(fixture(), 100, limits=bad)


def write_csvs(tmp_path):
    lat = tmp_path / "lat.csv"
    lat.write_text(
        "encoder,resolution,llm,tiling,encoder_ms,prefill_ms,machine,backend\n"
        "FastViTHD,256,qwen2-0.5b,none,10,40,phone,coreml\n"
        "FastViTHD,512,qwen2-0.5b,none,40,90,phone,coreml\n"
        "FastViTHD,1024,qwen2-0.5b,none,200,300,phone,coreml\n"
    )
    acc = tmp_path / "acc.csv"
    lines = ["encoder,resolution,llm,tiling,recipe,benchmark,score"]
    for res, base in ((256, 50), (512, 60), (1024, 70)):
        for b in ("gqa", "textvqa", "pope", "docvqa", "seedbench"):
            lines.append(f"fastvithd,{res},qwen2-0.5b,none,llava-1.5,{b},{base}")
    acc.write_text("\n".join(lines) + "\n")
    return lat, acc


def test_cli_on_imported_csvs(tmp_path, capsys):
    lat, acc = write_csvs(tmp_path)
    args = ["choose", "--latency-csv", str(lat), "--accuracy", str(acc), "--no-paper-accuracy"]
    assert main([*args, "--budget-ms", "200"]) == 0
    out = capsys.readouterr().out
    assert "Choice: fastvithd @ 512 px + qwen2-0.5b" in out
    assert "no ttft_ci_high_ms" in out  # imported rows have no CI: the fallback is stated
    assert "+300.0 ms (budget 500.0 ms)" in out  # 1024 px needs 500 ms
    assert main([*args, "--budget-ms", "600", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"choice", "alternatives", "frontier"}
    assert data["choice"]["resolution"] == 1024 and data["choice"]["accuracy"] == 70.0
    assert [f["resolution"] for f in data["frontier"]] == [256, 512, 1024]
    assert main([*args, "--budget-ms", "20"]) == 1
    assert "Fastest option: fastvithd @ 256 px" in capsys.readouterr().out


def test_cli_bad_input_exits_2(tmp_path, capsys):
    lat, acc = write_csvs(tmp_path)
    assert (
        main(["choose", "--latency-csv", str(lat), "--accuracy", str(acc), "--budget-ms", "ten"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("vlm-pareto: error: budget") and err.count("\n") == 1
    assert (
        main(
            [
                "choose",
                "--latency-csv",
                str(lat),
                "--accuracy",
                str(acc),
                "--budget-ms",
                "100",
                "--benchmark",
                "nope",
            ]
        )
        == 2
    )
    assert "unknown benchmark" in capsys.readouterr().err
    # Latency with no accuracy anywhere (no files, paper borrowing off): one-line error.
    assert (
        main(["choose", "--latency-csv", str(lat), "--no-paper-accuracy", "--budget-ms", "100"])
        == 2
    )
    assert "accuracy" in capsys.readouterr().err
    # The per-test store is empty.
    assert main(["choose", "--budget-ms", "100"]) == 2
    assert "no runs" in capsys.readouterr().err


def test_cli_on_paper_source(capsys):
    assert (
        main(
            [
                "choose",
                "--source",
                "paper",
                "--budget-ms",
                "300",
                "--recipe",
                "pt15+it1.1",
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    # Table 6: within 300 ms the best pt15+it1.1 model is FastViTHD-1024 + Qwen2-1.5B (R11, 233 ms, Avg-5 71.46).
    c = data["choice"]
    assert (c["encoder"], c["resolution"], c["llm"], c["ttft_ms"]) == (
        "fastvithd",
        1024,
        "qwen2-1.5b",
        233.0,
    )
    assert c["accuracy"] == pytest.approx(71.46)


def test_choose_and_report_do_not_import_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from harness.cli import main\n"
        f"main(['choose', '--source', 'paper', '--budget-ms', '300'])\n"
        f"main(['report', '--source', 'paper', '--no-static', '--out', {str(tmp_path / 'r')!r}])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_partial_accuracy_never_wins():
    import pandas as pd

    from harness.choose import choose

    pts = pd.DataFrame(
        [
            dict(
                encoder="a",
                resolution=256,
                llm="l",
                tiling="none",
                recipe="r",
                ttft_ms=100.0,
                ttft_ci_high_ms=110.0,
                avg5=70.0,
                accuracy_partial=True,
            ),
            dict(
                encoder="b",
                resolution=256,
                llm="l",
                tiling="none",
                recipe="r",
                ttft_ms=100.0,
                ttft_ci_high_ms=110.0,
                avg5=60.0,
                accuracy_partial=False,
            ),
        ]
    )
    r = choose(pts, 200.0)
    assert r.choice["encoder"] == "b"
    assert any("partial" in n for n in r.notes)
