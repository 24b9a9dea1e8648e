"""Accuracy rows and Avg-5 = mean of GQA, TextVQA, POPE, DocVQA, SeedBench-image (paper Sec. 4).

Pure functions. Avg-5 exists only when all five scores are present; otherwise it is ``None``
and the missing benchmarks are listed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from harness.accuracy.keys import AVG5, Key
from harness.errors import UserError


def missing_avg5(scores: Mapping[str, float | None]) -> list[str]:
    """The Avg-5 benchmarks absent (or NaN/None) in ``scores``, in Avg-5 order."""
    out = []
    for name in AVG5:
        value = scores.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(name)
    return out


def avg5(scores: Mapping[str, float | None]) -> tuple[float | None, list[str]]:
    """Return ``(avg5, missing)`` for scores on the 0-100 scale.

    The value is unrounded (the paper prints one decimal; round only for display). Whether
    partial (``--limit``) scores may enter is decided by the caller before this point.
    """
    missing = missing_avg5(scores)
    if missing:
        return None, missing
    # missing_avg5 found every AVG5 score present (not None)
    return sum(float(cast(float, scores[b])) for b in AVG5) / len(AVG5), []


# --- accuracy rows: one per key, merged from per-benchmark score records -----------------


@dataclass(frozen=True)
class ScoreRecord:
    """One benchmark score for one key, from one input (results file, CSV line, store row)."""

    key: Key
    benchmark: str
    value: float  # 0-100
    origin: str  # file (and field) it came from, for error messages
    partial: bool = False
    date: datetime | None = None  # for --prefer newest


@dataclass(frozen=True)
class AccuracyRow:
    """One accuracy row in store format (scores 0-100, Avg-5 or the list of what is missing)."""

    key: Key
    scores: dict[str, float]
    avg5: float | None
    missing: list[str]
    partial: bool
    source: str
    origins: tuple[str, ...] = field(default=())

    def to_store(self) -> dict[str, Any]:
        """The dict ``Store.add_accuracy`` takes."""
        return {
            **self.key.as_dict(),
            "scores": {b: round(v, 4) for b, v in self.scores.items()},
            "avg5": self.avg5,
            "missing": list(self.missing),
            "partial": self.partial,
            "source": self.source,
        }

    def to_json(self) -> dict[str, Any]:
        """The ``ingest --json`` shape."""
        return {
            **self.key.as_dict(),
            "scores": {b: round(v, 4) for b, v in self.scores.items()},
            "avg5": None if self.avg5 is None else round(self.avg5, 4),
            "missing": list(self.missing),
            "partial": self.partial,
            "source": self.source,
            "files": list(dict.fromkeys(_file_of(o) for o in self.origins)),
        }


def _file_of(origin: str) -> str:
    """'tidy.csv:7' -> 'tidy.csv' (CSV origins carry a line number)."""
    head, _, tail = origin.rpartition(":")
    return head if head and tail.isdigit() else origin


def _same(a: float, b: float) -> bool:
    # Scores pass through float parsing and *100; equal to 1e-6 points is the same score.
    return abs(a - b) <= 1e-6


def _choose(records: list[ScoreRecord], prefer: str | None) -> ScoreRecord:
    """Pick one record among duplicates of (key, benchmark); refuse real conflicts."""
    first = records[0]
    if all(_same(r.value, first.value) and r.partial == first.partial for r in records):
        return first
    if all(_same(r.value, first.value) for r in records):
        # Same number from a full and a partial run: the full run says more.
        return next(r for r in records if not r.partial)
    if prefer != "newest":
        a, b = next((x, y) for x in records for y in records if not _same(x.value, y.value))
        raise UserError(
            f"conflicting {first.benchmark} scores for {_describe(first.key)}: {a.value:.2f} in "
            f"{a.origin} vs {b.value:.2f} in {b.origin}; remove one or pass --prefer newest"
        )
    undated = [r.origin for r in records if r.date is None]
    if undated:
        raise UserError(
            f"--prefer newest: {undated[0]} has no 'date' field and no timestamp in "
            f"its name, so the newest {first.benchmark} score cannot be chosen"
        )
    ordered = sorted(records, key=lambda r: r.date)  # type: ignore[arg-type, return-value]
    if ordered[-1].date == ordered[-2].date and not _same(ordered[-1].value, ordered[-2].value):
        raise UserError(
            f"--prefer newest: {ordered[-1].origin} and {ordered[-2].origin} have the "
            f"same date but different {first.benchmark} scores"
        )
    return ordered[-1]


def _describe(key: Key) -> str:
    return f"{key.encoder}@{key.resolution} + {key.llm} (tiling {key.tiling}, recipe {key.recipe})"


def merge_records(
    records: list[ScoreRecord], source: str, *, prefer: str | None = None
) -> list[AccuracyRow]:
    """Merge score records into one :class:`AccuracyRow` per key (sorted by key).

    Benchmarks spread over several files for one key are combined. The same benchmark twice
    with the same score is harmless; with different scores it is a :class:`UserError` unless
    ``prefer='newest'``, which keeps the record with the latest date.
    """
    if prefer not in (None, "newest"):
        raise UserError(f"unknown --prefer {prefer!r} (valid: newest)")
    grouped: dict[Key, dict[str, list[ScoreRecord]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        grouped[rec.key][rec.benchmark].append(rec)
    rows = []
    for key in sorted(grouped):
        chosen = {b: _choose(recs, prefer) for b, recs in grouped[key].items()}
        scores = {b: chosen[b].value for b in sorted(chosen)}
        value, missing = avg5(scores)
        origins = tuple(sorted({r.origin for recs in grouped[key].values() for r in recs}))
        rows.append(
            AccuracyRow(
                key,
                scores,
                value,
                missing,
                any(r.partial for r in chosen.values()),
                source,
                origins,
            )
        )
    return rows
