"""Optuna search of a configuration space too large to measure exhaustively.

A *space* is every valid (encoder, resolution, tiling, LLM): resolutions run from a minimum to a
maximum in steps of the encoder's stride (``build_space``). An Optuna study (driven directly)
proposes configurations; each is measured through the sweep's own machinery, so the numbers
are the ones a sweep would take:

* the encoder, prefill and projector tasks of the configuration are built like the sweep's
  plan (``harness.sweep.plan``) and measured by :class:`harness.sweep.runners.Runners` through
  the engine's claim/reuse job (``engine._run_job``) into **one run** of the store, so a task
  already measured in that run (by this study, an earlier session of it, or a sweep sharing
  the run) is reused, never re-measured;
* TTFT is composed by :func:`harness.ttft.compose_ttft` from the stored rows, as reports do.

Accuracy comes from known rows (store > ``--accuracy`` CSV > paper, the priority of
``harness.points``) for the exact configuration and recipe; otherwise from an
:class:`AccuracySurrogate` fitted on the known rows, and then the point says
``accuracy_source='predicted'`` everywhere (trial attributes, output, report points).

Objectives: **multi-objective** (maximize accuracy, minimize median TTFT) with the budget as a
constraint (``trial.set_constraint("ttft_budget", basis_ttft - budget)``, feasible when <= 0).
Why not single-objective "max accuracy s.t. budget": the answer a user asks for (the best
feasible configuration) is the accuracy end of the constrained front, and the rest of that
front is what they need next (what a smaller budget would cost); the benchmark's success
measure (hypervolume of the frontier) is only meaningful for a multi-objective search. TPE
reads the constraint values natively in Optuna 5 (infeasible trials rank below feasible ones).

The study lives in the store's own database (``optuna.storages.RDBStorage(store.url)``; the
table names do not overlap), so it can be resumed (same name) or shared. The store must be
opened first: ``Store`` refuses a database that holds tables but no ``runs`` table.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from harness.errors import UserError, suggest
from harness.sweep.configs import EncoderAxis, LLMAxis, SweepConfig

#: the study's user attribute holding the settings a resume must match
STUDY_ATTR = "vlm_pareto_search"
SEARCH_SCHEMA = 1
CONSTRAINT = "ttft_budget"
#: consecutive repeated proposals after which a session stops (see Search.optimize)
_MAX_REPEATS = 50
BASES = ("ci-high", "p90", "median")
_BASIS_COLUMN = {"ci-high": "ttft_ci_high_ms", "p90": "ttft_p90_ms", "median": "ttft_ms"}


# ----------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class Config:
    """One point of the space."""

    encoder: str
    resolution: int
    tiling: str
    llm: str

    def label(self) -> str:
        tiling = "" if self.tiling == "none" else f" {self.tiling}"
        return f"{self.encoder}@{self.resolution}{tiling} + {self.llm}"


@dataclass(frozen=True)
class EncoderChoice:
    """An encoder of the space: its sweep label, stride, and valid resolutions per tiling."""

    name: str
    label: str
    stride: int
    out_dim: int
    resolutions: dict[str, tuple[int, ...]]  # tiling -> sorted resolutions
    tokens: dict[tuple[int, str], int]  # (resolution, tiling) -> visual tokens


@dataclass(frozen=True)
class SearchSpace:
    """Every valid configuration, plus the sweep config its tasks are measured with."""

    encoders: dict[str, EncoderChoice]
    llms: dict[str, str]  # canonical name -> sweep label
    llm_params_b: dict[str, float]
    cfg: SweepConfig
    llm_specs: dict[str, Any]
    notes: tuple[str, ...] = ()

    def configs(self) -> list[Config]:
        out = []
        for enc in self.encoders.values():
            for tiling, resolutions in enc.resolutions.items():
                for r in resolutions:
                    out.extend(Config(enc.name, r, tiling, llm) for llm in self.llms)
        return out

    def tokens(self, c: Config) -> int:
        return self.encoders[c.encoder].tokens[(c.resolution, c.tiling)]

    def grid_measurements(self) -> int:
        """Unique tasks a sweep of the whole space would measure (encoder + prefill + projector)."""
        enc = {(e.name, r, t) for e in self.encoders.values() for t, rs in e.resolutions.items() for r in rs}
        pre = {(c.llm, self.tokens(c)) for c in self.configs()}
        proj = {(c.llm, self.tokens(c), self.encoders[c.encoder].out_dim) for c in self.configs()}
        return len(enc) + len(pre) + len(proj)

    def signature(self) -> dict[str, Any]:
        """JSON description stored with the study (a resume must see the same space)."""
        return {
            "encoders": {e.name: {t: list(rs) for t, rs in e.resolutions.items()} for e in self.encoders.values()},
            "llms": list(self.llms),
            "prompt_tokens": self.cfg.prompt_tokens,
        }


def parse_range(text: str) -> tuple[int, int]:
    """``'256:1024'`` -> (256, 1024); UserError otherwise."""
    lo_text, sep, hi_text = str(text).partition(":")
    try:
        lo, hi = int(lo_text), int(hi_text)
    except ValueError:
        raise UserError(f"--resolution-range takes MIN:MAX in pixels, e.g. 256:1024, not {text!r}") from None
    if not sep or lo <= 0 or hi < lo:
        raise UserError(f"--resolution-range takes MIN:MAX with 0 < MIN <= MAX, not {text!r}")
    return lo, hi


def build_space(
    cfg: SweepConfig,
    *,
    resolution_range: tuple[int, int] | None = None,
    tilings: Sequence[str] | None = None,
) -> SearchSpace:
    """Widen ``cfg``'s grid into a search space and resolve every name.

    Each encoder's resolutions become ``min..max`` in steps of its stride: the range is
    ``resolution_range`` if given, else the axis' own min/max (a preset), else the encoder's
    paper resolutions (or its native one). Tilings are ``tilings``, else the axis', else the
    sweep's default. Combinations the encoder cannot take (e.g. a tile side off its stride,
    too many tokens for an LLM) are left out; an empty result is a UserError.
    """
    from harness.encoders.tiling import parse_tiling
    from harness.encoders.zoo import encoder_out_dim, encoder_tokens, get_spec
    from harness.sweep.engine import resolve

    if not cfg.encoders:
        raise UserError("empty space: no encoders (pass --encoders or --preset)")
    if not cfg.llms:
        raise UserError("empty space: no LLMs (pass --llms or --preset)")
    cfg = copy.deepcopy(cfg)
    # Resolve names (aliases, custom encoders, LLM configs) with the sweep's own resolver on a
    # small seed grid that is valid by construction; this also validates the backend etc.
    seed = copy.deepcopy(cfg)
    seed.max_measurements = 10**9
    for enc in seed.encoders.values():
        if not enc.resolutions:
            spec = get_spec(enc.name)
            enc.resolutions = [spec.native_resolution]
            enc.tilings = ["none"]
    _, llm_specs = resolve(seed)
    notes: list[str] = []
    choices: dict[str, EncoderChoice] = {}
    max_pos = min(s.max_positions for s in llm_specs.values())
    for label, axis in cfg.encoders.items():
        name = seed.encoders[label].name
        spec = get_spec(name)
        if resolution_range:
            lo, hi = resolution_range
        elif axis.resolutions:
            lo, hi = min(axis.resolutions), max(axis.resolutions)
        else:
            known = spec.paper_resolutions or (spec.native_resolution,)
            lo, hi = min(known), max(known)
        wanted = [parse_tiling(t).text for t in (tilings or axis.tilings or [cfg.tiling.spec])]
        per_tiling: dict[str, tuple[int, ...]] = {}
        tokens: dict[tuple[int, str], int] = {}
        start = -(-lo // spec.stride) * spec.stride
        for tiling in dict.fromkeys(wanted):
            ok = []
            for r in range(start, hi + 1, spec.stride):
                try:
                    n = encoder_tokens(name, r, tiling)
                except UserError:
                    continue  # off the tile grid, below the minimum, beyond memory: not in the space
                if n + cfg.prompt_tokens > max_pos:
                    continue
                ok.append(r)
                tokens[(r, tiling)] = n
            if ok:
                per_tiling[tiling] = tuple(ok)
            else:
                notes.append(f"{name} has no valid resolution in {lo}..{hi} with tiling {tiling}")
        if not per_tiling:
            raise UserError(
                f"empty space: {name} takes no resolution in {lo}..{hi} (stride {spec.stride}) "
                f"with tiling {', '.join(wanted)}; widen --resolution-range"
            )
        if name in choices:
            raise UserError(f"encoder {name} is listed twice")
        choices[name] = EncoderChoice(name, label, spec.stride, encoder_out_dim(name), per_tiling, tokens)
        axis.name = name
        axis.resolutions = sorted({r for rs in per_tiling.values() for r in rs})
        axis.tilings = list(per_tiling)
    # The resolver fills llm_specs in label order, keyed by canonical name.
    if len(llm_specs) != len(cfg.llms):
        raise UserError("an LLM is listed twice (two names for the same model)")
    llms = dict(zip(llm_specs, cfg.llms, strict=True))
    params = {n: float(llm_specs[n].params_b) for n in llms}
    return SearchSpace(choices, llms, params, cfg, llm_specs, tuple(notes))


def sweep_config(
    *,
    preset: str | None = None,
    encoders: Sequence[str] | None = None,
    llms: Sequence[str] | None = None,
    backend: str | None = None,
    protocol: str | None = None,
    overrides: Sequence[str] = (),
) -> SweepConfig:
    """The sweep config a search measures with: a preset (Hydra-composed) or explicit names.

    ``encoders``/``llms`` replace the preset's lists; ``backend``/``protocol`` are config-group
    names (``sweeps/backend/*.yaml``, ``sweeps/protocol/*.yaml``).
    """
    from harness.sweep.configs import compose_sweep, presets

    ov = list(overrides)
    if backend:
        ov.append(f"backend={_group_name('backend', backend)}")
    if protocol:
        ov.append(f"protocol={_group_name('protocol', protocol)}")
    if preset:
        names = [p for p in presets() if p != "config"]
        if preset not in names:
            raise UserError(suggest(preset, names, "preset"))
        cfg = compose_sweep(preset, ov)
    else:
        if not encoders or not llms:
            raise UserError("empty space: pass --preset, or both --encoders and --llms")
        # compose any preset for the backend/protocol groups, then replace its grid
        cfg = compose_sweep("quick", ov)
        cfg.name, cfg.cite, cfg.description = "search", "", ""
    if encoders:
        cfg.encoders = {_label(n): EncoderAxis(name=n) for n in dict.fromkeys(encoders)}
    if llms:
        cfg.llms = {_label(n): LLMAxis(name=n) for n in dict.fromkeys(llms)}
    cfg.report = False
    cfg.progress = False
    return cfg


def _label(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def _group_name(group: str, name: str) -> str:
    from harness.sweep.configs import config_dir

    known = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
    if name not in known:
        raise UserError(suggest(name, known, group))
    return name


# ---------------------------------------------------------------------- accuracy sources


class AccuracyModel(Protocol):
    """Accuracy of a configuration: ``(value, accuracy_source)``."""

    def __call__(self, c: Config, tokens: int, llm_params_b: float) -> tuple[float, str]: ...


@dataclass(frozen=True)
class AccuracySurrogate:
    """Ridge regression of accuracy on the configuration, fitted on known accuracy rows.

    ``accuracy ~ recipe + encoder + b1*log2(tokens) + b2*log2(LLM params) + b3*tiled``.
    Why these features: accuracy in the paper's tables rises roughly linearly in log visual
    tokens and log LLM size, with a per-encoder offset (pre-training quality) and a per-recipe
    offset (training data); a linear model in those terms is the least that captures
    Table 1/4/6's trends and is fitted from a dozen rows. Fitting every recipe together lets
    the LLM-size slope learned from Table 6 (Qwen2 0.5B-7B) transfer to LLaVA-1.5 rows (all
    Vicuna-7B). The ridge penalty (on the categorical offsets only) sends encoders/recipes
    without rows to the average offset. ``log2(tokens)`` is clipped to the range seen in
    training, so the model never predicts gains from resolutions far beyond its data (where
    accuracy saturates). Predictions are clipped to [0, 100].
    """

    coef: tuple[float, ...]
    columns: tuple[str, ...]
    token_range: tuple[float, float]
    n_rows: int
    loo_rmse: float
    target: str

    @staticmethod
    def fit(rows: pd.DataFrame, target: str = "accuracy", ridge: float = 1.0) -> AccuracySurrogate:
        """Fit on rows with ``encoder, tiling, recipe, tokens, llm_params_b`` and ``target``."""
        df = rows.dropna(subset=[target, "tokens", "llm_params_b"])
        df = df[(df["tokens"] > 0) & (df["llm_params_b"] > 0)]
        if len(df) < 3:
            raise UserError(
                f"no accuracy to search on: {len(df)} usable accuracy row(s) (need >= 3 to fit the surrogate); "
                "ingest results ('vlm-pareto ingest'), pass --accuracy FILE, or allow the paper's accuracy"
            )
        lt = np.log2(df["tokens"].to_numpy(float))
        token_range = (float(lt.min()), float(lt.max()))
        cols = _feature_columns(df)
        x = _features(df, cols, token_range)
        y = df[target].to_numpy(float)
        penalty = np.array([0.0 if not c.startswith(("encoder=", "recipe=")) else ridge for c in cols])
        coef, loo = _ridge(x, y, penalty)
        return AccuracySurrogate(tuple(float(v) for v in coef), tuple(cols), token_range, len(df), loo, target)

    def predict(self, encoder: str, tiling: str, recipe: str, tokens: float, llm_params_b: float) -> float:
        row = pd.DataFrame([{"encoder": encoder, "tiling": tiling, "recipe": recipe, "tokens": tokens,
                             "llm_params_b": llm_params_b}])
        x = _features(row, list(self.columns), self.token_range)
        return float(np.clip(x @ np.asarray(self.coef), 0.0, 100.0)[0])

    def describe(self) -> str:
        return (f"accuracy surrogate: ridge on log2(tokens), log2(LLM params), tiling, encoder and recipe offsets; "
                f"fitted on {self.n_rows} row(s), leave-one-out RMSE {self.loo_rmse:.2f} {self.target} points")


def _feature_columns(df: pd.DataFrame) -> list[str]:
    cols = ["1", "log2_tokens", "log2_llm_params_b", "tiled"]
    cols += [f"encoder={e}" for e in sorted(set(df["encoder"]))]
    cols += [f"recipe={r}" for r in sorted(set(df["recipe"]))]
    return cols


def _features(df: pd.DataFrame, cols: list[str], token_range: tuple[float, float]) -> np.ndarray:
    lt = np.clip(np.log2(df["tokens"].to_numpy(float)), *token_range)
    base = {
        "1": np.ones(len(df)),
        "log2_tokens": lt,
        "log2_llm_params_b": np.log2(df["llm_params_b"].to_numpy(float)),
        "tiled": (df["tiling"].astype(str) != "none").to_numpy(float),
    }
    out = []
    for c in cols:
        if c in base:
            out.append(base[c])
        else:
            kind, _, value = c.partition("=")
            out.append((df[kind].astype(str) == value).to_numpy(float))
    return np.column_stack(out)


def _ridge(x: np.ndarray, y: np.ndarray, penalty: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge solution and its exact leave-one-out RMSE (hat-matrix shortcut)."""
    a = x.T @ x + np.diag(penalty)
    a_inv = np.linalg.pinv(a)
    coef = a_inv @ x.T @ y
    hat = np.einsum("ij,jk,ik->i", x, a_inv, x)
    resid = y - x @ coef
    denom = np.where(np.abs(1 - hat) < 1e-9, np.nan, 1 - hat)
    loo = resid / denom
    return coef, float(np.sqrt(np.nanmean(loo**2))) if np.isfinite(loo).any() else float("nan")


@dataclass
class KnownAccuracy:
    """Accuracy from known rows (store > CSV > paper) for the exact key, else the surrogate."""

    known: dict[tuple, tuple[float, str]]
    surrogate: AccuracySurrogate
    recipe: str
    notes: list[str] = field(default_factory=list)

    def __call__(self, c: Config, tokens: int, llm_params_b: float) -> tuple[float, str]:
        hit = self.known.get((c.encoder, c.resolution, c.llm, c.tiling, self.recipe))
        if hit is not None:
            return hit
        return self.surrogate.predict(c.encoder, c.tiling, self.recipe, tokens, llm_params_b), "predicted"


def load_accuracy(
    *,
    db: str | None,
    recipe: str,
    benchmark: str = "avg5",
    accuracy_files: Sequence[str] | None = None,
    paper: bool = True,
) -> KnownAccuracy:
    """Known accuracy rows (via ``harness.points``' source priority) and a surrogate fitted on them."""
    from harness.accuracy.join import expand_scores, known_benchmarks
    from harness.accuracy.keys import normalize_key, normalize_recipe
    from harness.encoders.zoo import encoder_tokens
    from harness.llms.zoo import get_llm_spec
    from harness.points import _accuracy

    bench = str(benchmark).strip().lower()
    if bench not in known_benchmarks():
        raise UserError(suggest(benchmark, known_benchmarks(), "benchmark"))
    want = normalize_recipe(recipe)
    notes: list[str] = []
    acc = expand_scores(_accuracy(db, True, accuracy_files, paper, notes))
    if bench not in acc.columns:
        acc[bench] = math.nan
    known: dict[tuple, tuple[float, str]] = {}
    train = []
    for r in acc.to_dict("records"):
        value = pd.to_numeric(r.get(bench), errors="coerce")
        if value is None or not math.isfinite(float(value)):
            continue
        try:
            k = normalize_key(r["encoder"], r["resolution"], r["llm"], r["tiling"], r["recipe"])
            params_b = get_llm_spec(k.llm).params_b
        except UserError:
            continue  # a model the zoo does not know cannot be placed on the features
        tokens = pd.to_numeric(r.get("tokens"), errors="coerce")
        if tokens is None or not math.isfinite(float(tokens)):
            try:
                tokens = encoder_tokens(k.encoder, k.resolution, k.tiling)
            except UserError:
                continue
        if k.recipe == want:
            known[(k.encoder, k.resolution, k.llm, k.tiling, k.recipe)] = (float(value), str(r["accuracy_source"]))
        train.append({"encoder": k.encoder, "tiling": k.tiling, "recipe": k.recipe, "tokens": float(tokens),
                      "llm_params_b": params_b, "accuracy": float(value)})
    surrogate = AccuracySurrogate.fit(pd.DataFrame(train, columns=[
        "encoder", "tiling", "recipe", "tokens", "llm_params_b", "accuracy"]), target="accuracy")
    notes.append(f"{len(known)} known {bench} row(s) for recipe {want}; " + surrogate.describe())
    return KnownAccuracy(known, surrogate, want, notes)


def synthetic_accuracy(c: Config, tokens: int, llm_params_b: float) -> tuple[float, str]:
    """A deterministic stand-in for accuracy, for tests and ``scripts/bench_search.py``.

    ``50 + 10 * (1 - exp(-tokens / 256)) + 3 * log2(params_B / 0.5) + encoder offset - tiled``
    with offsets fastvithd +2, fastvit 0, others +1, and -0.5 for a tiled input: saturating in
    visual tokens (as Fig. 4's curves are), rising with LLM size, so the accuracy-vs-TTFT
    frontier mixes encoders, resolutions and LLMs. Labelled ``accuracy_source='synthetic'``.
    """
    offset = {"fastvithd": 2.0, "fastvit": 0.0}.get(c.encoder, 1.0)
    value = (50.0 + 10.0 * (1.0 - math.exp(-tokens / 256.0)) + 3.0 * math.log2(llm_params_b / 0.5)
             + offset - (0.5 if c.tiling != "none" else 0.0))
    return value, "synthetic"


# ------------------------------------------------------------------------ measurement


class Evaluator:
    """Measures configurations into one run of the store, through the sweep's runners.

    Tasks are built like ``harness.sweep.plan`` does and measured by ``engine._run_job`` (the
    claim/reuse logic: an ``ok`` row of the run is reused, a dead worker's claim taken over),
    so a configuration sharing an encoder setting or a prefill token count with an earlier one
    costs only the missing tasks.
    """

    def __init__(self, space: SearchSpace, store: Any, run_id: str):
        from harness.sweep.engine import SweepOutcome, _owner
        from harness.sweep.plan import Plan
        from harness.sweep.runners import Runners

        self.space, self.store, self.run_id = space, store, run_id
        self.runners = Runners(space.cfg, space.llm_specs)
        self.owner = _owner()
        self.out = SweepOutcome(run_id=run_id, plan=Plan(),
                                counts={"measured": 0, "reused": 0, "skipped": 0, "failed": 0})
        self.proj_keys: dict[tuple, Any] = {}

    def ttft(self, c: Config) -> dict[str, Any]:
        """Measure (or reuse) the tasks of ``c`` and return its composed TTFT row.

        Raises UserError when a task was skipped or failed (its reason is in the store).
        """
        from harness.sweep.engine import _run_job
        from harness.sweep.plan import (
            EncoderTask,
            PrefillTask,
            ProjectorTask,
            encoder_key,
            prefill_key,
            projector_key,
        )
        from harness.ttft import compose_ttft

        cfg, enc = self.space.cfg, self.space.encoders[c.encoder]
        tokens = self.space.tokens(c)
        llm_label = self.space.llms[c.llm]
        et = EncoderTask(enc.label, enc.name, c.resolution, c.tiling, tokens, enc.out_dim)
        pt = PrefillTask(llm_label, c.llm, tokens, cfg.prompt_tokens)
        jt = ProjectorTask(llm_label, c.llm, tokens, enc.out_dim)
        ek, pk, jk = encoder_key(et, cfg), prefill_key(pt, cfg), projector_key(jt, cfg)
        self.proj_keys[(c.llm, tokens, enc.out_dim)] = jk
        jobs = [
            (ek, f"{et.name} @ {et.resolution} {et.tiling}", lambda: self.runners.encoder(et)),
            # the projector for this encoder's channels comes along with the prefill
            (pk, f"{c.llm} prefill {tokens}+{pt.prompt_tokens} tok", lambda: self.runners.prefill(pt, enc.out_dim)),
            (jk, f"projector {enc.out_dim}->{c.llm} {tokens} tok", lambda: self.runners.projector(jt)),
        ]
        for key, label, fn in jobs:
            _run_job(self.store, self.run_id, key, label, fn, 0, self.owner, self.out, self.proj_keys)
        rows = {kind: self.store.get_measurement(self.run_id, k) for kind, k in
                (("encoder", ek), ("prefill", pk), ("projector", jk))}
        bad = {k: r for k, r in rows.items() if r is None or r["status"] != "ok"}
        if bad:
            kind, r = next(iter(bad.items()))
            raise UserError(f"{c.label()}: {kind} {'missing' if r is None else r['status']}: "
                            f"{'' if r is None else r.get('reason')}")
        df = compose_ttft([rows["encoder"]], [rows["projector"]], [rows["prefill"]])
        if len(df) != 1:
            raise RuntimeError(f"{c.label()}: composing TTFT gave {len(df)} rows, expected 1")
        return df.iloc[0].to_dict()

    @property
    def measured(self) -> int:
        """Measurements taken by this process (reused ones excluded)."""
        return int(self.out.counts["measured"])

    def run_measurements(self) -> int:
        """Distinct successful measurements stored in the run (all sessions)."""
        return len(self.store.measurement_rows(run_ids=[self.run_id], status="ok"))


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
            "study": self.study_name, "storage": _redact(self.storage), "run_id": self.run_id,
            "settings": self.settings, "best": self.best, "front": self.front,
            "counts": {"trials": self.trials_total, "trials_this_session": self.trials_session,
                       "configurations": int(len(self.points)), "measurements": self.measurements_total,
                       "measurements_this_session": self.measurements_session,
                       "grid_points": self.grid_points, "grid_measurements": self.grid_measurements},
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
    order = {"ci-high": ("ttft_ci_high_ms", "ttft_p90_ms", "ttft_ms"), "p90": ("ttft_p90_ms", "ttft_ms"),
             "median": ("ttft_ms",)}[by]
    for col in order:
        v = row.get(col)
        if v is not None and math.isfinite(float(v)):
            return float(v)
    return math.nan


def _sampler(seed: int, n_done: int) -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # multivariate + group: the resolution parameters are conditional on the encoder and
        # tiling chosen; group decomposition models each sub-space jointly. The seed is
        # offset by the trials already done so a resumed study does not replay its proposals.
        return optuna.samplers.TPESampler(seed=seed + n_done, multivariate=True, group=True,
                                          n_startup_trials=10)


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
            check_budget(budget_ms), by, benchmark, recipe, asdict(space.cfg.backend), space.cfg.protocol.name,
            space.signature())
        # The store first: it creates its tables in an empty database, Optuna adds its own.
        self.store = Store(db)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.RDBStorage(self.store.url)
        names = set(optuna.study.get_all_study_names(storage))
        self.study_name = study_name or _default_name(self.settings)
        if resume and self.study_name not in names:
            raise UserError(suggest(self.study_name, names or ["(none)"], "study to resume")
                            if names else f"no study {self.study_name!r} to resume in {_redact(self.store.url)}")
        if not resume and self.study_name in names:
            raise UserError(f"study {self.study_name!r} already exists in {_redact(self.store.url)}; "
                            "pass --resume to continue it, or another --study-name")
        fp = fingerprint(threads=space.cfg.protocol.threads or os.cpu_count())
        if resume:
            study = optuna.load_study(study_name=self.study_name, storage=storage)
            stored = study.user_attrs.get(STUDY_ATTR)
            if not stored:
                raise UserError(f"study {self.study_name!r} was not made by 'vlm-pareto search'")
            _check_same(self.study_name, stored, json.loads(json.dumps(asdict(self.settings))))
            self.run_id = str(study.user_attrs["run_id"])
            self.store.require_run(self.run_id)
            self.store.create_run(command, {}, fp, run_id=self.run_id)  # reopen (checks the machine)
        else:
            config = {"search": asdict(self.settings), "sweep": _jsonable(asdict(space.cfg))}
            self.run_id = self.store.create_run(command, config, fp)
            study = optuna.create_study(storage=storage, study_name=self.study_name,
                                        directions=["maximize", "minimize"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([benchmark, "ttft_ms"])
            study.set_user_attr(STUDY_ATTR, json.loads(json.dumps(asdict(self.settings))))
            study.set_user_attr("run_id", self.run_id)
        done = len(study.get_trials(deepcopy=False))
        self.study = optuna.load_study(study_name=self.study_name, storage=storage, sampler=_sampler(seed, done))
        self.evaluator = Evaluator(space, self.store, self.run_id)
        self.trace: list[TrialRecord] = []
        self._seen: dict[Config, dict[str, Any]] = self._previous()

    def _previous(self) -> dict[Config, dict[str, Any]]:
        """Evaluated configurations of earlier sessions (from the trials' attributes)."""
        import optuna

        seen: dict[Config, dict[str, Any]] = {}
        for t in self.study.get_trials(deepcopy=False):
            point = t.user_attrs.get("point")
            if point and t.state == optuna.trial.TrialState.COMPLETE:
                c = Config(point["encoder"], int(point["resolution"]), point["tiling"], point["llm"])
                seen.setdefault(c, point)
        return seen

    def optimize(self, n_trials: int, log: Callable[[str], None] | None = None,
                 stop: Callable[[TrialRecord], bool] | None = None) -> SearchResult:
        """Run ``n_trials`` more trials (fewer if ``stop(record)`` says so) and return what the study knows."""
        from optuna.trial import TrialState

        if int(n_trials) < 0:
            raise UserError(f"--trials must be >= 0, got {n_trials}")
        log = log or (lambda msg: None)
        budget = self.settings.budget_ms
        new, repeats = 0, 0
        # A proposal of an evaluated configuration is answered from the study at no cost and
        # not counted, so n_trials is the number of *new* configurations; a sampler that only
        # repeats itself (the space is exhausted or it has converged) ends the session.
        while new < int(n_trials) and repeats < max(_MAX_REPEATS, int(n_trials)):
            trial = self.study.ask()
            c = _suggest(trial, self.space)
            before = self.evaluator.measured
            point = self._seen.get(c)
            state, reason = ("duplicate" if point else "complete"), None
            skip = self.pruner(self, c) if point is None and self.pruner is not None else None
            if skip is not None:  # predicted off the frontier: told with predicted values, not measured
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
                trial.number, c, state, None if point is None else point["accuracy"],
                None if point is None else point["accuracy_source"], None if point is None else point["ttft_ms"],
                None if point is None else point["budget_ttft_ms"], bool(point and point["feasible"]),
                self.evaluator.measured - before, self.evaluator.run_measurements(), reason)
            self.trace.append(rec)
            log(_trace_line(rec))
            new, repeats = (new, repeats + 1) if rec.state == "duplicate" else (new + 1, 0)
            if stop is not None and stop(rec):
                break
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
        point.update(encoder=c.encoder, resolution=c.resolution, tiling=c.tiling, llm=c.llm,
                     recipe=self.settings.recipe, accuracy=float(acc), accuracy_source=source,
                     budget_ttft_ms=basis, feasible=bool(budget is None or basis <= budget),
                     llm_params_b=params_b)
        return point

    def result(self) -> SearchResult:
        """The distinct configurations evaluated so far, the best feasible one and the feasible front."""
        from harness.accuracy.join import POINT_COLUMNS
        from harness.pareto import pareto_front

        pts = pd.DataFrame(list(self._seen.values()))
        bench = self.settings.benchmark
        if len(pts):
            pts[bench] = pts["accuracy"]
            pts = pts.reindex(columns=list(dict.fromkeys([*POINT_COLUMNS, "accuracy", "accuracy_metric",
                                                           "budget_ttft_ms", "feasible"])))
            pts["accuracy_metric"] = bench
            pts = pts.sort_values(["encoder", "tiling", "resolution", "llm"], kind="stable").reset_index(drop=True)
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
        elif self.trace and self.trace[-1].state == "duplicate":
            notes.append("the sampler kept proposing evaluated configurations; stopped early")
        if len(pts) and (pts["accuracy_source"] == "predicted").any():
            notes.append(f"{int((pts['accuracy_source'] == 'predicted').sum())} of {len(pts)} configuration(s) "
                         "have predicted accuracy (accuracy_source=predicted): measure them before deciding")
        if best is None and len(pts):
            notes.append("no evaluated configuration fits the budget")
        trials = self.study.get_trials(deepcopy=False)
        return SearchResult(
            study_name=self.study_name, storage=self.store.url, run_id=self.run_id,
            settings={k: v for k, v in asdict(self.settings).items() if k != "space"},
            points=pts, best=best, front=front, trials_total=len(trials), trials_session=len(self.trace),
            measurements_total=self.evaluator.run_measurements(), measurements_session=self.evaluator.measured,
            grid_points=len(self.space.configs()), grid_measurements=self.space.grid_measurements(),
            trace=list(self.trace), notes=notes,
        )


def _default_name(s: SearchSettings) -> str:
    """A readable, stable default study name: same space and settings -> same study."""
    import hashlib

    digest = hashlib.sha1(json.dumps(asdict(s), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"search-{digest}"


def _check_same(name: str, stored: dict[str, Any], now: dict[str, Any]) -> None:
    diffs = [k for k in now if k != "schema" and stored.get(k) != now[k]]
    if diffs:
        shown = "; ".join(f"{k}: stored {_short(stored.get(k))}, now {_short(now[k])}" for k in diffs)
        raise UserError(f"study {name!r} was made with other settings ({shown}); resume it with the same "
                        "options or start a new --study-name")


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
    keys = ("encoder", "resolution", "tiling", "llm", "recipe", "tokens", "prompt_tokens", "encoder_ms",
            "projector_ms", "prefill_ms", "ttft_ms", "ttft_ci_low_ms", "ttft_ci_high_ms", "ttft_p90_ms",
            "budget_ttft_ms", "accuracy", "accuracy_source", "latency_source", "estimated", "backend", "machine",
            "llm_params_b", "run_id")
    out = {k: _plain(row.get(k)) for k in keys}
    out["benchmark"] = bench
    return out


def _trace_line(r: TrialRecord) -> str:
    if r.state == "failed":
        return f"trial {r.number}: {r.config.label()}: failed: {r.reason}"
    pred = " (predicted)" if r.accuracy_source == "predicted" else ""
    fit = "" if r.feasible else " over budget"
    return (f"trial {r.number}: {r.config.label()}: accuracy {r.accuracy:.2f}{pred}, TTFT {r.ttft_ms:.1f} ms{fit}; "
            f"+{r.new_measurements} measurement(s), {r.run_measurements} in run" + (" [repeat]" if r.state == "duplicate" else ""))


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr)
