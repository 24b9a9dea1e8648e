"""The Optuna study: proposals, the budget constraint, results and resume (see the
package docstring, ``harness.search``)."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import UserError, suggest
from harness.search.accuracy import AccuracyModel
from harness.search.evaluator import Evaluator
from harness.search.space import Config, SearchSpace

#: the study's user attribute holding the settings a resume must match
STUDY_ATTR = "vlm_pareto_search"
SEARCH_SCHEMA = 1
CONSTRAINT = "ttft_budget"
#: consecutive repeated proposals after which a session stops (see Search.optimize)
_MAX_REPEATS = 50
BASES = ("ci-high", "p90", "median")
_BASIS_COLUMN = {"ci-high": "ttft_ci_high_ms", "p90": "ttft_p90_ms", "median": "ttft_ms"}


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TrialRecord:
    """One trial: what was proposed, what it cost, what it scored."""

    number: int
    config: Config
    state: str  # complete | failed | duplicate
    accuracy: float | None
    accuracy_source: str | None
    ttft_ms: float | None
    budget_ttft_ms: float | None
    feasible: bool
    new_measurements: int
    run_measurements: int  # after this trial
    reason: str | None = None


@dataclass
class SearchResult:
    """What a search found (this session plus earlier sessions of the same study)."""

    study_name: str
    storage: str
    run_id: str
    settings: dict[str, Any]
    points: pd.DataFrame  # joined-points table of the distinct configurations evaluated
    best: dict[str, Any] | None
    front: list[dict[str, Any]]
    trials_total: int
    trials_session: int
    measurements_total: int
    measurements_session: int
    grid_points: int
    grid_measurements: int
    trace: list[TrialRecord]
    notes: list[str]

    @property
    def exit_code(self) -> int:
        return 0 if self.best is not None else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "study": self.study_name,
            "storage": _redact(self.storage),
            "run_id": self.run_id,
            "settings": self.settings,
            "best": self.best,
            "front": self.front,
            "counts": {
                "trials": self.trials_total,
                "trials_this_session": self.trials_session,
                "configurations": int(len(self.points)),
                "measurements": self.measurements_total,
                "measurements_this_session": self.measurements_session,
                "grid_points": self.grid_points,
                "grid_measurements": self.grid_measurements,
            },
            "notes": self.notes,
        }


def _redact(url: str) -> str:
    """Never print a database password."""
    try:
        import sqlalchemy as sa

        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


# --------------------------------------------------------------------------- the study


@dataclass(frozen=True)
class SearchSettings:
    """Everything a resumed study must agree on (stored as a study user attribute)."""

    budget_ms: float | None
    by: str
    benchmark: str
    recipe: str
    backend: dict[str, Any]
    protocol: str
    space: dict[str, Any]
    schema: int = SEARCH_SCHEMA


def check_budget(value: Any) -> float | None:
    """A positive finite number of ms (or None for no budget); UserError otherwise."""
    if value is None:
        return None
    from harness.choose import check_budget as _check

    return _check(value)


def _basis(row: dict[str, Any], by: str) -> float:
    order = {
        "ci-high": ("ttft_ci_high_ms", "ttft_p90_ms", "ttft_ms"),
        "p90": ("ttft_p90_ms", "ttft_ms"),
        "median": ("ttft_ms",),
    }[by]
    for col in order:
        v = row.get(col)
        if v is not None and math.isfinite(float(v)):
            return float(v)
    return math.nan


def initial_design(space: SearchSpace) -> list[Config]:
    """The first trials of a pruned search: each encoder (and tiling) at its lowest and its
    highest resolution, the LLMs taken in turn, so the online cost model sees every name and
    both ends of every resolution range before it is asked to skip anything."""
    llms = list(space.llms)
    out: list[Config] = []
    for enc in space.encoders.values():
        for tiling, rs in enc.resolutions.items():
            for r in dict.fromkeys((rs[0], rs[-1])):
                out.append(Config(enc.name, int(r), tiling, llms[len(out) % len(llms)]))
    return out


def _params(c: Config, space: SearchSpace) -> dict[str, Any]:
    """The trial parameters that make :func:`_suggest` return ``c``."""
    return {
        "encoder": c.encoder,
        f"tiling[{c.encoder}]": c.tiling,
        f"resolution[{c.encoder}|{c.tiling}]": c.resolution,
        "llm": c.llm,
    }


def _sampler(seed: int, n_done: int, n_startup: int = 10) -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # multivariate + group: the resolution parameters are conditional on the encoder and
        # tiling chosen; group decomposition models each sub-space jointly. The seed is
        # offset by the trials already done so a resumed study does not replay its proposals.
        return optuna.samplers.TPESampler(
            seed=seed + n_done, multivariate=True, group=True, n_startup_trials=n_startup
        )


def _suggest(trial: Any, space: SearchSpace) -> Config:
    """Draw a configuration; parameter names are stable so a resumed study keeps its model."""
    encoder = trial.suggest_categorical("encoder", list(space.encoders))
    enc = space.encoders[encoder]
    tiling = trial.suggest_categorical(f"tiling[{encoder}]", list(enc.resolutions))
    rs = enc.resolutions[tiling]
    name = f"resolution[{encoder}|{tiling}]"
    steps = set(np.diff(rs).tolist())
    if len(rs) == 1:
        resolution = trial.suggest_categorical(name, [rs[0]])
    elif len(steps) == 1:
        resolution = trial.suggest_int(name, rs[0], rs[-1], step=int(steps.pop()))
    else:  # not an arithmetic series (a gap in the valid resolutions)
        resolution = trial.suggest_categorical(name, list(rs))
    llm = trial.suggest_categorical("llm", list(space.llms))
    return Config(encoder, int(resolution), tiling, llm)


class Search:
    """An Optuna study over ``space`` stored beside the measurements (see module docstring)."""

    def __init__(
        self,
        space: SearchSpace,
        accuracy: AccuracyModel,
        *,
        db: str | None = None,
        study_name: str | None = None,
        resume: bool = False,
        budget_ms: float | None = None,
        by: str = "ci-high",
        benchmark: str = "avg5",
        recipe: str = "llava-1.5",
        seed: int = 0,
        command: str = "vlm-pareto search",
        accuracy_notes: Iterable[str] = (),
        prune: bool = False,
    ):
        import optuna

        from harness.fingerprint import fingerprint
        from harness.store import Store

        if by not in BASES:
            raise UserError(suggest(by, BASES, "--by value"))
        self.space, self.accuracy = space, accuracy
        self.notes = list(space.notes) + list(accuracy_notes)
        # cost-model pruning (harness/predict/prune.py): skip proposals predicted off the frontier
        self.pruner: Any = None
        if prune:
            from harness.predict.prune import CostPruner

            self.pruner = CostPruner()
        self.settings = SearchSettings(
            check_budget(budget_ms),
            by,
            benchmark,
            recipe,
            asdict(space.cfg.backend),
            space.cfg.protocol.name,
            space.signature(),
        )
        # The store first: it creates its tables in an empty database, Optuna adds its own.
        self.store = Store(db)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.RDBStorage(self.store.url)
        names = set(optuna.study.get_all_study_names(storage))
        self.study_name = study_name or _default_name(self.settings, seed)
        if resume and self.study_name not in names:
            raise UserError(
                suggest(self.study_name, names or ["(none)"], "study to resume")
                if names
                else f"no study {self.study_name!r} to resume in {_redact(self.store.url)}"
            )
        if not resume and self.study_name in names:
            raise UserError(
                f"study {self.study_name!r} already exists in {_redact(self.store.url)}; "
                "pass --resume to continue it, or another --study-name"
            )
        fp = fingerprint(threads=space.cfg.protocol.threads or os.cpu_count())
        if resume:
            study = optuna.load_study(study_name=self.study_name, storage=storage)
            stored = study.user_attrs.get(STUDY_ATTR)
            if not stored:
                raise UserError(f"study {self.study_name!r} was not made by 'vlm-pareto search'")
            _check_same(self.study_name, stored, json.loads(json.dumps(asdict(self.settings))))
            self.run_id = str(study.user_attrs["run_id"])
            self.store.require_run(self.run_id)
            self.store.create_run(
                command, {}, fp, run_id=self.run_id
            )  # reopen (checks the machine)
        else:
            config = {"search": asdict(self.settings), "sweep": _jsonable(asdict(space.cfg))}
            self.run_id = self.store.create_run(command, config, fp)
            study = optuna.create_study(
                storage=storage, study_name=self.study_name, directions=["maximize", "minimize"]
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([benchmark, "ttft_ms"])
            study.set_user_attr(STUDY_ATTR, json.loads(json.dumps(asdict(self.settings))))
            study.set_user_attr("run_id", self.run_id)
        done = len(study.get_trials(deepcopy=False))
        # A pruned search starts from a small design that shows the cost model every name
        # (random start-up trials mostly land off the frontier); TPE takes over after it.
        design = initial_design(space) if prune else []
        self.study = optuna.load_study(
            study_name=self.study_name,
            storage=storage,
            sampler=_sampler(seed, done, len(design) if design else 10),
        )
        if design and not done:
            for c in design:
                self.study.enqueue_trial(_params(c, space))
        self.evaluator = Evaluator(space, self.store, self.run_id)
        self.trace: list[TrialRecord] = []
        self._seen: dict[Config, dict[str, Any]] = self._previous()
        self._model_done = False  # the cost model had nothing left to propose
        self._stalled = False  # the last session ended on re-proposals and skips

    def _previous(self) -> dict[Config, dict[str, Any]]:
        """Evaluated configurations of earlier sessions (from the trials' attributes)."""
        import optuna

        seen: dict[Config, dict[str, Any]] = {}
        for t in self.study.get_trials(deepcopy=False):
            point = t.user_attrs.get("point")
            if point and t.state == optuna.trial.TrialState.COMPLETE:
                c = Config(
                    point["encoder"], int(point["resolution"]), point["tiling"], point["llm"]
                )
                seen.setdefault(c, point)
        return seen

    def optimize(
        self,
        n_trials: int,
        log: Callable[[str], None] | None = None,
        stop: Callable[[TrialRecord], bool] | None = None,
        progress: bool = False,
    ) -> SearchResult:
        """Run ``n_trials`` more trials (fewer if ``stop(record)`` says so) and return what the study knows.

        ``progress``: a bar over trials on a terminal, else one stderr line per new measurement
        (see harness/progress.py); trial lines then go to ``log`` or, without one, to stderr.
        """
        from optuna.trial import TrialState

        from harness.progress import Progress

        if int(n_trials) < 0:
            raise UserError(f"--trials must be >= 0, got {n_trials}")
        bar = Progress(
            int(n_trials),
            progress,
            title="search",
            counts=self.evaluator.measurer.counts,
            unit="trial",
        )
        self.evaluator.progress = bar if progress else None
        log = log or (bar.log if progress else (lambda msg: None))
        budget = self.settings.budget_ms
        new, repeats = 0, 0
        # A proposal of an evaluated configuration is answered from the study at no cost and
        # not counted, so n_trials is the number of *new* configurations; a sampler that only
        # repeats itself (the space is exhausted or it has converged) ends the session.
        while new < int(n_trials) and repeats < max(_MAX_REPEATS, int(n_trials)):
            if self.pruner is not None and not self.study.get_trials(
                deepcopy=False, states=(TrialState.WAITING,)
            ):
                # after the design: the cost model picks the most promising configuration;
                # the sampler proposes only when the model has nothing left to try
                pick = self.pruner.propose(self)
                self._model_done = pick is None and bool(self._seen)
                if pick is not None:
                    self.study.enqueue_trial(_params(pick, self.space))
            trial = self.study.ask()
            c = _suggest(trial, self.space)
            bar.step(c.label())
            before = self.evaluator.measured
            point = self._seen.get(c)
            state, reason = ("duplicate" if point else "complete"), None
            skip = self.pruner(self, c) if point is None and self.pruner is not None else None
            if (
                skip is not None
            ):  # predicted off the frontier: told with predicted values, not measured
                trial.set_user_attr("skipped", skip.reason)
                if budget is not None:
                    trial.set_constraint(CONSTRAINT, skip.ttft_ms - budget)
                self.study.tell(trial, [skip.accuracy, skip.ttft_ms])
                repeats += 1  # like a re-proposal: costs nothing, not a new configuration
                continue
            if point is None:
                try:
                    point = self._evaluate(c)
                except UserError as e:
                    state, reason = "failed", str(e)
            if point is None:
                trial.set_user_attr("reason", reason)
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                self._seen[c] = point
                trial.set_user_attr("point", point)
                if budget is not None:
                    trial.set_constraint(CONSTRAINT, point["budget_ttft_ms"] - budget)
                self.study.tell(trial, [point["accuracy"], point["ttft_ms"]])
            rec = TrialRecord(
                trial.number,
                c,
                state,
                None if point is None else point["accuracy"],
                None if point is None else point["accuracy_source"],
                None if point is None else point["ttft_ms"],
                None if point is None else point["budget_ttft_ms"],
                bool(point and point["feasible"]),
                self.evaluator.measured - before,
                self.evaluator.run_measurements(),
                reason,
            )
            self.trace.append(rec)
            log(_trace_line(rec))
            if rec.state != "duplicate":
                bar.advance(line=False)
            new, repeats = (new, repeats + 1) if rec.state == "duplicate" else (new + 1, 0)
            if stop is not None and stop(rec):
                break
        self._stalled = new < int(n_trials) and repeats >= max(_MAX_REPEATS, int(n_trials))
        bar.close()
        self.evaluator.progress = None
        self.store.set_run_status(self.run_id, "done")
        return self.result()

    def _evaluate(self, c: Config) -> dict[str, Any]:
        row = self.evaluator.ttft(c)
        tokens = self.space.tokens(c)
        params_b = self.space.llm_params_b[c.llm]
        acc, source = self.accuracy(c, tokens, params_b)
        basis = _basis(row, self.settings.by)
        budget = self.settings.budget_ms
        point = {k: _plain(v) for k, v in row.items()}
        point.update(
            encoder=c.encoder,
            resolution=c.resolution,
            tiling=c.tiling,
            llm=c.llm,
            recipe=self.settings.recipe,
            accuracy=float(acc),
            accuracy_source=source,
            budget_ttft_ms=basis,
            feasible=bool(budget is None or basis <= budget),
            llm_params_b=params_b,
        )
        return point

    def result(self) -> SearchResult:
        """The distinct configurations evaluated so far, the best feasible one and the feasible front."""
        from harness.pareto import pareto_front
        from harness.schema import POINT_COLUMNS

        pts = pd.DataFrame(list(self._seen.values()))
        bench = self.settings.benchmark
        if len(pts):
            pts[bench] = pts["accuracy"]
            pts = pts.reindex(
                columns=list(
                    dict.fromkeys(
                        [
                            *POINT_COLUMNS,
                            "accuracy",
                            "accuracy_metric",
                            "budget_ttft_ms",
                            "feasible",
                        ]
                    )
                )
            )
            pts["accuracy_metric"] = bench
            pts = pts.sort_values(
                ["encoder", "tiling", "resolution", "llm"], kind="stable"
            ).reset_index(drop=True)
        feasible = pts[pts["feasible"].astype(bool)] if len(pts) else pts
        front: list[dict[str, Any]] = []
        best = None
        if len(feasible):
            res = pareto_front(feasible, (("accuracy", "max"), ("ttft_ms", "min")))
            f = feasible.iloc[res.front].sort_values("ttft_ms")
            front = [_option(r, bench) for _, r in f.iterrows()]
            top = feasible.sort_values(["accuracy", "ttft_ms"], ascending=[False, True]).iloc[0]
            best = _option(top, bench)
        notes = list(self.notes)
        if len(pts) >= len(self.space.configs()):
            notes.append("every configuration of the space has been evaluated")
        elif self._model_done and self._stalled:
            notes.append(
                "the cost model predicts that no unmeasured configuration can improve the front "
                f"({self.pruner.skipped} proposal(s) skipped); stopped early"
            )
        elif self._stalled:
            notes.append("the sampler kept proposing evaluated configurations; stopped early")
        if len(pts) and (pts["accuracy_source"] == "predicted").any():
            notes.append(
                f"{int((pts['accuracy_source'] == 'predicted').sum())} of {len(pts)} configuration(s) "
                "have predicted accuracy (accuracy_source=predicted): measure them before deciding"
            )
        if best is None and len(pts):
            notes.append("no evaluated configuration fits the budget")
        trials = self.study.get_trials(deepcopy=False)
        return SearchResult(
            study_name=self.study_name,
            storage=self.store.url,
            run_id=self.run_id,
            settings={k: v for k, v in asdict(self.settings).items() if k != "space"},
            points=pts,
            best=best,
            front=front,
            trials_total=len(trials),
            trials_session=len(self.trace),
            measurements_total=self.evaluator.run_measurements(),
            measurements_session=self.evaluator.measured,
            grid_points=len(self.space.configs()),
            grid_measurements=self.space.grid_measurements(),
            trace=list(self.trace),
            notes=notes,
        )


def _default_name(s: SearchSettings, seed: int = 0) -> str:
    """A readable, stable default study name: same space, settings and seed -> same study
    (seed 0 keeps the name it had before seeds were part of it)."""
    import hashlib

    digest = hashlib.sha1(json.dumps(asdict(s), sort_keys=True, default=str).encode()).hexdigest()[
        :8
    ]
    return f"search-{digest}" if not seed else f"search-{digest}-seed{seed}"


def _differences(stored: Any, now: Any, path: str) -> list[str]:
    """``path: stored X, now Y`` for each leaf where two settings trees differ."""
    if isinstance(stored, dict) and isinstance(now, dict):
        out: list[str] = []
        for k in sorted(set(stored) | set(now), key=str):
            if k != "schema" and stored.get(k) != now.get(k):
                out.extend(_differences(stored.get(k), now.get(k), f"{path}.{k}" if path else k))
        return out
    return [f"{path}: stored {_short(stored)}, now {_short(now)}"]


def _check_same(name: str, stored: dict[str, Any], now: dict[str, Any]) -> None:
    diffs = _differences({k: stored.get(k) for k in now}, now, "")
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise UserError(
            f"study {name!r} was made with other settings ({shown}); resume it with the same "
            "options or start a new --study-name"
        )


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _jsonable(d: Any) -> Any:
    return json.loads(json.dumps(d, default=str))


def _option(row: pd.Series, bench: str) -> dict[str, Any]:
    keys = (
        "encoder",
        "resolution",
        "tiling",
        "llm",
        "recipe",
        "tokens",
        "prompt_tokens",
        "encoder_ms",
        "projector_ms",
        "prefill_ms",
        "ttft_ms",
        "ttft_ci_low_ms",
        "ttft_ci_high_ms",
        "ttft_p90_ms",
        "budget_ttft_ms",
        "accuracy",
        "accuracy_source",
        "latency_source",
        "estimated",
        "backend",
        "machine",
        "llm_params_b",
        "run_id",
    )
    out = {k: _plain(row.get(k)) for k in keys}
    out["benchmark"] = bench
    return out


def _trace_line(r: TrialRecord) -> str:
    if r.state == "failed":
        return f"trial {r.number}: {r.config.label()}: failed: {r.reason}"
    pred = " (predicted)" if r.accuracy_source == "predicted" else ""
    fit = "" if r.feasible else " over budget"
    return (
        f"trial {r.number}: {r.config.label()}: accuracy {r.accuracy:.2f}{pred}, TTFT {r.ttft_ms:.1f} ms{fit}; "
        f"+{r.new_measurements} measurement(s), {r.run_measurements} in run"
        + (" [repeat]" if r.state == "duplicate" else "")
    )


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr)
