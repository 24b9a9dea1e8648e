"""`vlm-pareto search`: Optuna over the fake backend with known answers (no torch)."""

from __future__ import annotations

import json
import math

import optuna
import pandas as pd
import pytest

from harness import cli
from harness.backends import fake
from harness.errors import UserError
from harness.search import (
    CONSTRAINT,
    AccuracySurrogate,
    Config,
    Evaluator,
    Search,
    build_space,
    load_accuracy,
    parse_range,
    sweep_config,
    synthetic_accuracy,
)
from harness.store import MeasurementKey, Store


def small_space(llms=("qwen2-0.5b", "qwen2-1.5b"), rng=(256, 512)):
    cfg = sweep_config(encoders=["fastvithd", "fastvit"], llms=list(llms), backend="fake")
    return build_space(cfg, resolution_range=rng)


def exhaustive(space, db, budget, by_col="ttft_ci_high_ms"):
    """The known answer: measure every configuration, score it, pick the best feasible."""
    store = Store(db)
    ev = Evaluator(space, store, store.create_run("grid", {}, {"machine_id": "m"}))
    rows = []
    for c in space.configs():
        r = ev.ttft(c)
        acc, _ = synthetic_accuracy(c, space.tokens(c), space.llm_params_b[c.llm])
        rows.append({"config": c, "accuracy": acc, "ttft_ms": r["ttft_ms"], "basis": r[by_col]})
    df = pd.DataFrame(rows)
    fit = df[df["basis"] <= budget].sort_values(["accuracy", "ttft_ms"], ascending=[False, True])
    return df, fit.iloc[0]["config"]


def test_space_widens_preset_in_stride_steps():
    space = build_space(sweep_config(preset="paper_fig4", backend="fake"))
    hd, fv = space.encoders["fastvithd"], space.encoders["fastvit"]
    assert hd.resolutions["none"] == tuple(range(256, 1537, 64))
    assert fv.resolutions["none"] == tuple(range(256, 1025, 32))
    assert list(space.llms) == ["qwen2-0.5b", "qwen2-1.5b", "qwen2-7b"]
    assert len(space.configs()) == (21 + 25) * 3
    assert space.tokens(Config("fastvithd", 1024, "none", "qwen2-7b")) == 256
    # factorized: far fewer unique measurements than 3 per configuration
    assert space.grid_measurements() < 3 * len(space.configs())


def test_tilings_keep_only_resolutions_on_the_tile_grid():
    cfg = sweep_config(encoders=["fastvithd"], llms=["qwen2-0.5b"], backend="fake")
    space = build_space(cfg, resolution_range=(1024, 2048), tilings=["none", "2x2+overview"])
    tiled = space.encoders["fastvithd"].resolutions["2x2+overview"]
    assert tiled == tuple(range(1024, 2049, 128))  # tile side must be a multiple of 64
    assert space.tokens(Config("fastvithd", 2048, "2x2+overview", "qwen2-0.5b")) == 1280


def test_finds_the_known_best_feasible_point_and_respects_the_budget(db_url, tmp_path):
    space = small_space(rng=(256, 640))  # 40 configurations; the search evaluates 20
    budget = 1700.0  # best: fastvithd@384 + qwen2-1.5b, 0.4 points above the runner-up
    grid, expected = exhaustive(space, f"sqlite:///{tmp_path / 'grid.db'}", budget)
    s = Search(space, synthetic_accuracy, db=db_url, budget_ms=budget, seed=0, study_name="known")
    res = s.optimize(20)
    assert len(res.points) == 20 < len(grid)
    best = res.best
    assert Config(best["encoder"], best["resolution"], best["tiling"], best["llm"]) == expected
    assert best["budget_ttft_ms"] <= budget and best["accuracy_source"] == "synthetic"
    assert math.isclose(
        best["ttft_ms"],
        best["encoder_ms"] + best["projector_ms"] + best["prefill_ms"],
        rel_tol=1e-9,
    )
    # every front point is feasible and non-dominated among the feasible points evaluated
    feas = res.points[res.points["feasible"]]
    for o in res.front:
        assert o["budget_ttft_ms"] <= budget
        assert not ((feas["accuracy"] > o["accuracy"]) & (feas["ttft_ms"] < o["ttft_ms"])).any()
    # constraints as Optuna sees them: ttft_by_ci_high - budget, feasible iff <= 0
    for t in s.study.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
        p = t.user_attrs["point"]
        assert t.constraints[CONSTRAINT] == pytest.approx(p["budget_ttft_ms"] - budget)
        assert p["feasible"] == (t.constraints[CONSTRAINT] <= 0)
    assert all(t.constraints[CONSTRAINT] <= 0 for t in s.study.best_trials)
    assert res.measurements_total <= space.grid_measurements()


