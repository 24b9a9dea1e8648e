"""Measurements spread over interleaved rounds: the per-round protocol and the pooled result.

A sweep repeats its grid ``rounds`` times (the sweep's ``rounds`` or the protocol's, whichever
is larger), so every measurement's samples come from several passes, each with a freshly
built model, interleaved with the sweep's other measurements. When the rounds come from the
protocol, its sample budget (``min_runs``, ``min_time_s``, ``retakes``) is split between
them, so a standard sweep costs about what it did in one round, plus warm-ups. The stored
measurement pools the samples; its interval is over rounds (``harness.stats.summarize_rounds``)
and its interference verdict is the worst of its rounds (``harness.interference.merge_rounds``).
Stored in ``extra``: ``rounds`` (count so far), ``round_sizes`` (samples per round, in order).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

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
    )


def pool_round(
    m: Measurement,
    extra: dict[str, Any],
    previous: dict[str, Any] | None,
    rnd: int,
    confidence: float = 0.95,
) -> tuple[Measurement, dict[str, Any]]:
    """The measurement to store after round ``rnd``: this round's samples appended to the
    stored row's (``previous``, or None in round 0), statistics over rounds."""
    extra = dict(extra)
    if m.interference is not None:
        extra["interference"] = m.interference
    if rnd > 0 and previous is not None and previous.get("status") == "ok":
        prev_extra = previous.get("extra") or {}
        prev_samples = list(previous["samples_ms"])
        sizes = [int(x) for x in prev_extra.get("round_sizes") or [len(prev_samples)]]
        if sum(sizes) != len(prev_samples):  # rows from before round_sizes existed
            sizes = [len(prev_samples)]
        groups, i = [], 0
        for n in sizes:
            groups.append(prev_samples[i : i + n])
            i += n
        groups.append(list(m.samples_ms))
        extra["rounds"] = int(prev_extra.get("rounds", 1)) + 1
        extra["round_sizes"] = [*sizes, len(m.samples_ms)]
        merged = merge_rounds(prev_extra.get("interference"), m.interference)
        if merged is not None:
            extra["interference"] = merged
    else:
        groups = [list(m.samples_ms)]
        extra["rounds"] = 1
        extra["round_sizes"] = [len(m.samples_ms)]
        if m.interference is not None:
            extra["interference"] = merge_rounds(None, m.interference)
    samples = [x for g in groups for x in g]
    stats = summarize_rounds(groups, confidence)
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
