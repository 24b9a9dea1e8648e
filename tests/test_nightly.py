"""The nightly job end to end on a real store: history selection, verdicts, report, exit codes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.cli import main
from harness.errors import UserError
from harness.nightly import build_histories, evaluate, run_nightly, select_history
from harness.protocol import Measurement
from harness.stats import summarize
from harness.store import MeasurementKey, Store


def add_run(store, run_id, medians, machine="m1", n=40, protocol="rigorous", seed=0):
    """A run with one encoder measurement per ``{name: median_ms}``, lognormal samples (2%)."""
    store.create_run(
        "vlm-pareto nightly",
        {"preset": "nightly"},
        {"machine_id": machine, "git": {"commit": f"commit-{run_id}"}},
        run_id=run_id,
    )
    rng = np.random.default_rng(seed)
    for name, med in medians.items():
        s = [float(x) for x in rng.lognormal(math.log(med), 0.02, n)]
        key = MeasurementKey("encoder", name, resolution=256, tokens=16, protocol=protocol)
        store.add_measurement(
            run_id, key, Measurement(samples_ms=s, stats=summarize(s), protocol=protocol, threads=1)
        )
    store.set_run_status(run_id, "done")
    return run_id


def history(store, levels, machine="m1", prefix="n", names=("enc-a", "enc-b")):
    """Runs n00, n01, ... with enc-a at each level of ``levels`` and enc-b steady at 20 ms."""
    ids = []
    for i, level in enumerate(levels):
        ids.append(
            add_run(
                store,
                f"{prefix}{i:02d}",
                {names[0]: level, names[1]: 20.0},
                machine=machine,
                seed=i,
            )
        )
    return ids


@pytest.fixture
def store(db_url):
    return Store(db_url)


def test_stable_history_passes_and_writes_the_report(store, tmp_path):
    ids = history(store, [10.0] * 7)
    res = run_nightly(db=store.url, run_id=ids[-1], out=tmp_path / "nightly", date="2026-11-21")
    assert res.exit_code == 0 and not res.confirmed and not res.suspects
    assert {k.label: k.status for k in res.keys} == {
        "encoder enc-a@256": "~",
        "encoder enc-b@256": "~",
    }
    k = res.keys[0]
    assert [r.run_id for r in k.runs] == ids and len(k.medians_ms) == 7
    assert k.steps[-1].baseline_runs == (1, 2, 3, 4, 5)  # the window of 5 previous runs
    assert (
        k.latest is not None
        and k.latest.n_baseline == 200
        and k.latest.ratio_ci_low < 1 < k.latest.ratio_ci_high
    )
    d = tmp_path / "nightly" / "2026-11-21"
    assert res.out_dir == d
    html = (d / "trends.html").read_text()
    assert "enc-a@256" in html and "Plotly.newPlot" in html
    assert '<script src="http' not in html and len(html) > 1_000_000  # plotly.js embedded: offline
    summary = (d / "summary.md").read_text()
    assert summary.startswith("# Nightly ") and "no regression (exit 0)" in summary
    assert "| encoder enc-a@256 |" in summary
    verdicts = json.loads((d / "verdicts.json").read_text())
    assert verdicts["exit_code"] == 0 and len(verdicts["keys"]) == 2
    assert (d / "verdicts.csv").read_text().count("\n") == 3


def test_two_slow_nights_are_a_confirmed_regression_with_its_start(store, tmp_path):
    ids = history(store, [10.0] * 6 + [12.0, 12.0])
    res = run_nightly(db=store.url, run_id=ids[-1], out=tmp_path, date="d")
    assert res.exit_code == 1
    (k,) = res.confirmed
    assert k.label == "encoder enc-a@256"
    assert [s.status for s in k.steps][-2:] == ["suspect", "regression"]
    assert k.shift_run.run_id == ids[6]  # the change point names the first slow night
    assert k.latest.ratio == pytest.approx(1.2, abs=0.03) and k.latest.p_value < 1e-6
    summary = (tmp_path / "d" / "summary.md").read_text()
    assert "**1 confirmed regression(s)** (exit 1)" in summary
    assert f"level shift began at run `{ids[6]}`" in summary and "commit-n06" in summary


def test_one_slow_night_is_only_suspect(store, tmp_path):
    ids = history(store, [10.0] * 6 + [12.0])
    res = run_nightly(db=store.url, run_id=ids[-1], out=tmp_path)
    assert res.exit_code == 0
    assert [k.label for k in res.suspects] == ["encoder enc-a@256"]
    assert "suspect" in (res.out_dir / "summary.md").read_text()


def test_history_is_this_machine_only(store, tmp_path):
    history(store, [10.0] * 3, prefix="a")
    history(store, [30.0] * 3, machine="m2", prefix="b")  # another machine, much slower
    ids = history(store, [10.0] * 3, prefix="c")
    runs = select_history(store, ids[-1])
    assert [r["id"] for r in runs] == ["a00", "a01", "a02", "c00", "c01", "c02"]
    assert evaluate(store, ids[-1]).exit_code == 0
    # Evaluating an older run sees only the runs up to it.
    assert [r["id"] for r in select_history(store, "a01")] == ["a00", "a01"]


def test_first_run_and_new_keys_have_no_baseline(store):
    add_run(store, "first", {"enc": 10.0})
    res = evaluate(store, "first")
    assert [k.status for k in res.keys] == ["no-baseline"] and res.exit_code == 0
    # Same name measured under another protocol is a different history, not a comparison.
    add_run(store, "second", {"enc": 10.0}, protocol="standard")
    res = evaluate(store, "second")
    assert [k.status for k in res.keys] == ["no-baseline"]
    assert res.missing == ["encoder enc@256"]


def test_committed_baseline_file(store, tmp_path):
    ids = history(store, [10.0, 12.0, 12.0])
    base = store.export(tmp_path / "baseline.csv", [ids[0]])
    res = evaluate(store, ids[-1], baseline_file=base)
    assert res.exit_code == 1 and "baseline.csv" in res.baseline
    k = next(k for k in res.keys if k.key["name"] == "enc-a")
    assert k.baseline_median_ms == pytest.approx(10.0, rel=0.03)
    assert [s.status for s in k.steps] == ["~", "suspect", "regression"]

    # A baseline file recorded on another machine is refused, naming the field.
    add_run(store, "elsewhere", {"enc-a": 10.0, "enc-b": 20.0}, machine="m9")
    other = store.export(tmp_path / "other.json", ["elsewhere"])
    with pytest.raises(UserError, match="machine_id differs"):
        evaluate(store, ids[-1], baseline_file=other)


def test_build_histories_is_pure_and_refuses_unlike_baseline_rows():
    runs = [{"id": "r0", "created_at": "1"}, {"id": "r1", "created_at": "2"}]
    rows = [
        {
            "run_id": rid,
            "kind": "encoder",
            "name": "e",
            "machine_id": "m",
            "protocol": "p",
            "samples_ms": [10.0 + 0.01 * j for j in range(10)],
        }
        for rid in ("r0", "r1")
    ]
    hist, missing = build_histories(runs, rows)
    assert [k.status for k in hist] == ["~"] and missing == []
    ref = [{**rows[0], "protocol": "other"}]
    with pytest.raises(UserError, match="differ in protocol"):
        build_histories(runs, rows, reference_rows=ref)


def test_cli_nightly_exit_codes(store, tmp_path, capsys):
    ids = history(store, [10.0] * 6 + [13.0, 13.0])
    out = tmp_path / "reports"
    assert (
        main(["--db", store.url, "nightly", "--run-id", ids[-1], "--out", str(out), "--date", "x"])
        == 1
    )
    printed = capsys.readouterr().out
    assert "confirmed regression" in printed and str(out / "x") in printed
    assert (
        main(["--db", store.url, "nightly", "--run-id", ids[5], "--out", str(out), "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["exit_code"] == 0
    assert main(["--db", store.url, "nightly", "--run-id", "nope", "--out", str(out)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert (
        main(
            ["--db", store.url, "nightly", "--run-id", ids[-1], "--window", "0", "--out", str(out)]
        )
        == 2
    )


def test_nightly_end_to_end_on_the_quick_preset(db_url, tmp_path, capsys):
    """Two real nightly runs of the quick preset through the sweep engine: stored, compared, reported."""
    args = [
        "--db",
        db_url,
        "nightly",
        "--preset",
        "quick",
        "--protocol",
        "quick",
        "--rounds",
        "2",
        "--out",
        str(tmp_path / "nightly"),
    ]
    assert main([*args, "--date", "night1"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--date", "night2"]) == 0  # one night can at most be "suspect"
    second = capsys.readouterr().out
    runs = Store(db_url).list_runs()
    assert len(runs) == 2 and all(r["status"] == "done" for r in runs)
    rows = Store(db_url).measurement_rows([runs[-1]["id"]])
    canary = [r for r in rows if r["kind"] == "canary"]  # the machine-speed canary (docs/noise.md)
    rows = [r for r in rows if r["kind"] != "canary"]
    assert rows and all(r["extra"]["rounds"] == 2 and r["protocol"] == "quick" for r in rows)
    assert len(canary) == 1 and [c["at"] for c in canary[0]["extra"]["canary"]["checkpoints"]] == [
        "start",
        "before round 2",
        "end",
    ]
    assert runs[0]["id"] in first and runs[1]["id"] in second
    for night in ("night1", "night2"):
        folder = tmp_path / "nightly" / night
        assert (folder / "summary.md").exists() and (folder / "trends.html").exists()
    assert "no baseline yet" in (tmp_path / "nightly" / "night1" / "summary.md").read_text()


def test_cli_nightly_unknown_preset(db_url, tmp_path, capsys):
    assert main(["--db", db_url, "nightly", "--preset", "nightlly", "--out", str(tmp_path)]) == 2
    assert "did you mean 'nightly'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--window", "0"], "--window must be at least 1"),
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--threshold", "-1"], "threshold must be a fraction"),
        (["--threshold", "nan"], "threshold must be a fraction"),
        (["--alpha", "2"], "alpha must be in (0, 1)"),
        (["--date", "../../etc"], "--date must be one folder name"),
        (["--date", "a/b"], "--date must be one folder name"),
        (["--protocol", "bogus"], "unknown protocol 'bogus'"),
        (["--baseline", "/nonexistent/b.csv"], "no such baseline file"),
    ],
)
def test_cli_nightly_bad_settings_fail_before_measuring(tmp_path, capsys, args, message):
    db = tmp_path / "store.db"
    out = tmp_path / "out"
    assert main(["--db", f"sqlite:///{db}", "nightly", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not db.exists() and not out.exists()  # nothing measured, nothing written


def test_cli_nightly_bad_settings_with_a_stored_run(store, tmp_path, capsys):
    rid = add_run(store, "r1", {"enc-a": 10.0})
    for args in (["--threshold", "-1"], ["--alpha", "0"], ["--date", ".."]):
        out = tmp_path / "reports"
        code = main(["--db", store.url, "nightly", "--run-id", rid, *args, "--out", str(out)])
        assert code == 2, args
    assert not (tmp_path / "reports").exists()


def test_a_night_with_a_crashed_point_still_confirms_a_regression(store):
    ids = history(store, [10.0] * 6 + [13.0, 13.0])
    store.set_run_status(ids[-2], "partial")  # one point of that night crashed
    store.set_run_status(ids[-1], "partial")
    result = evaluate(store, ids[-1])
    assert [k.label for k in result.confirmed] and result.exit_code == 1


def test_failed_points_of_tonight_fail_the_job(store, tmp_path):
    ids = history(store, [10.0] * 3)
    store.add_measurement(
        ids[-1],
        MeasurementKey("prefill", "qwen2-0.5b", tokens=16, protocol="rigorous"),
        status="failed",
        reason="RuntimeError: boom",
    )
    result = run_nightly(run_id=ids[-1], db=store.url, out=tmp_path)
    assert result.exit_code == 1 and "boom" in result.failed[0]
    assert "failed to measure" in next(tmp_path.glob("*/summary.md")).read_text()


def test_a_short_history_uses_the_run_to_run_bar(store, tmp_path):
    from harness.compare import history_verdicts
    from harness.compare.history import run_to_run_margin

    # Two nights 12% slower than the first, on a machine with no history worth the name:
    # this shared VM's runs of unchanged code land 10-25% apart, so this is not a regression.
    ids = history(store, [10.0, 11.2, 11.2])
    res = evaluate(store, ids[-1])
    k = next(k for k in res.keys if k.key["name"] == "enc-a")
    bar = run_to_run_margin(0.08, 1)
    assert bar == pytest.approx(math.expm1(1.2815516 * 0.08 * math.sqrt(2)), rel=1e-6)
    assert k.steps[1].threshold_used == pytest.approx(bar)  # a 1-run baseline
    assert k.steps[-1].threshold_used == pytest.approx(run_to_run_margin(0.08, 2))
    assert [s.status for s in k.steps] == ["no-baseline", "~", "~"] and res.exit_code == 0
    assert "run-to-run bound (sd 8.0% of log median" in (res.run_to_run or "")
    assert res.to_dict()["run_to_run"] == res.run_to_run
    # a real 40% slowdown still clears it and is confirmed on the second night
    ids = history(store, [10.0, 14.0, 14.0], prefix="m", names=("enc-c", "enc-d"))
    k = next(k for k in evaluate(store, ids[-1]).keys if k.key["name"] == "enc-c")
    assert [s.status for s in k.steps] == ["no-baseline", "suspect", "regression"]
    # without the term (run_sd 0, the pure function's default) the 12% nights were alarms
    rng = np.random.default_rng(0)
    runs = [list(rng.lognormal(math.log(m), 0.02, 50)) for m in (10.0, 11.2, 11.2)]
    assert [s.status for s in history_verdicts(runs)] == ["no-baseline", "suspect", "regression"]
    assert [s.status for s in history_verdicts(runs, run_sd=0.08)][-1] == "~"