def test_resume_continues_the_study_without_remeasuring(db_url, monkeypatch):
    calls = []
    real = fake.fake_encoder
    monkeypatch.setattr(fake, "fake_encoder", lambda *a, **k: calls.append(a[:3]) or real(*a, **k))
    space = small_space()
    first = Search(space, synthetic_accuracy, db=db_url, budget_ms=3000, study_name="s1").optimize(
        6
    )
    before = {
        (r["kind"], r["name"], r["resolution"], r["tokens"], r["in_dim"]): r["created_at"]
        for r in Store(db_url).measurement_rows(run_ids=[first.run_id])
    }
    again = Search(
        space, synthetic_accuracy, db=db_url, budget_ms=3000, study_name="s1", resume=True
    )
    # configurations of the first session are known without measuring them again
    assert set(again._seen) == {
        Config(*(p[k] for k in ("encoder", "resolution", "tiling", "llm")))
        for p in first.points.to_dict("records")
    }
    second = again.optimize(6)
    assert second.run_id == first.run_id and len(second.points) == 12 and second.trials_total >= 12
    rows = Store(db_url).measurement_rows(run_ids=[first.run_id])
    for r in rows:  # nothing measured in the first session was measured (rewritten) again
        k = (r["kind"], r["name"], r["resolution"], r["tokens"], r["in_dim"])
        assert before.get(k, r["created_at"]) == r["created_at"]
    assert len(calls) == len(set(calls))  # each encoder setting measured once over both sessions
    assert (
        second.measurements_total
        == len(rows)
        == first.measurements_total + second.measurements_session
    )


def test_resume_refuses_other_settings(db_url):
    space = small_space()
    Search(space, synthetic_accuracy, db=db_url, budget_ms=3000, study_name="s").optimize(1)
    with pytest.raises(UserError, match="other settings.*budget_ms"):
        Search(space, synthetic_accuracy, db=db_url, budget_ms=1000, study_name="s", resume=True)
    with pytest.raises(UserError, match="already exists"):
        Search(space, synthetic_accuracy, db=db_url, budget_ms=3000, study_name="s")
    with pytest.raises(UserError, match="unknown study to resume 't'"):
        Search(space, synthetic_accuracy, db=db_url, budget_ms=3000, study_name="t", resume=True)


def test_resume_mismatch_names_the_setting_that_differs_and_seeds_name_studies(db_url):
    space = small_space()
    Search(space, synthetic_accuracy, db=db_url, budget_ms=3000, study_name="w").optimize(1)
    narrower = small_space(rng=(256, 384))
    with pytest.raises(UserError) as e:
        Search(narrower, synthetic_accuracy, db=db_url, budget_ms=3000, study_name="w", resume=True)
    msg = str(e.value)
    # the leaf that differs, not two 80-character prefixes of the same space
    assert "space." in msg and "stored" in msg and "now" in msg and "budget_ms" not in msg
    # a default study name depends on the seed: another seed is another study, not a clash
    a = Search(space, synthetic_accuracy, db=db_url, budget_ms=2000)
    b = Search(space, synthetic_accuracy, db=db_url, budget_ms=2000, seed=1)
    assert a.study_name != b.study_name and b.study_name.endswith("-seed1")


def test_surrogate_recovers_a_linear_law_and_needs_data():
    rows = []
    for enc, off in (("a", 0.0), ("b", 2.0)):
        for tokens in (16, 64, 256, 1024):
            for p in (0.5, 1.5, 7.0):
                rows.append(
                    {
                        "encoder": enc,
                        "tiling": "none",
                        "recipe": "r",
                        "tokens": tokens,
                        "llm_params_b": p,
                        "accuracy": 40 + off + 3 * math.log2(tokens) + 2 * math.log2(p),
                    }
                )
    s = AccuracySurrogate.fit(pd.DataFrame(rows), ridge=1e-6)
    assert s.predict("b", "none", "r", 128, 3.0) == pytest.approx(
        42 + 21 + 2 * math.log2(3.0), abs=1e-3
    )
    assert s.loo_rmse < 1e-3
    # no extrapolation beyond the tokens seen: 4096 tokens predicts like 1024
    assert s.predict("a", "none", "r", 4096, 1.5) == pytest.approx(
        s.predict("a", "none", "r", 1024, 1.5)
    )
    with pytest.raises(UserError, match="no accuracy to search on"):
        AccuracySurrogate.fit(pd.DataFrame(rows[:2]))


def test_predicted_accuracy_is_labelled_everywhere(db_url, tmp_path):
    # Paper accuracy (llava-1.5) knows FastViTHD-256 + Vicuna-7B; the rest is predicted.
    cfg = sweep_config(encoders=["fastvithd"], llms=["vicuna-7b"], backend="fake")
    space = build_space(cfg, resolution_range=(256, 384))
    acc = load_accuracy(db=db_url, recipe="llava-1.5")
    assert acc(Config("fastvithd", 256, "none", "vicuna-7b"), 16, 7.0) == (
        pytest.approx(55.42),
        "paper",
    )
    s = Search(space, acc, db=db_url, study_name="p", accuracy_notes=acc.notes)
    res = s.optimize(3)
    src = dict(zip(res.points["resolution"], res.points["accuracy_source"], strict=True))
    assert src.get(256, "paper") == "paper" and {src[r] for r in src if r != 256} == {"predicted"}
    out = res.to_json()
    for o in [out["best"], *out["front"]]:
        assert o["accuracy_source"] == ("paper" if o["resolution"] == 256 else "predicted")
    for t in s.study.get_trials():
        p = t.user_attrs["point"]
        assert p["accuracy_source"] == ("paper" if p["resolution"] == 256 else "predicted")
    assert any("predicted" in n for n in res.notes)
    # the command's report points carry the label too
    rc = cli.main(
        [
            "--db",
            db_url,
            "search",
            "--encoders",
            "fastvithd",
            "--llms",
            "vicuna-7b",
            "--backend",
            "fake",
            "--resolution-range",
            "256:384",
            "--trials",
            "2",
            "--quiet",
            "--report",
            str(tmp_path / "r"),
        ]
    )
    assert rc == 0
    pts = pd.read_csv(tmp_path / "r" / "points.csv")
    assert set(pts.loc[pts["resolution"] != 256, "accuracy_source"]) == {"predicted"}


