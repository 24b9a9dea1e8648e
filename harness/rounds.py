"""Measurements spread over interleaved rounds: the per-round protocol and the pooled result.

A sweep repeats its grid ``rounds`` times (the sweep's ``rounds`` or the protocol's, whichever
is larger), so every measurement's samples come from several passes, each with a freshly
built model, interleaved with the sweep's other measurements. When the rounds come from the
protocol, its sample budget (``min_runs``, ``min_time_s``, ``retakes``) is split between
them, so a standard sweep costs about what it did in one round, plus warm-ups. The stored
measurement pools the samples; its interval is over rounds (``harness.stats.summarize_rounds``)
and its interference verdict is the worst of its rounds (``harness.interference.merge_rounds``).
Stored in ``extra``: ``rounds`` (count so far), ``round_sizes`` and ``round_index`` (samples
and index of each round the statistics use, in order), ``dropped_rounds`` (contended rounds
left out, with their samples) and ``round_pids`` (the process that measured each round);
with a run-to-run term (``harness.drift``), ``ci_within_ms`` and ``run_to_run``.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Any

from harness.drift import RunToRun
from harness.interference import merge_rounds
from harness.protocol import Measurement, Protocol
from harness.stats import summarize_rounds


def plan_rounds(protocol: Protocol, sweep_rounds: int) -> tuple[int, Protocol]:
    """(rounds to run, protocol of one round)."""
    if sweep_rounds >= protocol.rounds:
        return sweep_rounds, protocol
    r = protocol.rounds
    return r, replace(
        protocol,
        min_runs=max(1, math.ceil(protocol.min_runs / r)),
        min_time_s=protocol.min_time_s / r,
        retakes=math.ceil(protocol.retakes / r),
        quiet_wait_s=protocol.quiet_wait_s / r,
    )


def _groups(previous: dict[str, Any]) -> list[tuple[int, list[float]]]:
    """(round index, samples) of every earlier round of a stored row, dropped rounds included."""
    prev_extra = previous.get("extra") or {}
    prev_samples = list(previous["samples_ms"])
    sizes = [int(x) for x in prev_extra.get("round_sizes") or [len(prev_samples)]]
    if sum(sizes) != len(prev_samples):  # rows from before round_sizes existed
        sizes = [len(prev_samples)]
    index = [int(x) for x in prev_extra.get("round_index") or range(len(sizes))]
    if len(index) != len(sizes):
        index = list(range(len(sizes)))
    out, i = [], 0
    for r, n in zip(index, sizes, strict=True):
        out.append((r, prev_samples[i : i + n]))
        i += n
    for d in prev_extra.get("dropped_rounds") or []:
        out.append((int(d["round"]), [float(x) for x in d["samples_ms"]]))
    return sorted(out, key=lambda g: g[0])


def kept_rounds(verdicts: list[str]) -> list[int]:
    """Rounds whose samples the statistics use: all of them, unless some are contended and
    more than half are not; then the contended ones are dropped (a re-take at the round
    level). Two rounds, one contended: both count (one round alone is no interval)."""
    calm = [i for i, v in enumerate(verdicts) if v != "contended"]
    if len(calm) == len(verdicts) or 2 * len(calm) <= len(verdicts):
        return list(range(len(verdicts)))
    return calm


def pool_round(
    m: Measurement,
    extra: dict[str, Any],
    previous: dict[str, Any] | None,
    rnd: int,
    confidence: float = 0.95,
    run_to_run: RunToRun | None = None,
) -> tuple[Measurement, dict[str, Any]]:
    """The measurement to store after round ``rnd``: this round's samples pooled with the
    stored row's (``previous``, or None in round 0), statistics over rounds.

    A contended round is dropped from the statistics when more than half of the rounds so far
    are not contended (its samples move to ``extra["dropped_rounds"]``, and the verdict is
    that of the rounds kept); otherwise every round counts and the measurement is contended.
    ``run_to_run`` (the sweep's, ``harness.drift``) widens the interval; the interval over
    rounds alone stays in ``extra["ci_within_ms"]`` and the term in ``extra["run_to_run"]``.
    """
    extra = dict(extra)
    merged = merge_rounds(None, m.interference)
    groups: list[tuple[int, list[float]]] = [(rnd, list(m.samples_ms))]
    if rnd > 0 and previous is not None and previous.get("status") == "ok":
        prev_extra = previous.get("extra") or {}
        groups = [*_groups(previous), *groups]
        merged = merge_rounds(prev_extra.get("interference"), m.interference)
    verdicts = list((merged or {}).get("rounds") or [])
    if len(verdicts) != len(groups):  # evidence missing for some round: keep every round
        verdicts = ["unknown" if merged is None else str(merged.get("verdict"))] * len(groups)
    keep = kept_rounds(verdicts)
    kept = [groups[i] for i in keep]
    dropped = [i for i in range(len(groups)) if i not in keep]
    extra["rounds"] = len(groups)
    pids = list(((previous or {}).get("extra") or {}).get("round_pids") or []) if rnd > 0 else []
    extra["round_pids"] = [
        *pids,
        os.getpid(),
    ]  # the process of each round (harness/sweep/worker.py)
    extra["round_sizes"] = [len(g) for _, g in kept]
    extra["round_index"] = [r for r, _ in kept]
    if dropped:
        extra["dropped_rounds"] = [
            {"round": groups[i][0], "verdict": verdicts[i], "samples_ms": groups[i][1]}
            for i in dropped
        ]
    if merged is not None:
        if dropped:
            rest = [verdicts[i] for i in keep]
            merged = {**merged, "verdict": "unknown" if "unknown" in rest else "clean"}
            merged["dropped_rounds"] = [groups[i][0] for i in dropped]
        extra["interference"] = merged
    samples = [x for _, g in kept for x in g]
    stats = summarize_rounds([g for _, g in kept], confidence)
    if run_to_run is not None and run_to_run.sd > 0:
        lo, hi = run_to_run.widen(stats.median_ms, stats.ci_low_ms, stats.ci_high_ms, confidence)
        extra["ci_within_ms"] = [stats.ci_low_ms, stats.ci_high_ms]
        extra["run_to_run"] = run_to_run.to_dict()
        stats = replace(stats, ci_low_ms=lo, ci_high_ms=hi)
    pooled = Measurement(
        samples_ms=samples,
        stats=stats,
        protocol=m.protocol,
        threads=m.threads,
        warmup_ms=m.warmup_ms,
        peak_mem_bytes=m.peak_mem_bytes,
        memory_probe=m.memory_probe,
        capped=m.capped,
        wall_s=m.wall_s,
        interference=extra.get("interference"),
    )
    return pooled, extra
