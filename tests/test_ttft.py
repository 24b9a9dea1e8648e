"""TTFT composition and the prefill-vs-tokens fit (pure functions, no torch)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness.errors import UserError
from harness.stats import combine_intervals, summarize
from harness.ttft import TTFT_COLUMNS, compose_ttft, fit_prefill_curve, prefill_at


def row(kind, name, tokens, samples, **kw):
    s = summarize(samples)
    base = dict(
        kind=kind,
        name=name,
        resolution=0,
        tiling="none",
        tokens=tokens,
        prompt_tokens=0,
        in_dim=0,
        backend="torch",
        device="cpu",
        dtype="float32",
        protocol="quick",
        status="ok",
        samples_ms=list(samples),
        median_ms=s.median_ms,
        p90_ms=s.p90_ms,
        ci_low_ms=s.ci_low_ms,
        ci_high_ms=s.ci_high_ms,
        estimated=False,
        extra={},
        machine_id="m1",
        run_id="r1",
    )
    base.update(kw)
    return base


def enc(name="fastvithd", res=1024, tokens=256, samples=(100.0, 102.0, 98.0, 101.0, 99.0), **kw):
    return row(
        "encoder",
        name,
        tokens,
        samples,
        resolution=res,
        extra={"out_dim": 3072, "params_m": 125.1},
        **kw,
    )


def pre(llm="qwen2-0.5b", tokens=256, samples=(200.0, 204.0, 196.0, 202.0, 198.0), **kw):
    extra = kw.pop("extra", {"params_b": 0.494, "projector_ms": 9.0, "encoder_dim": 3072})
    return row("prefill", llm, tokens, samples, prompt_tokens=16, extra=extra, **kw)


def proj(llm="qwen2-0.5b", tokens=256, in_dim=3072, samples=(5.0, 5.2, 4.8, 5.1, 4.9), **kw):
    return row("projector", llm, tokens, samples, in_dim=in_dim, **kw)


def test_sum_and_interval_with_samples():
    df = compose_ttft([enc()], [proj()], [pre()])
    assert tuple(df.columns) == TTFT_COLUMNS and len(df) == 1
    r = df.iloc[0]
    assert (r.encoder, r.resolution, r.llm, r.tiling, r.tokens, r.prompt_tokens) == (
        "fastvithd",
        1024,
        "qwen2-0.5b",
        "none",
        256,
        16,
    )
    assert (r.encoder_ms, r.projector_ms, r.prefill_ms) == (100.0, 5.0, 200.0)
    assert r.ttft_ms == pytest.approx(305.0)
    assert r.ttft_ci_low_ms <= r.ttft_ms <= r.ttft_ci_high_ms
    assert r.ttft_ci_high_ms - r.ttft_ci_low_ms > 0
    assert r.ttft_p90_ms >= r.ttft_ms
    assert r.backend == "torch" and r.machine == "m1" and r.run_id == "r1" and not r.estimated
    assert (
        r.encoder_params_m == 125.1 and r.llm_params_b == 0.494 and r.latency_source == "measured"
    )


def test_interval_without_samples_combines_parts():
    e = enc(samples_ms=[], ci_low_ms=95.0, ci_high_ms=104.0)
    p = pre(samples_ms=json.dumps([]), ci_low_ms=190.0, ci_high_ms=212.0)
    q = proj(samples_ms=None, ci_low_ms=5.0, ci_high_ms=5.0)
    r = compose_ttft([e], [q], [p]).iloc[0]
    point, lo, hi = combine_intervals(
        [(100.0, 95.0, 104.0), (200.0, 190.0, 212.0), (5.0, 5.0, 5.0)]
    )
    assert (r.ttft_ms, r.ttft_ci_low_ms, r.ttft_ci_high_ms) == pytest.approx((point, lo, hi))
    assert r.ttft_p90_ms == pytest.approx(e["p90_ms"] + p["p90_ms"] + q["p90_ms"])


def test_matching_rules():
    encs = [
        enc(),
        enc(res=512, tokens=64),
        enc(name="vit-l-14", res=336, tokens=576, machine_id="other"),
    ]
    pres = [pre(), pre(tokens=64), pre(llm="qwen2-1.5b"), pre(tokens=576)]
    df = compose_ttft(encs, [proj(), proj(tokens=64)], pres)
    got = sorted(zip(df.encoder, df.resolution, df.llm, strict=True))
    # vit-l-14 ran on another machine: never joined with this machine's prefill.
    assert got == [
        ("fastvithd", 512, "qwen2-0.5b"),
        ("fastvithd", 1024, "qwen2-0.5b"),
        ("fastvithd", 1024, "qwen2-1.5b"),
    ]


def test_projector_must_match_encoder_channels():
    # Only a 1024-channel projector row was measured: it must not be used for a 3072-channel
    # encoder; the projector time recorded with the prefill (encoder_dim 3072) is used instead.
    r = compose_ttft([enc()], [proj(in_dim=1024)], [pre()]).iloc[0]
    assert r.projector_ms == 9.0
    # No projector information at all: NaN, and TTFT is encoder + prefill.
    r = compose_ttft([enc()], [], [pre(extra={})]).iloc[0]
    assert math.isnan(r.projector_ms) and r.ttft_ms == pytest.approx(300.0)


def test_failed_rows_latest_duplicate_and_estimated():
    old = pre(samples=(500.0, 500.0, 500.0), created_at="2026-01-01T00:00:00")
    new = pre(created_at="2026-02-01T00:00:00", estimated=True)
    failed = pre(status="failed", median_ms=None, samples_ms=[])
    df = compose_ttft([enc()], [proj()], [old, new, failed])
    assert len(df) == 1 and df.iloc[0].prefill_ms == 200.0 and bool(df.iloc[0].estimated)


def test_dataframe_input_with_json_columns_and_mixed_backends():
    e = enc(backend="coreml", run_id="a")
    e["samples_ms"], e["extra"] = json.dumps(e["samples_ms"]), json.dumps(e["extra"])
    p = pre(backend="mlx", run_id="b")
    q = proj(backend="mlx")
    df = compose_ttft(pd.DataFrame([e]), pd.DataFrame([q]), pd.DataFrame([p]))
    r = df.iloc[0]
    assert r.backend == "coreml+mlx" and r.run_id == "a,b" and r.projector_ms == 5.0


def test_empty_inputs_give_empty_table():
    df = compose_ttft(None, None, None)
    assert df.empty and tuple(df.columns) == TTFT_COLUMNS


def test_fit_recovers_quadratic_and_reports_residuals():
    n = np.array([16, 64, 144, 256, 576, 1024])
    ms = 30 + 1.5 * n + 0.001 * n**2
    fit = fit_prefill_curve(n, ms)
    assert fit.degree == 2
    assert fit.coef == pytest.approx((30, 1.5, 0.001), rel=1e-3)
    assert fit.max_rel_error < 1e-6 and len(fit.residuals_ms) == 6
    assert fit.predict(400) == pytest.approx(30 + 600 + 160, rel=1e-4)
    assert fit.predict([16, 1024]) == pytest.approx(ms[[0, -1]], rel=1e-4)
    assert fit.to_dict()["degree"] == 2


def test_fit_noisy_points_are_relative_and_nonnegative():
    n = np.array([16, 64, 144, 256, 576, 1024])
    rng = np.random.default_rng(0)
    ms = (400 + 3.5 * n) * (1 + 0.03 * rng.standard_normal(n.size))
    fit = fit_prefill_curve(n, ms)
    assert all(c >= 0 for c in fit.coef)
    assert fit.max_rel_error < 0.1
    assert fit.rel_residuals == pytest.approx(
        [r / m for r, m in zip(fit.residuals_ms, ms, strict=True)]
    )


def test_fit_degree_follows_data_and_bad_input():
    assert fit_prefill_curve([64, 256], [100.0, 300.0]).degree == 1
    with pytest.raises(UserError, match="at least 2 distinct"):
        fit_prefill_curve([64, 64], [1.0, 1.1])
    with pytest.raises(UserError, match="positive"):
        fit_prefill_curve([0, 64], [1.0, 2.0])
    with pytest.raises(UserError, match="degree"):
        fit_prefill_curve([16, 64], [1.0, 2.0], degree=2)


def test_measured_point_wins_over_fit():
    tokens, ms = [16, 64, 256], [50.0, 120.0, 400.0]
    fit = fit_prefill_curve(tokens, ms, degree=1)
    assert prefill_at(64, tokens, ms, fit) == (120.0, "measured")
    value, source = prefill_at(144, tokens, ms, fit)
    assert source == "fit" and value == pytest.approx(fit.predict(144))


def test_peak_memory_is_the_larger_part_and_unknown_when_sampled():
    r = compose_ttft([enc(peak_mem_bytes=3e9)], [proj()], [pre(peak_mem_bytes=5e9)]).iloc[0]
    assert r.peak_mem_bytes == 5e9
    r = compose_ttft(
        [enc(peak_mem_bytes=3e9)], [proj()], [pre(peak_mem_bytes=5e9, estimated=True)]
    ).iloc[0]
    assert math.isnan(r.peak_mem_bytes)  # a k-layer model's memory is not the full model's
    r = compose_ttft([enc()], [proj()], [pre(peak_mem_bytes=5e9)]).iloc[0]
    assert math.isnan(r.peak_mem_bytes)
