"""Optuna search of a configuration space too large to measure exhaustively.

Split by concern: :mod:`.space` (what can be proposed), :mod:`.accuracy` (known rows,
surrogate, synthetic law), :mod:`.evaluator` (measuring through the engine's ``Measurer``),
:mod:`.study` (the Optuna study, results, resume).

A *space* is every valid (encoder, resolution, tiling, LLM): resolutions run from a minimum to a
maximum in steps of the encoder's stride (``build_space``). An Optuna study (driven directly)
proposes configurations; each is measured through the sweep's own machinery, so the numbers
are the ones a sweep would take:

* the encoder, prefill and projector tasks of the configuration are built like the sweep's
  plan (``harness.sweep.plan``) and measured by :class:`harness.sweep.runners.Runners` through
  the engine's claim/reuse :class:`~harness.sweep.engine.Measurer` into **one run** of the store, so a task
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

from harness.search.accuracy import (
    AccuracyModel,
    AccuracySurrogate,
    KnownAccuracy,
    load_accuracy,
    synthetic_accuracy,
)
from harness.search.evaluator import (
    Evaluator,
)
from harness.search.space import (
    Config,
    EncoderChoice,
    SearchSpace,
    build_space,
    parse_range,
    sweep_config,
)
from harness.search.study import (
    BASES,
    CONSTRAINT,
    SEARCH_SCHEMA,
    STUDY_ATTR,
    Search,
    SearchResult,
    SearchSettings,
    TrialRecord,
    check_budget,
    stderr_log,
)

__all__ = [
    "AccuracyModel",
    "AccuracySurrogate",
    "BASES",
    "CONSTRAINT",
    "Config",
    "EncoderChoice",
    "Evaluator",
    "KnownAccuracy",
    "SEARCH_SCHEMA",
    "STUDY_ATTR",
    "Search",
    "SearchResult",
    "SearchSettings",
    "SearchSpace",
    "TrialRecord",
    "build_space",
    "check_budget",
    "load_accuracy",
    "parse_range",
    "stderr_log",
    "sweep_config",
    "synthetic_accuracy",
]
