"""Join latency rows with accuracy rows on (encoder, resolution, llm, tiling, recipe).

Both sides are normalised through :mod:`harness.accuracy.keys` first. Latency does not depend
on the training recipe, so a latency row without a recipe matches every accuracy row of its
architecture (encoder, resolution, llm, tiling); ``recipe=`` restricts both sides to one
recipe (a sweep preset names the recipe its accuracy comes from). Nothing is dropped
silently: rows without a partner, or without the chosen accuracy metric, are returned in
``unmatched_latency`` / ``unmatched_accuracy`` with a ``reason``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, cast

import pandas as pd

from harness.accuracy.keys import (
    AVG5,
    BENCHMARKS,
    KEY_FIELDS,
    normalize_benchmark,
    normalize_encoder,
    normalize_llm,
    normalize_recipe,
    normalize_resolution,
    normalize_tiling,
)
from harness.errors import UserError
from harness.schema import ARCH_FIELDS, BENCHMARK_COLUMNS, LATENCY_COLUMNS, POINT_COLUMNS

# The joined-points schema (columns, benchmark list) is declared once, in harness/schema.py.


@dataclass(frozen=True)
class JoinResult:
    """Joined points plus every input row that found no partner (with a ``reason``)."""

    points: pd.DataFrame
    unmatched_latency: pd.DataFrame
    unmatched_accuracy: pd.DataFrame


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "any", "nan", "none")


def _normalize_arch(df: pd.DataFrame, what: str) -> pd.DataFrame:
    missing = [c for c in ARCH_FIELDS if c not in df.columns]
    if missing:
        raise UserError(f"{what} rows lack column(s) {', '.join(missing)}")
    out = df.copy()
    out["encoder"] = [normalize_encoder(v, strict=False) for v in out["encoder"]]
    out["resolution"] = [normalize_resolution(v) for v in out["resolution"]]
    out["llm"] = [normalize_llm(v, strict=False) for v in out["llm"]]
    out["tiling"] = [normalize_tiling(v) for v in out["tiling"]]
    return out


def expand_scores(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Store-format accuracy (a ``scores`` dict/JSON column) -> one column per benchmark."""
    out = accuracy.copy()
    if "scores" in out.columns:
        decoded = [json.loads(s) if isinstance(s, str) else (s or {}) for s in out["scores"]]
        names = sorted({normalize_benchmark(b) for d in decoded for b in d})
        for b in names:
            out[b] = [
                float(d[b]) if b in d and d[b] is not None else math.nan
                for d in ({normalize_benchmark(k): v for k, v in d.items()} for d in decoded)
            ]
    return out


def _accuracy_source(source: Any) -> str:
    text = "" if _blank(source) else str(source)
    if text.startswith("Table") or text.startswith("paper"):
        return "paper"
    if text.startswith("csv"):
        return "csv"
    if text.startswith("predicted"):
        return "predicted"
    return "ingested"


def _metric_values(acc: pd.DataFrame, benchmark: str) -> pd.Series:
    if benchmark == "avg5":
        if "avg5" in acc.columns:
            return pd.to_numeric(acc["avg5"], errors="coerce")
        if all(b in acc.columns for b in AVG5):
            return acc[list(AVG5)].astype(float).mean(axis=1, skipna=False)
        return pd.Series(math.nan, index=acc.index)
    if benchmark in acc.columns:
        return pd.to_numeric(acc[benchmark], errors="coerce")
    return pd.Series(math.nan, index=acc.index)