def test_store_and_optuna_share_one_database(db_url):
    store = Store(db_url)
    run = store.create_run("x", {}, {"machine_id": "m"})
    storage = optuna.storages.RDBStorage(store.url)
    study = optuna.create_study(storage=storage, study_name="shared")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = Store(db_url)  # reopening sees its schema, not Optuna's tables
    key = MeasurementKey(
        "encoder",
        "fastvit",
        resolution=256,
        backend="fake",
        device="cpu",
        dtype="float32",
        protocol="quick",
    )
    again.add_measurement(run, key, status="skipped", reason="test")
    assert again.get_measurement(run, key)["status"] == "skipped"
    assert (
        len(
            optuna.load_study(
                study_name="shared", storage=optuna.storages.RDBStorage(again.url)
            ).trials
        )
        == 2
    )


def test_cli_json_end_to_end(db_url, capsys):
    rc = cli.main(
        [
            "--db",
            db_url,
            "search",
            "--preset",
            "paper_fig4",
            "--backend",
            "fake",
            "--budget-ms",
            "2500",
            "--trials",
            "8",
            "--json",
            "--study-name",
            "j",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["best"]["budget_ttft_ms"] <= 2500
    assert out["counts"]["configurations"] == 8 and out["counts"]["grid_points"] == 138
    assert 0 < out["counts"]["measurements"] <= 3 * 8
    rc = cli.main(
        [
            "--db",
            db_url,
            "search",
            "--preset",
            "paper_fig4",
            "--backend",
            "fake",
            "--budget-ms",
            "2500",
            "--trials",
            "2",
            "--json",
            "--study-name",
            "j",
            "--resume",
        ]
    )
    assert rc == 0 and json.loads(capsys.readouterr().out)["counts"]["configurations"] == 10


def test_nothing_feasible_exits_1(db_url, capsys):
    rc = cli.main(
        [
            "--db",
            db_url,
            "search",
            "--encoders",
            "fastvit",
            "--llms",
            "qwen2-0.5b",
            "--backend",
            "fake",
            "--resolution-range",
            "256:320",
            "--budget-ms",
            "1",
            "--trials",
            "3",
        ]
    )
    assert rc == 1 and "No evaluated configuration fits" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budget-ms", "0"], "positive"),
        (["--budget-ms", "-3"], "positive"),
        (["--budget-ms", "fast"], "number of milliseconds"),
        (["--budget-ms", "nan"], "positive"),
        (["--resolution-range", "512"], "MIN:MAX"),
        (["--resolution-range", "900:100"], "MIN <= MAX"),
        (
            ["--encoders", "fastvithd", "--llms", "qwen2-0.5b", "--resolution-range", "10:20"],
            "empty space",
        ),
        (["--encoders", "fastvithdd", "--llms", "qwen2-0.5b"], "did you mean 'fastvithd'"),
        (["--encoders", "fastvit", "--llms", "qwen3-0.5b"], "unknown LLM"),
        (["--preset", "paper_fig44"], "did you mean 'paper_fig4'"),
        (["--preset", "paper_fig4", "--backend", "fakee"], "did you mean 'fake'"),
        (["--encoders", "fastvit"], "empty space"),
        (["--preset", "paper_fig4", "--benchmark", "gqaa"], "unknown benchmark"),
        (["--preset", "paper_fig4", "--trials", "-1"], "--trials"),
        (["--preset", "paper_fig4", "--trials", "0"], "--trials 0 measures nothing"),
        (["--preset", "paper_fig4", "--seed", "-1"], "--seed must be in [0, 2**32 - 1]"),
        (["--preset", "paper_fig4", "--seed", "4294967296"], "--seed must be in"),
        (["--preset", "paper_fig4", "--resume"], "--resume needs --study-name"),
    ],
)
def test_bad_input_is_one_line_exit_2(db_url, capsys, args, message):
    rc = cli.main(
        ["--db", db_url, "search", "--backend", "fake", *args]
        if "--backend" not in args
        else ["--db", db_url, "search", *args]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err and err.startswith("vlm-pareto: error:")


def test_parse_range():
    assert parse_range("256:1024") == (256, 1024)
    with pytest.raises(UserError):
        parse_range("a:b")
