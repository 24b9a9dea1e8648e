"""Regression statistics (harness.compare) and the ``vlm-pareto compare`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.compare import (
    DEFAULT_ALPHA,
    change_points,
    check_comparable,
    classify,
    compare_samples,
    compare_tables,
    history_verdicts,
    key_label,
    last_shift,
    mann_whitney_p,
    night_to_night_margin,
    noise_study,
    ratio_of_medians_ci,
    wilson_interval,
)
from harness.errors import UserError

NOISE_FIXTURE = Path(__file__).parent / "fixtures" / "noise" / "convnet_cpu.json"
#: 40 standard-protocol rounds of the real (reparameterized) FastViTHD at 256 on the quiet
#: 2-core machine: `python scripts/noise_study.py collect --encoder fastvithd --resolution 256
#: --protocol standard --threads 1 --rounds 40 --out tests/fixtures/noise/fastvithd256_cpu.json`
ENCODER_NOISE_FIXTURE = Path(__file__).parent / "fixtures" / "noise" / "fastvithd256_cpu.json"


def lognormal(median: float, sigma: float = 0.05, n: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(math.log(median), sigma, n)


# --- two samples ------------------------------------------------------------------------------


def test_clear_slowdown_is_a_regression_with_ratio_and_ci():
    r = compare_samples(lognormal(20.0, seed=1), lognormal(24.0, seed=2))
    assert r.verdict == "regression"
    assert r.significant and r.beyond_threshold
    assert r.ratio == pytest.approx(1.2, abs=0.02)
    assert r.ratio_ci_low < r.ratio < r.ratio_ci_high
    assert r.ratio_ci_low < 1.2 < r.ratio_ci_high
    assert r.p_value < 1e-10
    assert r.change_pct == pytest.approx((r.ratio - 1) * 100)


def test_speedup_is_an_improvement():
    r = compare_samples(lognormal(20.0, seed=1), lognormal(16.0, seed=2))
    assert r.verdict == "improvement" and r.ratio < 0.9


def test_same_distribution_is_no_change():
    r = compare_samples(lognormal(20.0, seed=1), lognormal(20.0, seed=2))
    assert r.verdict == "~"
    assert not r.beyond_threshold


def test_significant_but_small_shift_is_not_a_regression():
    # 2% slower, very tight samples: the test is sure, the size is below the 5% threshold.
    r = compare_samples(lognormal(20.0, 0.005, 500, 1), lognormal(20.4, 0.005, 500, 2))
    assert r.significant and not r.beyond_threshold
    assert r.verdict == "~"
    # ... and with a 1% threshold the same data is a regression: the threshold is what decided.
    assert (
        compare_samples(
            lognormal(20.0, 0.005, 500, 1), lognormal(20.4, 0.005, 500, 2), threshold=0.01
        ).verdict
        == "regression"
    )


def test_large_but_insignificant_ratio_is_not_a_regression():
    # Few, very noisy samples: the medians differ by >5% by luck, the test cannot confirm it.
    b = [10.0, 30.0, 12.0, 25.0, 14.0, 28.0]
    c = [x * 1.08 for x in b[::-1]]
    r = compare_samples(b, c)
    assert r.beyond_threshold and not r.significant
    assert r.verdict == "~"


def test_too_few_samples_is_a_user_error_not_a_verdict():
    with pytest.raises(UserError, match="too few samples.*baseline has 4, candidate 10"):
        compare_samples([1.0, 1.1, 1.2, 1.3], [1.0] * 10)
    # Non-finite values do not count as samples.
    with pytest.raises(UserError, match="too few"):
        compare_samples([1.0, 2.0, float("nan"), float("nan"), 3.0, 4.0], [1.0] * 10)


def test_bad_settings_and_samples_are_user_errors():
    with pytest.raises(UserError, match="alpha"):
        compare_samples([1.0] * 10, [1.0] * 10, alpha=0.0)
    with pytest.raises(UserError, match="threshold"):
        compare_samples([1.0] * 10, [1.0] * 10, threshold=-0.1)
    with pytest.raises(UserError, match="non-positive"):
        compare_samples([1.0] * 9 + [-1.0], [1.0] * 10)


def test_classify_needs_both_conditions_and_is_symmetric_in_log_space():
    assert classify(1.10, 1e-6) == "regression"
    assert classify(1.10, 0.01) == "~"  # not significant at 0.002
    assert classify(1.04, 1e-6) == "~"  # significant, too small
    assert classify(1 / 1.05, 1e-6) == "improvement"
    assert classify(0.96, 1e-6) == "~"
    assert DEFAULT_ALPHA == 0.002


def test_mann_whitney_edge_cases():
    assert mann_whitney_p([5.0] * 8, [5.0] * 8) == 1.0
    # Small untied samples use the exact distribution: complete separation of 5 vs 5.
    assert mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)


def test_ratio_ci_is_deterministic():
    b, c = lognormal(10.0, seed=3), lognormal(11.0, seed=4)
    assert ratio_of_medians_ci(b, c) == ratio_of_medians_ci(b, c)


def test_wilson_interval():
    lo, hi = wilson_interval(0, 100)
    assert lo == 0.0 and 0.02 < hi < 0.05
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi


# --- like with like ---------------------------------------------------------------------------


def _row(name="enc", median=10.0, seed=0, n=50, **kw):
    base = {
        "kind": "encoder",
        "name": name,
        "resolution": 256,
        "tiling": "none",
        "tokens": 16,
        "prompt_tokens": 0,
        "backend": "torch",
        "device": "cpu",
        "dtype": "float32",
        "protocol": "rigorous",
        "machine_id": "m1",
        "status": "ok",
        "run_id": "r",
    }
    base.update(kw)
    base["samples_ms"] = list(lognormal(median, 0.03, n, seed))
    return base


def test_check_comparable_lists_every_differing_field():
    with pytest.raises(
        UserError, match=r"differ in machine_id, dtype .*'m1' vs 'm2'.*'float32' vs 'float16'"
    ):
        check_comparable(
            {
                "machine_id": "m1",
                "backend": "torch",
                "device": "cpu",
                "dtype": "float32",
                "protocol": "p",
            },
            {
                "machine_id": "m2",
                "backend": "torch",
                "device": "cpu",
                "dtype": "float16",
                "protocol": "p",
            },
        )


def test_compare_tables_pools_a_window_and_pairs_keys():
    base = [_row(seed=1, run_id="a"), _row(seed=2, run_id="b"), _row("other", seed=3)]
    cand = [_row(median=12.0, seed=4), _row("new", seed=5), _row("broken", status="failed")]
    t = compare_tables(base, cand)
    assert len(t.rows) == 1
    r = t.rows[0]
    assert r.result.n_baseline == 100 and r.result.n_candidate == 50  # two runs pooled
    assert r.result.verdict == "regression"
    assert t.regressions == [r]
    assert t.only_baseline == ["encoder other@256"] and t.only_candidate == ["encoder new@256"]
    assert t.skipped == ["encoder broken@256"]
    d = t.to_dict()
    assert d["regressions"] == 1 and d["rows"][0]["label"] == "encoder enc@256"


def test_run_to_run_variance_widens_the_ratio_and_gates_the_verdict():
    b, c = lognormal(20.0, seed=1), lognormal(24.0, seed=2)  # 20% slower, tight samples
    plain = compare_samples(b, c)
    wide = compare_samples(b, c, run_sd=0.1)
    assert plain.verdict == "regression" and plain.run_sd == 0.0
    assert plain.ratio_ci_within_low == plain.ratio_ci_low
    # same samples, same ratio and p; the interval now holds the machine's run-to-run swing
    assert wide.ratio == plain.ratio and wide.p_value == plain.p_value
    assert (wide.ratio_ci_within_low, wide.ratio_ci_within_high) == (
        plain.ratio_ci_low,
        plain.ratio_ci_high,
    )
    assert wide.ratio_ci_low < 1.0 < 1.2 < plain.ratio_ci_high < wide.ratio_ci_high
    assert wide.verdict == "~"  # a 20% move is within what two runs do on their own here
    assert compare_samples(b, lognormal(40.0, seed=2), run_sd=0.1).verdict == "regression"
    assert compare_samples(b, lognormal(14.0, seed=2), run_sd=0.1).verdict == "improvement"
    assert compare_samples(b, lognormal(17.0, seed=2), run_sd=0.1).verdict == "~"
    # without a bootstrap the run term alone makes the interval
    nb = compare_samples(b, lognormal(40.0, seed=2), run_sd=0.1, n_boot=0)
    assert nb.verdict == "regression" and nb.ratio_ci_low == pytest.approx(
        nb.ratio * math.exp(-1.959964 * 0.1), rel=1e-4
    )
    for bad in (-0.1, math.nan, "x"):
        with pytest.raises(UserError, match="run_sd"):
            compare_samples(b, c, run_sd=bad)


def test_compare_tables_scales_the_run_term_by_the_runs_pooled():
    base = [_row(seed=1, run_id="a"), _row(seed=2, run_id="b")]
    cand = [_row(median=30.0, seed=4, run_id="c")]
    one = compare_tables(base[:1], cand, run_sd=0.1).rows[0].result
    two = compare_tables(base, cand, run_sd=0.1).rows[0].result
    assert one.run_sd == pytest.approx(0.1 * math.sqrt(2))
    assert two.run_sd == pytest.approx(0.1 * math.sqrt(1.5))
    assert compare_tables(base, cand, run_sd=0.1).to_dict()["run_sd"] == 0.1


def test_projector_labels_name_the_encoder_width():
    assert key_label({"kind": "projector", "name": "tiny-llama", "in_dim": 3072, "tokens": 64}) == (
        "projector 3072->tiny-llama tok=64"
    )
    assert key_label({"kind": "projector", "name": "tiny-llama", "in_dim": 0}) == (
        "projector tiny-llama"
    )


def test_compare_tables_refuses_unlike_inputs():
    with pytest.raises(UserError, match="machine_id"):
        compare_tables([_row()], [_row(machine_id="m2")])
    with pytest.raises(UserError, match="differ in dtype, protocol"):
        compare_tables([_row()], [_row(dtype="float16", protocol="quick")])
    with pytest.raises(UserError, match="mixes runs from different machines"):
        compare_tables([_row(), _row(machine_id="m2", run_id="x")], [_row()])
    with pytest.raises(UserError, match="no measurement in common"):
        compare_tables([_row("a")], [_row("b")])
    with pytest.raises(UserError, match="too few samples for encoder enc@256"):
        compare_tables([_row(n=3)], [_row()])


# --- history ----------------------------------------------------------------------------------


def _history(medians, n=60):
    return [lognormal(m, 0.02, n, seed=i) for i, m in enumerate(medians)]


def test_one_bad_night_is_suspect_and_stays_out_of_the_baseline():
    steps = history_verdicts(_history([10, 10, 10, 10, 10, 13, 10, 10]))
    assert [s.status for s in steps] == ["no-baseline", "~", "~", "~", "~", "suspect", "~", "~"]
    assert 5 not in steps[6].baseline_runs  # the suspect run is not pooled into later baselines
    assert steps[6].baseline_runs == (1, 2, 3, 4) or steps[6].baseline_runs == (0, 1, 2, 3, 4)


def test_two_bad_nights_confirm_a_regression_then_it_becomes_the_new_normal():
    steps = history_verdicts(_history([10] * 6 + [12] * 10), window=5)
    statuses = [s.status for s in steps]
    assert statuses[6:8] == ["suspect", "regression"]
    assert statuses[-1] == "~"  # absorbed after the window fills with the new level
    assert steps[7].baseline_runs == (1, 2, 3, 4, 5)  # judged against the pre-shift runs


def test_reference_baseline_replaces_the_window():
    runs = _history([12, 12, 12])
    steps = history_verdicts(runs, reference=list(lognormal(10.0, 0.02, 60, 99)))
    assert [s.status for s in steps] == ["suspect", "regression", "regression"]
    with pytest.raises(UserError, match="window"):
        history_verdicts(runs, window=0)


def test_night_to_night_margin():
    assert night_to_night_margin([10.0, 11.0]) == 0.0  # too few runs for a spread
    assert night_to_night_margin([10.0] * 5) == 0.0
    quiet = night_to_night_margin([10.0, 10.1, 9.9, 10.05, 9.95])
    noisy = night_to_night_margin([10.0, 11.0, 9.0, 10.5, 9.5])
    assert 0.0 < quiet < 0.05 < noisy


def test_a_noisy_window_raises_the_bar_and_it_is_reported():
    # Run medians scatter by ~6% night to night; then two nights ~18% slower than the window.
    levels = [10.0, 9.0, 10.3, 9.1, 10.2, 9.2, 10.9, 10.9]
    steps = history_verdicts(_history(levels))
    last = steps[-1]
    window_medians = [float(np.median(_history(levels)[j])) for j in last.baseline_runs]
    assert last.threshold_used == pytest.approx(night_to_night_margin(window_medians, 0.9))
    assert last.threshold_used > 0.05 and last.comparison.threshold == last.threshold_used
    assert last.status == "regression"  # 18% clears a ~10% bar
    # A stricter margin (99% bound) says this machine's scatter hides an 18% step ...
    assert [s.status for s in history_verdicts(_history(levels), noise_quantile=0.99)][-2:] == [
        "~",
        "~",
    ]
    # ... and without a margin only the 5% threshold applies.
    plain = history_verdicts(_history(levels), noise_quantile=None)
    assert {s.threshold_used for s in plain} == {0.05}
    assert plain[-1].status == "regression"


def test_change_points_finds_level_shifts_only():
    assert change_points([10, 10.1, 9.9, 10, 10.05, 12, 12.1, 11.9]) == [5]
    assert change_points([10, 10.1, 9.9, 10.0, 10.2, 9.8]) == []
    assert change_points([10, 10, 10, 10, 10.3, 10.3, 10.3]) == []  # 3% < min_effect
    assert change_points([10, 10, 10, 12, 12, 12, 15, 15, 15]) == [3, 6]
    assert last_shift([10, 10, 10, 10, 13]) == 4
    assert last_shift([10.0]) is None
    with pytest.raises(UserError):
        change_points([1.0, -1.0])


# --- does it cry wolf? (real noise, committed fixture) ------------------------------------------


def test_noise_study_on_real_noise_meets_targets_for_nightly():
    """Nightly rule (defaults) on real noise: <= 1% confirmed false alarms, >= 95% of 20% caught.

    The fixture holds 40 rigorous-protocol rounds of a conv net on the shared 2-core dev
    machine (load 5-9), wall clock and thread CPU time of the same calls. The targets hold
    for CPU-time samples with 5 rounds pooled per night; wall-clock noise there swings
    rounds by up to 2x and no 5% rule meets them (measured rates: docs/nightly.md).
    """
    doc = json.loads(NOISE_FIXTURE.read_text())
    rounds = [r["cpu_samples_ms"] for r in doc["rounds"]]
    assert len(rounds) >= 35 and all(len(r) >= 30 for r in rounds)
    s = noise_study(rounds, slowdowns=(0.10, 0.20), rounds_per_night=5, trials=300)
    assert s.nightly_false_alarm.rate <= 0.01, s.render()
    assert s.nightly_detection[0.20].rate >= 0.95, s.render()
    # Single comparisons (no confirmation, no noise margin) are far less forgiving here:
    # that is why the nightly job confirms over two nights.
    assert s.pair_false_alarm.rate > s.nightly_false_alarm.rate


def test_nightly_does_not_cry_wolf_on_real_encoder_wall_clock_noise():
    """The harness stores wall-clock samples: on real FastViTHD noise the nightly rule (5 rounds
    a night, window 5, two-night confirmation) keeps false alarms <= 1% and catches 20%."""
    doc = json.loads(ENCODER_NOISE_FIXTURE.read_text())
    rounds = [r["samples_ms"] for r in doc["rounds"]]
    assert len(rounds) == 40 and "fastvithd" in doc["workload"]
    s = noise_study(rounds, slowdowns=(0.10, 0.20), rounds_per_night=5, trials=300)
    assert s.nightly_false_alarm.rate <= 0.01, s.render()
    assert s.nightly_detection[0.20].rate >= 0.95, s.render()
    assert s.nightly_detection[0.10].rate >= 0.90, s.render()


def test_noise_study_catches_a_bad_statistic():
    # The same machinery must show a broken rule crying wolf: no size threshold, alpha 0.5.
    rounds = [list(lognormal(10.0 * (1 + 0.03 * (i % 3)), 0.02, 40, i)) for i in range(12)]
    s = noise_study(rounds, threshold=0.0, alpha=0.5, window=3, rounds_per_night=1, trials=100)
    assert s.pair_false_alarm.rate > 0.2


# --- the command ------------------------------------------------------------------------------


def _store_run(
    store, run_id, medians, machine="m1", n=40, protocol="rigorous", dtype="float32", seed=0
):
    from harness.protocol import Measurement
    from harness.stats import summarize
    from harness.store import MeasurementKey

    store.create_run(
        "test", {}, {"machine_id": machine, "git": {"commit": f"c-{run_id}"}}, run_id=run_id
    )
    for i, (name, med) in enumerate(medians.items()):
        s = [float(x) for x in lognormal(med, 0.02, n, seed * 100 + i)]
        key = MeasurementKey(
            "encoder", name, resolution=256, tokens=16, protocol=protocol, dtype=dtype
        )
        store.add_measurement(
            run_id, key, Measurement(samples_ms=s, stats=summarize(s), protocol=protocol, threads=1)
        )
    store.set_run_status(run_id, "done")
    return run_id


def test_cli_compare_runs_exit_codes_and_json(db_url, capsys):
    from harness.store import Store

    st = Store(db_url)
    _store_run(st, "base", {"enc-a": 10.0, "enc-b": 20.0}, seed=1)
    _store_run(st, "same", {"enc-a": 10.0, "enc-b": 20.0}, seed=2)
    _store_run(st, "slow", {"enc-a": 10.0, "enc-b": 24.0}, seed=3)
    assert main(["compare", "--baseline", "base", "--candidate", "same"]) == 0
    out = capsys.readouterr().out
    assert "encoder enc-a@256" in out and "ratio [95% CI]" in out and "0 regression(s)" in out

    # Samples only (--run-to-run off): the 20% slowdown of enc-b is a regression.
    argv = ["compare", "--baseline", "base", "same", "--candidate", "slow", "--json"]
    assert main([*argv, "--run-to-run", "off"]) == 1
    doc = json.loads(capsys.readouterr().out)
    verdicts = {r["label"]: r["verdict"] for r in doc["rows"]}
    assert verdicts == {"encoder enc-a@256": "~", "encoder enc-b@256": "regression"}
    assert doc["rows"][1]["n_baseline"] == 80  # two baseline runs pooled
    assert doc["rows"][1]["ratio_ci_low"] > 1.05
    assert doc["run_to_run"] is None and doc["rows"][1]["run_sd"] == 0.0

    # By default the machine's run-to-run variance is in the interval. Two earlier runs and
    # two keys are too little history, so the default sd (8% per run) applies: two runs of
    # unchanged code move that much on a shared machine, and 20% is no longer shown.
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["run_to_run"]["source"] == "default" and doc["run_to_run"]["sd"] == 0.08
    b = doc["rows"][1]
    assert b["verdict"] == "~" and b["ratio_ci_low"] < 1.0 < b["ratio_ci_within_low"]
    assert b["run_sd"] == pytest.approx(0.08 * (1 + 1 / 2) ** 0.5)  # candidate + 2 pooled runs
    # ... and a stated sd that the machine's history would give is honoured
    assert main([*argv, "--run-to-run", "0.02"]) == 1
    capsys.readouterr()
    # A 60% slowdown stands out of the default's band: a regression, and the text says why.
    _store_run(st, "slower", {"enc-a": 10.0, "enc-b": 32.0}, seed=4)
    assert main(["compare", "--baseline", "base", "--candidate", "slower"]) == 1
    out = capsys.readouterr().out
    assert "run-to-run variance: sd 8.0% of log median per run" in out
    assert "AND CI above 1" in out and "1 regression(s)" in out
    assert main([*argv, "--run-to-run", "bogus"]) == 2
    assert "--run-to-run must be auto, off or" in capsys.readouterr().err

    # A 25% threshold turns the 20% slowdown into "no change shown".
    assert (
        main(
            ["compare", "--baseline", "base", "--candidate", "slow", "--threshold", "0.25"]
            + ["--run-to-run", "off"]
        )
        == 0
    )


def test_cli_compare_bad_input_exits_2(db_url, capsys):
    from harness.store import Store

    st = Store(db_url)
    _store_run(st, "base", {"enc": 10.0})
    _store_run(st, "other-machine", {"enc": 10.0}, machine="m2")
    _store_run(st, "fp16", {"enc": 10.0}, dtype="float16")
    _store_run(st, "tiny", {"enc": 10.0}, n=3)
    assert main(["compare", "--baseline", "nope", "--candidate", "base"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert main(["compare", "--baseline", "base", "--candidate", "other-machine"]) == 2
    assert "machine_id" in capsys.readouterr().err
    assert main(["compare", "--baseline", "base", "--candidate", "fp16"]) == 2
    assert "dtype" in capsys.readouterr().err
    assert main(["compare", "--baseline", "base", "--candidate", "tiny"]) == 2
    assert "too few samples" in capsys.readouterr().err
    assert main(["compare", "--baseline", "base", "--candidate", "missing.csv"]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_cli_compare_accepts_measurement_exports(db_url, tmp_path, capsys, suffix):
    from harness.store import Store

    st = Store(db_url)
    _store_run(st, "base", {"enc": 10.0}, seed=1)
    _store_run(st, "slow", {"enc": 15.0}, seed=2)
    base_file = st.export(tmp_path / f"base{suffix}", ["base"])
    assert main(["compare", "--baseline", str(base_file), "--candidate", "slow", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"][0]["verdict"] == "regression" and doc["rows"][0]["n_baseline"] == 40
    assert doc["baseline"] == [f"file {base_file}"]


def test_malformed_samples_in_a_csv_is_a_one_line_error(tmp_path, capsys):
    from harness.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("name,samples_ms\nx,abc\n")
    assert main(["compare", "--baseline", str(bad), "--candidate", str(bad)]) == 2
    assert "samples_ms is not a JSON list" in capsys.readouterr().err
    # a scalar, nested lists, a string inside: the same line, never a traceback
    for cell in ("5", '"[1.0, [2]]"', '"[1.0, ""x""]"'):
        bad.write_text(f"name,samples_ms\nx,{cell}\n")
        assert main(["compare", "--baseline", str(bad), "--candidate", str(bad)]) == 2, cell
        err = capsys.readouterr().err
        assert "row 2: samples_ms is not a JSON list of numbers" in err and err.count("\n") == 1


def test_min_samples_below_two_is_refused(tmp_path, capsys):
    from harness.cli import main

    f = tmp_path / "a.csv"
    f.write_text('name,samples_ms\nx,"[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]"\n')
    for n in ("0", "-3", "1"):
        assert (
            main(["compare", "--baseline", str(f), "--candidate", str(f), "--min-samples", n]) == 2
        )
        assert "--min-samples must be at least 2" in capsys.readouterr().err
    assert main(["compare", "--baseline", str(f), "--candidate", str(f), "--min-samples", "2"]) == 0


def test_compare_false_alarm_script_counts_verdicts_per_policy(tmp_path, capsys):
    import importlib.util

    from harness.store import Store

    spec = importlib.util.spec_from_file_location(
        "compare_false_alarms", Path(__file__).parents[1] / "scripts" / "compare_false_alarms.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = tmp_path / "pair.db"
    st = Store(f"sqlite:///{path}")
    # back to back, unchanged code: enc-b moved 10% between the runs (the machine)
    _store_run(st, "r1", {"enc-a": 10.0, "enc-b": 20.0}, protocol="standard", seed=1)
    _store_run(st, "r2", {"enc-a": 10.0, "enc-b": 22.0}, protocol="standard", seed=2)
    assert mod.main([str(path)]) == 0
    out = capsys.readouterr().out
    lines = {tuple(line.split()[:2]): line.split() for line in out.splitlines()[3:]}
    # samples only: the 10% move is a false regression; with the run term it is not
    assert lines[("raw", "1.0")][4] == "50%" and lines[("shipped", "1.0")][4] == "0%"
    assert lines[("shipped", "2.0")][4] == "100%"  # a real 2x slowdown is still caught
    with pytest.raises(SystemExit) as e:
        mod.main([str(tmp_path / "missing.db")])
    assert e.value.code == 2 and "no such file" in capsys.readouterr().err
    assert mod.main([str(path), "--protocol", "nosuch"]) == 2
    assert "protocol 'nosuch'" in capsys.readouterr().err
    few = tmp_path / "few.db"
    st2 = Store(f"sqlite:///{few}")
    _store_run(st2, "r1", {"enc-a": 10.0}, protocol="standard", n=3, seed=1)
    _store_run(st2, "r2", {"enc-a": 10.0}, protocol="standard", n=3, seed=2)
    assert mod.main([str(few)]) == 2  # too few samples to compare: one line, not a traceback
    assert "too few samples" in capsys.readouterr().err


def test_cli_compare_run_to_run_sources_and_bad_stored_values(db_url, tmp_path, capsys):
    from harness.protocol import Measurement
    from harness.stats import summarize
    from harness.store import MeasurementKey, Store

    st = Store(db_url)
    _store_run(st, "base", {"enc-a": 10.0}, seed=1)
    st.create_run("test", {}, {"machine_id": "m1", "git": {"commit": "c"}}, run_id="cand")
    s = [float(x) for x in lognormal(10.0, 0.02, 40, 7)]
    key = MeasurementKey("encoder", "enc-a", resolution=256, tokens=16, protocol="rigorous")
    st.add_measurement(
        "cand",
        key,
        Measurement(samples_ms=s, stats=summarize(s), protocol="rigorous", threads=1),
        extra={"run_to_run": {"sd": 0.03, "source": "history"}},
    )
    st.set_run_status("cand", "done")
    # no usable history in the store: the sd the candidate was measured with, for run and file
    assert main(["compare", "--baseline", "base", "--candidate", "cand", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_to_run"]["sd"] == 0.03
    f = st.export(tmp_path / "cand.json", ["cand"])
    assert main(["compare", "--baseline", "base", "--candidate", str(f), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_to_run"]["source"] == "rows"
    # a stored sd outside [0, 0.5] is refused, naming the file
    doc = json.loads(Path(f).read_text())
    rows = doc["measurements"] if isinstance(doc, dict) else doc
    for r in rows:
        extra = json.loads(r["extra"]) if isinstance(r["extra"], str) else r["extra"]
        extra["run_to_run"]["sd"] = 5.0
        r["extra"] = extra
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert main(["compare", "--baseline", "base", "--candidate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "run_to_run.sd" in err and err.count("\n") == 1
    # the same baseline twice is counted once, and says so
    assert main(["compare", "--baseline", "base", "base", "--candidate", "cand", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"][0]["n_baseline"] == 40 and "base again (counted once)" in out["baseline"]


def test_rows_of_another_context_on_one_side_are_named():
    base = [_row(seed=1, run_id="a"), _row(seed=2, run_id="f", backend="fake")]
    t = compare_tables(base, [_row(seed=3, run_id="c")])
    assert t.rows[0].result.n_baseline == 50
    assert t.other_context == ["encoder enc@256 (baseline: fake/cpu/float32/rigorous)"]