def join(
    latency: pd.DataFrame,
    accuracy: pd.DataFrame,
    *,
    benchmark: str = "avg5",
    recipe: str | None = None,
) -> JoinResult:
    """Join latency and accuracy rows into the joined-points table.

    ``benchmark`` is the accuracy axis (``'avg5'`` or a benchmark column); it becomes the
    ``accuracy`` column, and accuracy rows without it are reported as unmatched. ``recipe``
    assigns that recipe to latency rows without one and keeps only rows of that recipe.
    Two accuracy rows with the same key (e.g. the same model from two sources) are refused:
    filter by ``source`` first.
    """
    if benchmark != "avg5":
        benchmark = normalize_benchmark(benchmark)
    want = normalize_recipe(recipe) if recipe is not None else None
    lat = _normalize_arch(latency, "latency")
    acc = expand_scores(_normalize_arch(accuracy, "accuracy"))
    if "recipe" not in acc.columns:
        raise UserError("accuracy rows lack column recipe")
    acc["recipe"] = [normalize_recipe(v) for v in acc["recipe"]]
    lat["recipe"] = [
        None if _blank(v) else normalize_recipe(v)
        for v in (lat["recipe"] if "recipe" in lat.columns else [None] * len(lat))
    ]
    if want is not None:
        lat = lat[[r is None or r == want for r in lat["recipe"]]].copy()
        lat["recipe"] = want
        acc = acc[acc["recipe"] == want].copy()
    dupes = acc[acc.duplicated(list(KEY_FIELDS), keep=False)]
    if len(dupes):
        row = dupes.iloc[0]
        sources = (
            sorted(
                str(s)
                for s in dupes.loc[
                    (dupes[list(KEY_FIELDS)] == row[list(KEY_FIELDS)]).all(axis=1), "source"
                ]
            )
            if "source" in dupes.columns
            else []
        )
        raise UserError(
            f"{len(dupes)} accuracy rows share a key, e.g. {row['encoder']}@{row['resolution']} + "
            f"{row['llm']} ({row['tiling']}, {row['recipe']}) from {sources}; keep one source per key"
        )
    acc["accuracy"] = _metric_values(acc, benchmark).to_numpy()
    acc["accuracy_metric"] = benchmark

    points: list[dict[str, Any]] = []
    used_acc: set[int] = set()
    unmatched_lat: list[dict[str, Any]] = []
    acc_rows = acc.reset_index(drop=True)
    by_arch: dict[tuple, list[int]] = {}
    for i, a in acc_rows.iterrows():
        by_arch.setdefault(tuple(a[f] for f in ARCH_FIELDS), []).append(int(i))
    for _, lrow in lat.iterrows():
        lat_row = cast("dict[str, Any]", lrow.to_dict())  # keyed by column names
        candidates = [
            i
            for i in by_arch.get(tuple(lat_row[f] for f in ARCH_FIELDS), [])
            if lat_row["recipe"] is None or acc_rows.at[i, "recipe"] == lat_row["recipe"]
        ]
        usable = [i for i in candidates if not math.isnan(acc_rows.at[i, "accuracy"])]
        if not usable:
            reason = (
                "no accuracy row with this key"
                if not candidates
                else f"matching accuracy rows have no {benchmark}"
            )
            unmatched_lat.append({**lat_row, "reason": reason})
        for i in candidates:
            used_acc.add(i)
        for i in usable:
            points.append(_point(lat_row, acc_rows.loc[i].to_dict()))
    unmatched_acc = []
    for i, a in acc_rows.iterrows():
        if math.isnan(a["accuracy"]):
            missing = a.get("missing")
            detail = (
                f" (missing: {', '.join(missing)})" if isinstance(missing, list) and missing else ""
            )
            unmatched_acc.append({**a.to_dict(), "reason": f"no {benchmark} score{detail}"})
        elif int(i) not in used_acc:
            unmatched_acc.append({**a.to_dict(), "reason": "no latency row with this key"})
    cols = [*POINT_COLUMNS, "accuracy", "accuracy_metric"]
    return JoinResult(
        points=pd.DataFrame(points, columns=cols).reset_index(drop=True),
        unmatched_latency=pd.DataFrame(unmatched_lat, columns=[*lat.columns, "reason"]),
        unmatched_accuracy=pd.DataFrame(unmatched_acc, columns=[*acc_rows.columns, "reason"]),
    )


def _point(lat: dict[str, Any], acc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {f: acc[f] for f in KEY_FIELDS}
    for c in LATENCY_COLUMNS:
        out[c] = lat.get(c, math.nan)
    if _blank(out.get("latency_source")):
        out["latency_source"] = "measured"
    out["estimated"] = bool(out["estimated"]) if not _blank(out["estimated"]) else False
    out["avg5"] = acc.get("avg5", math.nan)
    for b in BENCHMARK_COLUMNS:
        if b != "avg5":
            out[b] = acc.get(b, math.nan)
    out["accuracy_source"] = (
        acc["accuracy_source"]
        if not _blank(acc.get("accuracy_source"))
        else _accuracy_source(acc.get("source"))
    )
    out["accuracy"] = acc["accuracy"]
    out["accuracy_metric"] = acc["accuracy_metric"]
    # an eval run with --limit (ingested with --allow-partial) is not comparable to full runs:
    # carry the mark so reports label it and the chooser can leave it out
    partial = acc.get("partial", False)
    out["accuracy_partial"] = False if _blank(partial) else bool(partial)
    return out


def known_benchmarks() -> list[str]:
    """Every benchmark column name (for CLI choices)."""
    return ["avg5", *BENCHMARKS]
