"""The nightly regression job: measure, compare with this machine's history, report.

``run_nightly`` measures the ``nightly`` sweep preset (through ``harness.sweep.preset.run_preset``,
rigorous protocol, interleaved rounds) unless given an existing ``run_id``, then
:func:`evaluate` compares every key of that run with the same key in earlier runs on the same
machine (same ``machine_id``, backend, device, dtype, protocol): a window baseline of previous
runs, or a committed baseline file (``results/baselines/``, a measurements export).
:func:`write_report` writes ``<out>/<date>/`` with the trend figure, the verdicts and a
``summary.md`` for a CI comment. Exit code: 1 on a confirmed regression (two consecutive
violating runs), 0 otherwise; bad input raises :class:`UserError` (exit 2).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.compare import (
    CONTEXT_FIELDS,
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
    DEFAULT_WINDOW,
    KEY_FIELDS,
    MIN_SAMPLES,
    check_comparable,
    compare_samples,
    group_rows,
    history_verdicts,
    key_label,
    last_shift,
)
from harness.compare.history import KeyHistory, NightlyResult, RunInfo
from harness.compare.samples import check_thresholds
from harness.errors import UserError
from harness.interference import is_contended

__all__ = [
    "KeyHistory",
    "NightlyResult",
    "RunInfo",
    "evaluate",
    "run_nightly",
    "select_history",
    "write_report",
]

#: Runs shown in the trend and walked for verdicts (older ones no longer matter to a window).
DEFAULT_HISTORY = 30
DEFAULT_OUT = Path("reports") / "nightly"


# ---------------------------------------------------------------------------------------------
# History selection (store -> rows)
# ---------------------------------------------------------------------------------------------


def select_history(store: Any, run_id: str, history: int = DEFAULT_HISTORY) -> list[dict[str, Any]]:
    """Runs on the same machine as ``run_id`` up to and including it, oldest first.

    Runs are not dropped for their status: a night where one point crashed still measured
    every other key, and dropping it would hide the consecutive night a regression needs to be
    confirmed. Per key, only that key's successful rows count (``build_histories``).
    ``history`` caps how many runs are returned (the newest ones).
    """
    run = store.require_run(run_id)
    same = [
        r
        for r in store.list_runs(machine_id=run["machine_id"])
        if r["created_at"] <= run["created_at"]
    ]
    same.sort(key=lambda r: (r["created_at"], r["id"]))
    # The run itself last even if another run shares its timestamp.
    same = [r for r in same if r["id"] != run_id] + [run]
    return same[-max(1, history) :]


def _finite_or_nan(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def build_histories(
    runs: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]] | Any,
    *,
    window: int = DEFAULT_WINDOW,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    reference_rows: Sequence[dict[str, Any]] | Any | None = None,
    min_samples: int = MIN_SAMPLES,
    run_sd: float = 0.0,
) -> tuple[list[KeyHistory], list[str]]:
    """Per key of the last run: its history over ``runs`` and the verdict of every run.

    ``run_sd``: the machine's run-to-run sd of log median, the bar of a step whose window
    is too short for its own night-to-night margin (``history_verdicts``).

    ``runs`` are run dicts (``id``, ``created_at``, ``git_commit``) oldest first, the run under
    test last; ``rows`` their measurement rows. With ``reference_rows`` (a baseline file) every
    run is judged against the file instead of the window. Returns the histories and the labels
    of keys earlier runs had but the last one lacks. Pure: no store, no files.
    """
    if not runs:
        raise UserError("no runs to evaluate")
    order = {r["id"]: i for i, r in enumerate(runs)}
    latest_id = runs[-1]["id"]
    by_run: dict[str, dict[tuple, dict[tuple, list[dict[str, Any]]]]] = {}
    all_rows = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
    for rid in order:
        by_run[rid] = group_rows([r for r in all_rows if r.get("run_id") == rid])
    latest = by_run[latest_id]
    if not latest:
        raise UserError(f"run {latest_id} has no successful measurements to compare")
    ref = group_rows(reference_rows) if reference_rows is not None else None

    histories: list[KeyHistory] = []
    for k in sorted(latest, key=lambda t: tuple(str(x) for x in t)):
        for ctx in sorted(latest[k]):
            key, context = (
                dict(zip(KEY_FIELDS, k, strict=True)),
                dict(zip(CONTEXT_FIELDS, ctx, strict=True)),
            )
            reference = None
            if ref is not None:
                if k not in ref:
                    reference = None
                elif ctx not in ref[k]:
                    other = dict(zip(CONTEXT_FIELDS, sorted(ref[k])[0], strict=True))
                    check_comparable(other, context, f"baseline file and run for {key_label(key)}")
                else:
                    reference = [float(s) for r in ref[k][ctx] for s in r["samples_ms"]]
            infos, samples, meds, los, his = [], [], [], [], []
            noisy = contended = False
            for rid, i in order.items():
                entries = by_run[rid].get(k, {}).get(ctx)
                if not entries:
                    continue
                r0 = entries[0]
                s = [float(x) for x in r0["samples_ms"]]
                run = runs[i]
                infos.append(RunInfo(rid, str(run.get("created_at", "")), run.get("git_commit")))
                samples.append(s)
                med = _finite_or_nan(r0.get("median_ms"))
                if math.isnan(med) and s:
                    med = float(sorted(s)[len(s) // 2])
                meds.append(med)
                los.append(_finite_or_nan(r0.get("ci_low_ms")))
                his.append(_finite_or_nan(r0.get("ci_high_ms")))
                flag = r0.get("noisy")
                noisy = (
                    flag is not None
                    and not (isinstance(flag, float) and math.isnan(flag))
                    and bool(flag)
                )
                contended = is_contended(r0.get("extra"))
            label = key_label(key)
            if ref is not None and reference is None:
                # The file has nothing for this key: fall back to the window, say so in the status.
                steps = history_verdicts(
                    samples, window, threshold, alpha, min_samples=min_samples, run_sd=run_sd
                )
            else:
                steps = history_verdicts(
                    samples,
                    window,
                    threshold,
                    alpha,
                    reference=reference,
                    min_samples=min_samples,
                    run_sd=run_sd,
                )
            last = steps[-1]
            latest_cmp = None
            if last.comparison is not None:
                base = (
                    reference
                    if reference is not None
                    else [x for j in last.baseline_runs for x in samples[j]]
                )
                latest_cmp = compare_samples(
                    base,
                    samples[-1],
                    last.threshold_used,
                    alpha,
                    min_samples=min_samples,
                    where=label,
                )
            finite = [m for m in meds if not math.isnan(m)]
            shift = (
                last_shift(meds, threshold) if len(finite) == len(meds) and len(meds) >= 3 else None
            )
            histories.append(
                KeyHistory(
                    key=key,
                    context=context,
                    runs=infos,
                    medians_ms=meds,
                    ci_low_ms=los,
                    ci_high_ms=his,
                    steps=steps,
                    latest=latest_cmp,
                    shift_index=shift,
                    baseline_median_ms=float(sorted(reference)[len(reference) // 2])
                    if reference
                    else None,
                    noisy=noisy,
                    contended=contended,
                )
            )
    present = {(k, c) for k in latest for c in latest[k]}
    missing = sorted(
        {
            key_label(dict(zip(KEY_FIELDS, k, strict=True)))
            for rid in list(order)[:-1]
            for k in by_run[rid]
            for c in by_run[rid][k]
            if (k, c) not in present
        }
    )
    return histories, missing


# ---------------------------------------------------------------------------------------------
# Evaluate a stored run
# ---------------------------------------------------------------------------------------------


def evaluate(
    store: Any,
    run_id: str,
    *,
    window: int = DEFAULT_WINDOW,
    baseline_file: str | Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    history: int = DEFAULT_HISTORY,
) -> NightlyResult:
    """Compare run ``run_id`` with this machine's history (or ``baseline_file``)."""
    if window < 1:
        raise UserError(f"--window must be at least 1, got {window}")
    runs = select_history(store, run_id, history)
    run = runs[-1]
    # only successful rows: a skipped/failed point has no samples and no history
    rows = store.measurements([r["id"] for r in runs], status="ok")
    # noise hooks (docs/noise.md): scale every run to this run's machine speed (canary) and keep
    # earlier contended measurements out of the baselines
    from harness.canary import canary_history_line, normalise_history
    from harness.interference import is_contended as _contended

    rows, canary_ms = normalise_history(runs, rows)
    rows = [r for r in rows if r.get("run_id") == run_id or not _contended(r.get("extra"))]
    reference_rows = None
    baseline_desc = f"median of up to {window} previous runs on machine {run['machine_id']}"
    if baseline_file is not None:
        from harness.commands.compare import read_measurements_file

        reference_rows = read_measurements_file(baseline_file)
        machines = sorted({str(r.get("machine_id")) for r in reference_rows})
        if machines != [str(run["machine_id"])]:
            raise UserError(
                f"baseline file {baseline_file} was measured on machine(s) {', '.join(machines)}, "
                f"run {run_id} on {run['machine_id']}; machine_id differs, so they are not comparable "
                "(record a baseline on this kind of machine, see results/baselines/README.md)"
            )
        baseline_desc = f"file {baseline_file}"
    # While the window is too short for its own night-to-night margin (fewer than 3 runs, or
    # a baseline file), the machine's run-to-run term sets the bar (synthetic backends: none)
    from harness import drift
    from harness.compare import DEFAULT_NOISE_QUANTILE

    timed = any(str(r.get("backend")) != "fake" for r in rows if r.get("run_id") == run_id)
    term = drift.estimate(store, str(run["machine_id"]), exclude_run=run_id) if timed else None
    histories, missing = build_histories(
        runs,
        rows,
        window=window,
        threshold=threshold,
        alpha=alpha,
        reference_rows=reference_rows,
        run_sd=term.sd if term is not None else 0.0,
    )
    short = any(len(s.baseline_runs) < 3 for k in histories for s in k.steps[-1:] if s.comparison)
    run_to_run = None
    if term is not None and short:
        from harness.compare.history import run_to_run_margin

        bar = run_to_run_margin(term.sd, 1, DEFAULT_NOISE_QUANTILE)
        src = (
            f"from {term.keys} key(s) in {term.runs} other run(s)"
            if term.source == "history"
            else "the default for a machine with little history"
        )
        run_to_run = (
            "baseline of fewer than 3 runs (or a file), too few for a night-to-night margin: "
            "the bar is at least the run-to-run bound "
            f"(sd {term.sd:.1%} of log median, {src}; +{bar:.1%} for a 1-run baseline)"
        )
    return NightlyResult(
        run_id=run_id,
        machine_id=str(run["machine_id"]),
        created_at=str(run["created_at"]),
        git_commit=run.get("git_commit"),
        baseline=baseline_desc,
        window=window,
        threshold=threshold,
        alpha=alpha,
        keys=histories,
        missing=missing,
        machine_speed=canary_history_line(runs, canary_ms),
        run_to_run=run_to_run,
    )


