"""The predict package: cost model on meta tensors, profiles, calibration, validation, claims."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.errors import UserError
from harness.predict import costmodel
from harness.predict.calibrate import KnownRow, fit_rows
from harness.predict.costmodel import Cost
from harness.predict.profiles import get_profile, parse_profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_PARETO_CACHE", str(tmp_path / "cache"))
    (tmp_path / "devices").mkdir(exist_ok=True)
    monkeypatch.setenv("VLM_PARETO_DEVICES", str(tmp_path / "devices"))


# ------------------------------------------------------------------ cost model


def test_counts_dense_depthwise_and_attention_flops_on_meta_tensors():
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.fc = nn.Linear(8, 16)

        def forward(self, x):
            y = self.dw(self.conv(x)).flatten(2).transpose(1, 2)  # 1 x 16 x 8
            y = self.fc(y)  # 1 x 16 x 16
            return torch.bmm(y, y.transpose(1, 2))  # attention-like: 16 x 16 x 16

    with torch.device("meta"):
        m = Tiny()
        cost, out = costmodel.count_call(m, torch.empty(1, 3, 4, 4))
    assert out.device.type == "meta"
    assert cost.dense_flops == 2 * (8 * 16 * 27) + 2 * 16 * 8 * 16  # conv + linear
    assert cost.dw_flops == 2 * 8 * 16 * 9
    assert cost.attn_flops == 2 * 16 * 16 * 16
    assert cost.ops >= 4 and cost.act_elems > 0


def test_shipped_table_matches_a_fresh_meta_count():
    fresh = costmodel.count_encoder_tile("fastvit", 256)
    shipped = costmodel.shipped_table()["encoders"]["fastvit"]["256"]
    assert fresh.to_dict() == pytest.approx(shipped)
    # REFERENCE.md: FastViTHD 29.6 GFLOP at 256 (matmul/conv/attention)
    fhd = Cost.from_dict(costmodel.shipped_table()["encoders"]["fastvithd"]["256"])
    assert fhd.gflops == pytest.approx(29.6, rel=0.01)


def test_llm_polynomial_is_exact_at_other_token_counts():
    from harness.llms.zoo import tiny_spec

    spec = tiny_spec("qwen2")
    poly = costmodel.count_llm_poly(spec)  # type: ignore[arg-type]
    direct = costmodel._llm_forward_cost(spec, spec.layers, 48)
    t = 48.0
    for f in ("dense_flops", "attn_flops", "weight_elems"):
        c = poly[f]
        assert c[0] + c[1] * t + c[2] * t * t == pytest.approx(getattr(direct, f), rel=1e-6)


def test_custom_encoder_costs_are_cached_on_disk_and_versioned(tmp_path, monkeypatch):
    from harness.encoders.custom import register_custom_encoder

    spec = register_custom_encoder(ROOT / "examples" / "my_encoder" / "encoder" / "my_encoder.yaml")
    c1 = costmodel.encoder_cost(spec.name, 256)
    path = costmodel.cache_path()
    data = json.loads(path.read_text())
    assert data["version"] == costmodel.COST_VERSION and data["encoders"]
    monkeypatch.setattr(
        costmodel,
        "count_encoder_tile",
        lambda *a: (_ for _ in ()).throw(AssertionError("recounted")),
    )
    assert costmodel.encoder_cost(spec.name, 256) == c1  # from the cache
    # tiling: 5 images in one batch -> 5x the FLOPs, weights once
    c5 = costmodel.encoder_cost(spec.name, 512, "2x2+overview")
    assert (
        c5.dense_flops == pytest.approx(5 * c1.dense_flops) and c5.weight_elems == c1.weight_elems
    )
    path.write_text(json.dumps({"version": -1, "encoders": {}}))
    monkeypatch.undo()
    monkeypatch.setenv("VLM_PARETO_CACHE", str(path.parent))
    assert costmodel._load_cache()["encoders"] == {}  # another version is ignored


def test_zoo_json_exposes_costs(capsys):
    assert main(["zoo", "--json", "--resolutions", "256"]) == 0
    doc = json.loads(capsys.readouterr().out)
    fhd = next(e for e in doc["encoders"] if e["name"] == "fastvithd")
    assert fhd["costs"]["256"]["dense_flops"] > 0
    assert doc["llm_costs"]["qwen2-0.5b"]["dense_flops"][1] > 0


# ------------------------------------------------------------------ profiles


UNIT = {"unit": "NPU", "precision": "fp16"}


def test_profile_validation_is_one_line():
    good = get_profile("m1-max-ane-mlx")
    assert good.parts["encoder"].peak_tflops == 11.0
    with pytest.raises(UserError, match="missing field parts.prefill"):
        parse_profile(
            {
                "name": "x",
                "parts": {
                    "encoder": {**UNIT, "peak_tflops": 1, "bandwidth_gbs": 1, "bytes_per_elem": 2}
                },
            },
            "x.yaml",
        )
    with pytest.raises(UserError, match="bandwidth_gbs must be a positive number"):
        parse_profile(
            {
                "name": "x",
                "parts": {
                    p: {**UNIT, "peak_tflops": 1, "bandwidth_gbs": -5, "bytes_per_elem": 2}
                    for p in ("encoder", "prefill")
                },
            },
            "x.yaml",
        )
    with pytest.raises(UserError, match="did you mean 'm1-max"):
        get_profile("m1-maxx")
    part = {**UNIT, "peak_tflops": 1, "bandwidth_gbs": 1, "bytes_per_elem": 2}
    for data, message in [
        ({"name": "x", "parts": {"encoder": {**part, "unit": ""}, "prefill": part}}, "unit"),
        (
            {"name": "x", "parts": {"encoder": {**part, "precision": "fp7"}, "prefill": part}},
            "unknown parts.encoder.precision 'fp7'",
        ),
        ({"name": "x", "parts": {"encoder": "ane", "prefill": part}}, "parts.encoder must be a"),
        ({"name": 123, "parts": {"encoder": part, "prefill": part}}, "name must be a non-empty"),
        (
            {"name": "x", "aliases": [1, None], "parts": {"encoder": part, "prefill": part}},
            "aliases must be a list of names",
        ),
    ]:
        with pytest.raises(UserError, match=message):
            parse_profile(data, "x.yaml")


def test_user_profile_dir_and_bad_files_exit_2(tmp_path, capsys):
    d = tmp_path / "devices"
    d.mkdir(exist_ok=True)
    (d / "mine.yaml").write_text(
        "name: my-npu\nparts:\n  encoder: {unit: NPU, precision: int8, peak_tflops: 2, bandwidth_gbs: 50, bytes_per_elem: 1}\n"
        "  prefill: {unit: NPU, precision: int8, peak_tflops: 2, bandwidth_gbs: 50, bytes_per_elem: 1}\n"
    )
    assert (
        main(
            [
                "predict",
                "--device",
                "my-npu",
                "--encoder",
                "fastvithd",
                "--resolutions",
                "512",
                "--llm",
                "qwen2-0.5b",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "uncalibrated" in out
    (d / "bad.yaml").write_text(
        "name: bad\nparts:\n  encoder: {peak_tflops: 2, bytes_per_elem: 1}\n"
    )
    # a broken file is reported (exit 2) but does not hide or block the other devices
    assert main(["predict", "--list"]) == 2
    cap = capsys.readouterr()
    assert cap.err.count("\n") == 1 and "missing field parts.encoder.bandwidth_gbs" in cap.err
    assert "skipped a broken profile" in cap.err and "my-npu" in cap.out
    argv = ["predict", "--device", "my-npu", "--encoder", "fastvithd", "--resolutions", "512"]
    assert main([*argv, "--llm", "qwen2-0.5b"]) == 0
    capsys.readouterr()
    assert main(["predict", "--device", "bad"]) == 2  # the broken one: its reason is named
    err = capsys.readouterr().err
    assert "device 'bad':" in err and "bad.yaml" in err and "bandwidth_gbs" in err
    assert err.count("\n") == 1
    assert main(["predict", "--device", "nope-device"]) == 2
    assert "1 broken user profile(s) skipped" in capsys.readouterr().err
    # a broken override of a built-in is refused, not silently replaced by the built-in
    (d / "m1-max-ane-mlx.yaml").write_text("name: m1-max-ane-mlx\nparts: {}\n")
    assert main(["predict", "--device", "m1-max-ane-mlx"]) == 2
    assert "device 'm1-max-ane-mlx':" in capsys.readouterr().err
    (d / "m1-max-ane-mlx.yaml").unlink()
    # two user files with one name: the second is refused, naming the first
    (d / "mine2.yaml").write_text((d / "mine.yaml").read_text())
    assert (
        main(["predict", "--device", "my-npu", "--encoder", "fastvithd", "--llm", "qwen2-0.5b"])
        == 2
    )
    err = capsys.readouterr().err
    assert "also defined by" in err and "mine.yaml" in err
    (d / "mine2.yaml").unlink()
    (d / "bad.yaml").unlink()
    assert main(["predict", "--device", "nope-device"]) == 2
    assert "unknown device" in capsys.readouterr().err


# ------------------------------------------------------------------ calibration


def _rows(profile, coef_true, n=12, outlier=None):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        enc = Cost(
            dense_flops=rng.uniform(1e9, 5e11),
            dw_flops=rng.uniform(1e8, 1e10),
            attn_flops=rng.uniform(1e8, 5e10),
            weight_elems=rng.uniform(1e6, 3e8),
            act_elems=rng.uniform(1e6, 1e9),
            ops=rng.integers(50, 500),
        )
        r = KnownRow(f"r{i}", "encoder", 1.0, encoder=enc)
        from harness.predict.calibrate import design_row

        ms = float(design_row(r, profile) @ coef_true)
        if outlier == i:
            ms *= 2.0
        rows.append(KnownRow(f"r{i}", "encoder", ms, encoder=enc))
    return rows


def test_robust_nnls_recovers_coefficients_and_names_the_outlier():
    prof = get_profile("m1-max-ane-mlx")
    true = np.zeros(12)
    true[:6] = [2.0, 8.0, 4.0, 1.5, 0.0, 20.0]
    fit = fit_rows(_rows(prof, true, n=14, outlier=5), prof)
    assert [lbl for lbl, _ in fit.outliers] == ["r5"]
    clean = [r for i, r in enumerate(_rows(prof, true, n=14)) if i != 5]
    for r in clean:
        assert fit.predict_row(r, prof) == pytest.approx(r.known_ms, rel=0.05)


def test_too_few_rows_is_a_user_error(capsys):
    prof = get_profile("m1-max-ane-mlx")
    true = np.zeros(12)
    true[:6] = [2.0, 8.0, 4.0, 1.5, 0.5, 20.0]
    with pytest.raises(UserError, match="needs at least 7 known latencies"):
        fit_rows(_rows(prof, true, n=4), prof)


def test_m1_max_leave_one_out_on_the_papers_rows():
    from harness.predict.predictor import Predictor
    from harness.predict.validate import summarize

    p = Predictor("m1-max-ane-mlx")
    s = summarize(p.validation())
    # every encoder latency of Tables 1/3/4 with a zoo encoder, from the shipped table alone
    # (this test's cache is empty): Table 3's FastViTHD@224 is off the zoo's stride but shipped
    labels = [r.label for r in p.known_rows()]
    assert "T3.4 fastvithd@224 encoder" in labels
    assert s["ttft"]["n"] == 13 and s["encoder"]["n"] == 13
    assert p.profile.prompt_tokens == 0  # the paper's TTFT: prefill of the visual tokens only
    assert p.not_modelled[0] == "T3.2 ViTamin-L@224 encoder"  # said, not silently dropped
    assert s["ttft"]["median_abs_pct"] <= 15.0
    assert s["encoder"]["median_abs_pct"] <= 16.0  # 15.3% with the two rows Table 6 contradicts
    # Table 4's FastViTHD-1024 encoder latency cannot fit Table 6's TTFTs: the fit names it
    assert any(lbl.startswith("T4.8") for lbl, _ in p.fit.outliers)


def test_predicted_m1_max_order_of_table4_encoders_at_equal_tokens_matches_the_paper():
    from harness.predict.table4 import three_way_rows

    rows = [r for r in three_way_rows() if r["source"].startswith("Table 4")]
    by_tokens: dict[int, list[dict]] = {}
    tokens = {
        ("fastvithd", 256): 16,
        ("convnext-l", 320): 100,
        ("convnext-xxl", 256): 64,
        ("fastvithd", 512): 64,
        ("fastvithd", 768): 144,
        ("convnext-l", 512): 256,
        ("convnext-xxl", 512): 256,
        ("fastvithd", 1024): 256,
    }
    for r in rows:
        by_tokens.setdefault(tokens[(r["encoder"], r["resolution"])], []).append(r)
    for group in by_tokens.values():
        assert [r["encoder"] for r in sorted(group, key=lambda r: r["paper_ms"])] == [
            r["encoder"] for r in sorted(group, key=lambda r: r["predicted_ms"])
        ]


def test_uncalibrated_prediction_says_so_and_claims_no_band():
    from harness.predict.predictor import Predictor

    p = Predictor("iphone-16-pro-ane").predict("fastvithd", 1024, "qwen2-0.5b")
    assert not p.calibrated and p.low_ms is None and p.high_ms is None
    assert p.label == "predicted for iphone-16-pro-ane (uncalibrated)"
    assert 0 < p.ttft_ms < 10_000


def test_predict_cli_validate_and_uncalibrated_validate_refused(capsys):
    assert main(["predict", "--device", "m1-max", "--validate", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["leave_one_out"]["summary"]["ttft"]["worst_abs_pct"] > 0
    assert any(lbl.startswith("T3.2 ViTamin-L") for lbl in doc["not_modelled"])
    assert main(["predict", "--device", "h100", "--validate"]) == 2
    assert "uncalibrated" in capsys.readouterr().err
    # --held-out-family alone validates too (it used to be ignored without --validate)
    assert main(["predict", "--device", "m1-max", "--held-out-family", "convnext", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["held_out_family"]["family"] == "convnext" and "leave_one_out" in doc


def test_host_profile_calibrates_from_the_store_and_holds_out_a_family(db_url):
    """Fake backend rows stored for this machine: encoder time ~ pixels; the fit predicts a
    family it never saw."""
    from harness.backends.fake.latencies import fake_encoder
    from harness.fingerprint import fingerprint, machine_id
    from harness.predict.predictor import Predictor
    from harness.predict.validate import held_out_family
    from harness.protocol import get_protocol
    from harness.store import MeasurementKey, Store

    store = Store(db_url)
    run = store.create_run("test", {}, fingerprint(threads=1))
    assert store.get_run(run)["machine_id"] == machine_id(fingerprint())
    for name, res in [
        ("fastvithd", 256),
        ("fastvithd", 512),
        ("fastvit", 256),
        ("fastvit", 512),
        ("convnext-l", 256),
        ("convnext-l", 320),
        ("convnext-l", 512),
        ("vit-l-14", 224),
        ("vit-l-14", 336),
        ("convnext-xxl", 256),
        ("siglip-so400m", 384),
    ]:
        key = MeasurementKey(
            kind="encoder",
            name=name,
            resolution=res,
            tiling="none",
            tokens=1,
            backend="torch",
            device="cpu",
            dtype="float32",
            protocol="quick",
        )
        store.add_measurement(run, key, fake_encoder(name, res, 1, get_protocol("quick")))
    p = Predictor("host-cpu", store=store)
    assert p.calibrated and len(p.known_rows()) == 11
    held = held_out_family(p.known_rows(), p.profile, "convnext")
    assert {h.family for h in held} == {"convnext"} and len(held) == 4


# ------------------------------------------------------------------ claims, report, choose


def test_claims_recomputed_from_the_tables():
    from harness.predict.claims import check_claims, inconsistent_rows

    claims = {d["claim"]: d for d in check_claims()}
    c33 = next(d for k, d in claims.items() if "3.3x faster" in k)
    assert c33["verdict"] == "differs" and c33["recomputed"] == pytest.approx(1.69, abs=0.01)
    c85 = next(d for k, d in claims.items() if k.startswith("85x"))
    assert c85["verdict"] == "holds"
    assert any(d["verdict"] == "cannot check" for d in claims.values())
    assert any("Table 4, row 8" == s for s, _ in inconsistent_rows())


def test_report_source_paper_has_claims_and_inconsistent_rows(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", "--source", "paper", "--out", str(out), "--no-static"]) == 0
    md = (out / "summary.md").read_text()
    html = (out / "index.html").read_text()
    for text in (md, html):
        assert "claims, recomputed" in text and "397.1" in text and "differs" in text
        assert "235.6 ms exceeds" in text  # the CSV's note on Table 4 row 8


def test_report_and_choose_with_device_label_points_and_use_the_band(tmp_path, capsys):
    out = tmp_path / "rep"
    assert (
        main(
            [
                "report",
                "--source",
                "paper",
                "--device",
                "m1-max-ane-mlx",
                "--out",
                str(out),
                "--no-static",
            ]
        )
        == 0
    )
    md = (out / "summary.md").read_text()
    assert "predicted for m1-max-ane-mlx" in md and "leave-one-out" in md
    assert 'Plotly.newPlot("pred-validation"' in (out / "index.html").read_text()
    capsys.readouterr()
    assert (
        main(["choose", "--source", "paper", "--device", "m1-max", "--budget-ms", "300", "--json"])
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    c = doc["choice"]
    assert c["latency_source"] == "predicted" and c["budget_ttft_ms"] > c["ttft_ms"]
    assert c["budget_ttft_ms"] <= 300


def test_choose_and_report_with_device_do_not_import_torch(tmp_path):
    code = (
        "import sys\nfrom harness.cli import main\n"
        f"main(['choose','--source','paper','--device','m1-max','--budget-ms','300'])\n"
        f"main(['report','--source','paper','--device','iphone','--no-static','--out',{str(tmp_path / 'r')!r}])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]


# ------------------------------------------------------------------ pruning (pure)


def test_pruning_pure_functions():
    from harness.predict.prune import dominated, online_scales, predict_ms

    scales, overall = online_scales([("a", 10.0, 5.0), ("a", 12.0, 6.0), ("b", 3.0, 1.0)])
    assert (
        scales["a"] == pytest.approx((2.0, 1.0))
        and scales["b"] == pytest.approx((3.0, 1.0))
        and overall == 2.0
    )
    assert predict_ms("c", 4.0, scales, overall) is None  # no rows of its own: measure it
    # a super-linear law (ms ~ roof^1.5) is followed, not flattened to a ratio
    law, _ = online_scales([("e", 2 * r**1.5, r) for r in (1.0, 4.0, 9.0)])
    assert predict_ms("e", 16.0, law, None) == pytest.approx(2 * 64.0)
    front = [(60.0, 100.0), (65.0, 300.0)]
    assert dominated(59.0, 150.0, front, None)
    assert not dominated(61.0, 150.0, front, None)
    assert not dominated(70.0, 1000.0, front, None)
    assert dominated(70.0, 1000.0, front, 500.0)
    assert math.isfinite(overall)


def test_pruning_margin_adapts_to_the_online_models_own_error():
    from harness.predict.prune import MARGIN, MARGIN_FLOOR, adaptive_margin, loo_errors

    exact = [("e", 2 * r**1.5, r) for r in (1.0, 2.0, 4.0, 9.0)]
    errs = loo_errors(
        exact + [("p", 5.0, 1.0), ("p", 6.0, 2.0)]
    )  # "p": too few rows to hold one out
    assert len(errs) == 4 and max(abs(e) for e in errs) < 1e-9
    assert adaptive_margin(errs) == MARGIN_FLOOR  # a model that predicts well earns little optimism
    # a model that missed by ~30% is given the most optimism; too few errors: the default
    noisy = [0.3, -0.25, 0.1, 0.05]
    assert adaptive_margin(noisy) == MARGIN
    assert adaptive_margin([0.01, 0.02]) == MARGIN
    mid = adaptive_margin([0.05, -0.06, 0.04, 0.07, 0.02])
    assert MARGIN_FLOOR < mid < MARGIN


def test_sweep_summary_ends_with_the_paper_encoders_three_ways(capsys):
    import pandas as pd

    from harness.sweep.finish import _print_paper_three_way

    measured = pd.DataFrame(
        [
            {"encoder": "fastvithd", "resolution": 1024, "tiling": "none", "encoder_ms": 5736.3},
            {"encoder": "convnext-l", "resolution": 512, "tiling": "none", "encoder_ms": 1893.3},
        ]
    )
    _print_paper_three_way(measured)
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith(("fastvithd", "convnext-l"))]
    assert len(lines) == 2  # only encoders measured here
    fhd = next(ln for ln in lines if ln.strip().startswith("fastvithd"))
    assert "5736.3" in fhd and "235.6" in fhd and "distrusted" in fhd


def test_pruned_search_finds_the_known_best_with_no_more_measurements(tmp_path):
    from harness.search import (
        Config,
        Evaluator,
        Search,
        build_space,
        sweep_config,
        synthetic_accuracy,
    )
    from harness.store import Store

    space = build_space(
        sweep_config(encoders=["fastvithd"], llms=["qwen2-0.5b", "qwen2-1.5b"], backend="fake"),
        resolution_range=(256, 512),
    )
    budget = 1700.0
    store = Store(f"sqlite:///{tmp_path / 'grid.db'}")
    ev = Evaluator(space, store, store.create_run("grid", {}, {"machine_id": "m"}))
    rows = []
    for c in space.configs():
        r = ev.ttft(c)
        acc, _ = synthetic_accuracy(c, space.tokens(c), space.llm_params_b[c.llm])
        rows.append((acc, -r["ttft_ms"], c, r["ttft_ci_high_ms"]))
    expected = max(r for r in rows if r[3] <= budget)[2]
    used = {}
    for prune in (False, True):
        s = Search(
            space,
            synthetic_accuracy,
            db=f"sqlite:///{tmp_path / f'{prune}.db'}",
            budget_ms=budget,
            seed=0,
            study_name="p",
            prune=prune,
        )
        res = s.optimize(len(space.configs()))
        b = res.best
        assert Config(b["encoder"], b["resolution"], b["tiling"], b["llm"]) == expected
        used[prune] = res.measurements_total
    assert used[True] < used[False]  # pruning saves measurements under a budget too


def test_prediction_dominance_and_extrapolation_margin():
    from harness.predict.prune import dominated_by_prediction, part_margin

    others = [(60.0, 200.0), (70.0, 900.0)]
    assert dominated_by_prediction(59.0, 250.0, others, None)  # 60 % at <= 200 ms beats it
    assert not dominated_by_prediction(60.0, 200.0, others, None)  # a tie survives
    assert not dominated_by_prediction(65.0, 250.0, others, None)
    assert not dominated_by_prediction(69.0, 1000.0, others, 800.0)  # the 900 ms one cannot fit
    assert dominated_by_prediction(69.0, 1000.0, others, 950.0)
    # the optimism grows with the distance of the extrapolation from the rows the law saw
    assert part_margin(0.2, 100.0, [100.0, 400.0]) == pytest.approx(0.2)
    assert part_margin(0.2, 100.0 / math.e, [100.0, 400.0]) == pytest.approx(0.4)
    assert part_margin(0.2, 1e-3, [100.0]) == 0.9  # capped
    assert part_margin(0.2, 100.0, []) == 0.9  # nothing known


def test_device_prediction_of_nothing_predictable_is_one_clear_error():
    import pandas as pd

    from harness.points import PointsResult
    from harness.predict.apply import with_predicted_latency

    pts = pd.DataFrame(
        [{"encoder": "not-in-zoo", "resolution": 256, "llm": "qwen2-0.5b", "tiling": "none"}]
    )
    res = PointsResult(pts, pd.DataFrame(), pd.DataFrame(), [])
    with pytest.raises(
        UserError, match=r"none of the 1 point\(s\) can be predicted.*not-in-zoo@256"
    ):
        with_predicted_latency(res, "m1-max")


def test_a_pruned_search_starts_from_a_design_that_shows_every_name(tmp_path):
    from harness.search import Config, Search, build_space, sweep_config, synthetic_accuracy
    from harness.search.study import initial_design

    space = build_space(
        sweep_config(
            encoders=["fastvithd", "fastvit"],
            llms=["qwen2-0.5b", "qwen2-1.5b", "qwen2-7b"],
            backend="fake",
        ),
        resolution_range=(256, 768),
    )
    design = initial_design(space)
    # each encoder at both ends of its range, every LLM at least once
    for enc in space.encoders.values():
        rs = enc.resolutions["none"]
        assert {c.resolution for c in design if c.encoder == enc.name} == {rs[0], rs[-1]}
    assert {c.llm for c in design} == set(space.llms)
    s = Search(
        space,
        synthetic_accuracy,
        db=f"sqlite:///{tmp_path / 's.db'}",
        seed=0,
        study_name="d",
        prune=True,
    )
    s.optimize(len(design))
    assert [r.config for r in s.trace[: len(design)]] == design
    assert all(isinstance(c, Config) for c in design)
    # resuming does not enqueue the design again
    again = Search(
        space,
        synthetic_accuracy,
        db=f"sqlite:///{tmp_path / 's.db'}",
        seed=0,
        study_name="d",
        resume=True,
        prune=True,
    )
    again.optimize(1)
    fixed = [t for t in again.study.get_trials(deepcopy=False) if "fixed_params" in t.system_attrs]
    # the design once, then the cost model's own pick (one trial)
    assert s.pruner.proposed == 0 and again.pruner.proposed == 1
    assert len(fixed) == len(design) + 1
    assert again.trace[0].config not in design


def test_hypervolume_improvement_of_one_more_point():
    from harness.predict.prune import improvement

    ref = (50.0, 1000.0)
    front = [(60.0, 100.0)]
    assert improvement(55.0, 200.0, front, ref) == 0.0  # dominated
    assert improvement(49.0, 10.0, front, ref) == 0.0  # below the reference accuracy
    assert improvement(70.0, 2000.0, front, ref) == 0.0  # beyond the reference TTFT
    # more accurate at the same TTFT: the new slab is 10 accuracy points x log10(1000/100)
    assert improvement(70.0, 100.0, front, ref) == pytest.approx(10.0)
    assert improvement(60.0, 10.0, [], ref) == pytest.approx(10.0 * 2)


def test_the_cost_model_proposes_the_most_promising_configuration(tmp_path):
    """After the design, every proposal is the cost model's: an unmeasured configuration
    that its optimistic prediction puts on the frontier; a search run to the end finds the
    grid's whole frontier with fewer measurements than the grid."""
    from harness.pareto import pareto_front
    from harness.search import Evaluator, Search, build_space, sweep_config, synthetic_accuracy
    from harness.store import Store

    space = build_space(
        sweep_config(
            encoders=["fastvithd", "fastvit"], llms=["qwen2-0.5b", "qwen2-7b"], backend="fake"
        ),
        resolution_range=(256, 768),
    )
    store = Store(f"sqlite:///{tmp_path / 'grid.db'}")
    ev = Evaluator(space, store, store.create_run("grid", {}, {"machine_id": "m"}))
    grid = {}
    for c in space.configs():
        acc, _ = synthetic_accuracy(c, space.tokens(c), space.llm_params_b[c.llm])
        grid[c] = (acc, float(ev.ttft(c)["ttft_ms"]))
    cs = list(grid)
    import pandas as pd

    df = pd.DataFrame([{"accuracy": grid[c][0], "ttft": grid[c][1]} for c in cs])
    front = pareto_front(df, (("accuracy", "max"), ("ttft", "min"))).front
    on_front = {cs[int(i)] for i in front}
    s = Search(space, synthetic_accuracy, db=f"sqlite:///{tmp_path / 's.db'}", seed=0, prune=True)
    assert s.pruner.propose(s) is None  # nothing measured: the design comes first
    res = s.optimize(len(cs))
    assert s.pruner.proposed > 0
    assert on_front <= set(s._seen)  # every frontier configuration was measured
    assert res.measurements_total < ev.run_measurements()
    assert len(s._seen) < len(cs)  # and most configurations were never measured


