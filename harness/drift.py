"""Run-to-run variance: how far one sweep's medians land from the next sweep's on one machine.

Rounds in fresh worker processes put process-to-process variance into a measurement's
interval (``harness.stats.summarize_rounds``), but a shared machine also has slower and
faster periods lasting minutes, so a whole 3-minute sweep can be 10-25% off the next one
(docs/noise.md, "back to back"). No sample of one sweep sees that, and the machine-speed
canary does not track it either (``scripts/bench_canary.py``). What does see it is the
store's history: the same measurement keys, measured in earlier runs on the same machine.

:func:`pooled_log_sd` is the estimate (pure): for every key measured in at least two runs, the
deviations of its log medians from their mean, scaled by ``sqrt(n / (n - 1))``, pooled over
keys; the spread is 1.4826 x their median absolute value (robust to a key whose code changed
between runs). :func:`estimate` reads it from a store: the last :data:`MAX_RUNS` earlier runs
on this machine, clean ``ok`` rows only, canary rows and synthetic (fake-backend) rows left out. With fewer than
:data:`MIN_KEYS` such keys the machine has no usable history and :data:`DEFAULT_SD` is used.

The sweep setting ``run_to_run`` picks it: ``auto`` (history, else the default; off for fake
backends), ``off``, or a number (the standard deviation of log median, e.g. ``0.05``).
:meth:`RunToRun.widen` adds ``z x sd`` to both sides of an interval in quadrature, in log
space; the sweep stores the interval it had before in ``extra["ci_within_ms"]``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

from harness.errors import UserError
from harness.interference import verdict_of

#: Standard deviation of log median between runs assumed for a machine with no history.
#: From this 2-core shared VM's back-to-back sweeps (docs/noise.md): see the numbers there.
DEFAULT_SD = 0.08
#: Keys measured in >= 2 earlier runs needed before the history replaces the default.
MIN_KEYS = 3
#: Earlier runs of the machine looked at (the newest ones): older code and older days drop out.
MAX_RUNS = 10
#: Upper bound of an accepted setting or estimate (a 2x swing is not "variance").
MAX_SD = 0.5
SETTINGS = ("auto", "off")
#: Backends whose latencies are made up, not timed: never part of a machine's history.
SYNTHETIC_BACKENDS = frozenset({"fake"})


@dataclass(frozen=True)
class RunToRun:
    """The run-to-run term of a sweep's intervals: ``sd`` of log median, and where it came
    from (``history``: ``keys`` keys over ``runs`` earlier runs; ``default``; ``setting``)."""

    sd: float
    source: str
    runs: int = 0
    keys: int = 0

    def half_width(self, confidence: float) -> float:
        """Log half-width this term adds at ``confidence`` (two-sided, normal)."""
        return NormalDist().inv_cdf(0.5 + confidence / 2.0) * self.sd

    def widen(
        self, median: float, low: float, high: float, confidence: float
    ) -> tuple[float, float]:
        """``(low, high)`` with this term added to each side in quadrature (log space)."""
        from harness.stats import widen_log

        return widen_log(median, low, high, self.half_width(confidence))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self, confidence: float = 0.95) -> str:
        pct = (math.exp(self.half_width(confidence)) - 1.0) * 100
        where = {
            "history": f"from {self.keys} key(s) measured in {self.runs} other run(s) on this machine",
            "default": "the default for a machine with no history in this store",
            "setting": "sweep setting run_to_run",
        }.get(self.source, self.source)
        return (
            f"intervals include run-to-run variance: +-{pct:.1f}% at {confidence:.0%} "
            f"(sd {self.sd:.1%} of log median, {where}; run_to_run=off leaves it out; docs/noise.md)"
        )


def parse_setting(value: Any, what: str = "run_to_run") -> float | str:
    """``auto`` / ``off`` / a number in [0, MAX_SD]; anything else is a UserError (one line)."""
    if isinstance(value, str) and value.strip().lower() in SETTINGS:
        return value.strip().lower()
    if value is False or value is None:
        return "off"
    try:
        if isinstance(value, bool):
            raise ValueError
        sd = float(value)
    except (TypeError, ValueError):
        raise UserError(
            f"{what} must be auto, off or a standard deviation of log median in [0, {MAX_SD}] "
            f"(e.g. 0.05), got {value!r}"
        ) from None
    if not (math.isfinite(sd) and 0.0 <= sd <= MAX_SD):
        raise UserError(f"{what} must be in [0, {MAX_SD}] (e.g. 0.05), got {value!r}")
    return sd


def pooled_log_sd(medians_by_key: Mapping[Any, Sequence[float]]) -> tuple[float, int]:
    """Robust pooled standard deviation of log median between runs, and the keys it used."""
    devs: list[float] = []
    used = 0
    for values in medians_by_key.values():
        logs = [math.log(v) for v in values if v is not None and v > 0 and math.isfinite(v)]
        n = len(logs)
        if n < 2:
            continue
        used += 1
        mean = sum(logs) / n
        k = math.sqrt(n / (n - 1))
        devs.extend(abs(x - mean) * k for x in logs)
    if not devs:
        return 0.0, 0
    devs.sort()
    mid = len(devs) // 2
    mad = devs[mid] if len(devs) % 2 else 0.5 * (devs[mid - 1] + devs[mid])
    return min(1.4826 * mad, MAX_SD), used


def _identity() -> tuple[str, ...]:
    """The key columns that name one measurement across runs (run and protocol left out)."""
    from harness.store import KEY_COLUMNS

    return tuple(c for c in KEY_COLUMNS if c not in ("run_id", "protocol"))


def history_medians(
    rows: Iterable[Mapping[str, Any]], exclude_kinds: Sequence[str] = ("canary",)
) -> dict[tuple[Any, ...], list[float]]:
    """Clean ``ok`` medians by measurement key (run and protocol left out), one per run."""
    out: dict[tuple[Any, ...], dict[str, float]] = defaultdict(dict)
    cols = _identity()
    for r in rows:
        if r.get("status") != "ok" or r.get("kind") in exclude_kinds:
            continue
        if str(r.get("backend")) in SYNTHETIC_BACKENDS:
            continue  # synthetic latencies repeat exactly: they would claim a perfect machine
        med = r.get("median_ms")
        if verdict_of(r.get("extra")) == "contended" or med is None or not med > 0:
            continue
        out[tuple(r.get(c) for c in cols)][str(r.get("run_id"))] = float(med)
    return {k: list(v.values()) for k, v in out.items()}


def estimate(store: Any, machine_id: str, exclude_run: str | None = None) -> RunToRun:
    """The machine's run-to-run term from ``store``'s earlier runs, else :data:`DEFAULT_SD`."""
    runs = [r for r in store.list_runs(machine_id=machine_id) if r["id"] != exclude_run]
    ids = [r["id"] for r in runs]
    if len(ids) >= 2:
        rows = [
            r
            for r in store.measurement_rows(ids, status="ok")
            if str(r.get("backend")) not in SYNTHETIC_BACKENDS
        ]
        timed = set(str(r.get("run_id")) for r in rows)
        keep = [i for i in ids if str(i) in timed][-MAX_RUNS:]  # the newest timed runs
        by_key = history_medians([r for r in rows if r.get("run_id") in set(keep)])
        sd, keys = pooled_log_sd(by_key)
        if len(keep) >= 2 and keys >= MIN_KEYS:
            return RunToRun(sd, "history", runs=len(keep), keys=keys)
    return RunToRun(DEFAULT_SD, "default")


def resolve(
    setting: Any, store: Any, machine_id: str, run_id: str, timed_here: bool
) -> RunToRun | None:
    """The sweep's term, or None when it is off (``off``, 0, or ``auto`` with fake backends)."""
    s = parse_setting(setting)
    if s == "off" or (s == "auto" and not timed_here):
        return None
    if s == "auto":
        return estimate(store, machine_id, exclude_run=run_id)
    assert isinstance(s, float)
    return RunToRun(s, "setting") if s > 0 else None