def write_report(
    result: NightlyResult, out: str | Path = DEFAULT_OUT, date: str | None = None
) -> Path:
    """Write ``<out>/<date>/`` (trends.html, verdicts.json, verdicts.csv, summary.md)."""
    from harness.report.trends import summary_markdown, write_trends_html

    day = date or _run_date(result.created_at)
    d = Path(out) / day
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create report directory {d}: {e.strerror}") from e
    result.out_dir = d
    write_trends_html(result, d / "trends.html")
    (d / "verdicts.json").write_text(json.dumps(result.to_dict(), indent=1, default=str) + "\n")
    (d / "verdicts.csv").write_text(_verdicts_csv(result))
    (d / "summary.md").write_text(summary_markdown(result))
    return d


def _run_date(created_at: str) -> str:
    try:
        return dt.datetime.fromisoformat(created_at).date().isoformat()
    except ValueError:
        return dt.date.today().isoformat()


def _verdicts_csv(result: NightlyResult) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            *KEY_FIELDS,
            *CONTEXT_FIELDS,
            "status",
            "baseline_median_ms",
            "candidate_median_ms",
            "ratio",
            "ratio_ci_low",
            "ratio_ci_high",
            "threshold_used",
            "p_value",
            "n_baseline",
            "n_candidate",
            "shift_run",
        ]
    )
    for k in result.keys:
        c = k.latest
        w.writerow(
            [
                *(k.key[f] for f in KEY_FIELDS),
                *(k.context[f] for f in CONTEXT_FIELDS),
                k.status,
                *(
                    ("",) * 9
                    if c is None
                    else (
                        c.baseline_median_ms,
                        c.candidate_median_ms,
                        c.ratio,
                        c.ratio_ci_low,
                        c.ratio_ci_high,
                        c.threshold,
                        c.p_value,
                        c.n_baseline,
                        c.n_candidate,
                    )
                ),
                k.shift_run.run_id if k.shift_run else "",
            ]
        )
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