def test_predict_list_json_and_context_length(capsys):
    assert main(["predict", "--list", "--json"]) == 0
    profiles = json.loads(capsys.readouterr().out)
    names = {p["name"] for p in profiles}
    assert "m1-max-ane-mlx" in names and all("calibrate_from" in p for p in profiles)
    # visual + prompt tokens beyond the LLM's context: one line, exit 2 (as a sweep refuses it)
    args = ["predict", "--device", "m1-max", "--encoder", "vit-l-14", "--llm", "vicuna-7b"]
    assert main([*args, "--resolutions", "1344"]) == 2
    err = capsys.readouterr().err
    assert "9216 visual + 0 prompt tokens" in err and "context length of 4096" in err
    args = ["predict", "--device", "m1-max", "--encoder", "fastvithd", "--llm", "qwen2-0.5b"]
    assert main([*args, "--prompt-tokens", "100000000"]) == 2
    assert "exceeds qwen2-0.5b's context length" in capsys.readouterr().err


def test_empty_resolution_entries_and_missing_ingest_files_are_named(tmp_path, capsys):
    args = ["predict", "--device", "m1-max", "--encoder", "fastvithd", "--llm", "qwen2-0.5b"]
    assert main([*args, "--resolutions", "256,,512"]) == 2
    assert "--resolutions has an empty entry" in capsys.readouterr().err
    assert main(["ingest", str(tmp_path / "nope.json")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_devices_env_must_name_folders_and_aliases_stay_unique(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VLM_PARETO_DEVICES", str(tmp_path / "missing"))
    assert main(["predict", "--list"]) == 2
    assert "VLM_PARETO_DEVICES names" in capsys.readouterr().err
    part = "{unit: x, precision: fp16, peak_tflops: 1, bandwidth_gbs: 1, bytes_per_elem: 2}"
    (tmp_path / "devices" / "a.yaml").write_text(
        f"name: mine\naliases: [m1-max]\nparts:\n  encoder: {part}\n  prefill: {part}\n"
    )
    monkeypatch.setenv("VLM_PARETO_DEVICES", str(tmp_path / "devices"))
    assert main(["predict", "--list"]) == 2
    assert "'m1-max' already names device 'm1-max-ane-mlx'" in capsys.readouterr().err
    # the alias keeps naming the built-in; the strict form still refuses the file
    from harness.predict.profiles import all_profiles, get_profile

    assert get_profile("m1-max").name == "m1-max-ane-mlx"
    with pytest.raises(UserError, match="already names device"):
        all_profiles()


def test_prediction_for_another_device_skips_this_machines_ram_guard(monkeypatch, capsys):
    from harness.encoders import zoo

    monkeypatch.setattr(zoo, "_memory_limit_bytes", lambda: 2**20)  # a 1-MiB host
    with pytest.raises(UserError, match="more than this machine's"):
        zoo.encoder_tokens("fastvithd", 1024)
    assert zoo.encoder_tokens("fastvithd", 1024, check_memory=False) == 256
    argv = ["predict", "--device", "m1-max-ane-mlx", "--encoder", "fastvithd"]
    assert main([*argv, "--resolutions", "1024", "--llm", "qwen2-0.5b", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["points"][0]["ttft_ms"] > 0


def test_list_takes_no_other_action(capsys):
    for extra in (["--validate"], ["--device", "m1-max"], ["--table4"], ["--encoder", "x"]):
        assert main(["predict", "--list", *extra]) == 2
        err = capsys.readouterr().err
        assert "--list only lists the profiles" in err and extra[0] in err and err.count("\n") == 1
    for extra in (["--validate"], ["--device", "h100"], ["--resolutions", "512"]):
        assert main(["predict", "--table4", *extra]) == 2
        err = capsys.readouterr().err
        assert "--table4 prints the paper's Table 4" in err and extra[0] in err


def test_unpredictable_points_name_the_command_that_counts_them():
    import pandas as pd

    from harness.points import PointsResult
    from harness.predict.apply import with_predicted_latency

    pts = pd.DataFrame(
        [
            {"encoder": "fastvithd", "resolution": 512, "llm": "qwen2-0.5b", "tiling": "none"},
            {"encoder": "no-such-enc", "resolution": 384, "llm": "qwen2-0.5b", "tiling": "none"},
        ]
    )
    empty = pts.iloc[0:0]
    out = with_predicted_latency(PointsResult(pts, empty, empty, [], "paper"), "m1-max-ane-mlx")
    assert out.points["ttft_ms"].notna().tolist() == [True, False]
    note = next(n for n in out.notes if "could not be predicted" in n)
    assert "no-such-enc" in note  # the first point and why
    assert (
        "'vlm-pareto predict --device m1-max-ane-mlx --encoder no-such-enc --resolutions 384 "
        "--llm qwen2-0.5b' counts it once" in note
    )