#: a report folder name: one path component, no separators
_FOLDER = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,100}$")


def check_settings(
    *, window: int, threshold: float, alpha: float, date: str | None, rounds: int
) -> None:
    """Every nightly setting, checked before anything is measured (UserError, one line)."""
    if not isinstance(window, int) or window < 1:
        raise UserError(f"--window must be at least 1, got {window}")
    if not isinstance(rounds, int) or rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {rounds}")
    check_thresholds(threshold, alpha)
    if date is not None and not _FOLDER.match(date):
        raise UserError(
            f"--date must be one folder name (letters, digits, '.', '_', '-'), got {date!r}"
        )


def measure_preset(
    preset: str, protocol: str, rounds: int, db: str | None, progress: bool = False
) -> str:
    """Run the sweep preset through the sweep engine; return the new run id."""
    from harness.sweep.preset import run_preset

    return str(run_preset(preset, protocol, rounds, db, progress=progress))


def run_nightly(
    preset: str = "nightly",
    *,
    db: str | None = None,
    run_id: str | None = None,
    protocol: str = "rigorous",
    rounds: int = 5,
    baseline_file: str | Path | None = None,
    window: int = DEFAULT_WINDOW,
    out: str | Path = DEFAULT_OUT,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    date: str | None = None,
    progress: bool = False,
) -> NightlyResult:
    """Measure (unless ``run_id`` is given), evaluate against history, write the report.

    Returns the result; its ``exit_code`` is 1 on a confirmed regression, else 0. ``progress``:
    the sweep's progress on stderr while measuring (harness/progress.py).
    """
    from harness.store import Store

    check_settings(window=window, threshold=threshold, alpha=alpha, date=date, rounds=rounds)
    if baseline_file is not None and not Path(baseline_file).is_file():
        raise UserError(f"no such baseline file: {baseline_file}")
    if run_id is None:
        from harness.protocol import get_protocol

        get_protocol(protocol)  # an unknown protocol fails before anything is measured
        run_id = measure_preset(preset, protocol, rounds, db, progress)
        store = Store(db)
    else:
        store = Store(db, create=False)
    result = evaluate(
        store, run_id, window=window, baseline_file=baseline_file, threshold=threshold, alpha=alpha
    )
    result.failed = [
        f"{r['kind']} {r['name']} res={r['resolution']} tokens={r['tokens']}: {r['reason']}"
        for r in store.measurement_rows([run_id], status="failed")
    ]
    write_report(result, out, date)
    return result
