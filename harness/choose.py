"""Pick the most accurate configuration whose TTFT fits a budget (pure; no I/O).

Input is the joined-points table (docs/DESIGN.md). The budget is compared with a chosen
*basis* column: by default the upper end of the TTFT confidence interval, because a
configuration whose median just fits will miss the budget about half of the time. Rows that
lack the basis value fall back (CI high -> p90 -> median) and the result says how many did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import UserError, suggest
from harness.pareto import pareto_front
from harness.schema import BENCHMARK_COLUMNS as SCHEMA_BENCHMARKS
from harness.schema import OPTION_FIELDS

#: --by value -> (column, fallbacks in order, human description)
BASES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "ci-high": (
        "ttft_ci_high_ms",
        ("ttft_p90_ms", "ttft_ms"),
        "the upper end of the TTFT confidence interval",
    ),
    "p90": ("ttft_p90_ms", ("ttft_ms",), "the 90th percentile of TTFT"),
    "median": ("ttft_ms", (), "the median TTFT"),
}

#: Accuracy columns a choice can maximise (``avg5`` plus every benchmark; harness/schema.py).
BENCHMARK_COLUMNS = ("avg5", *SCHEMA_BENCHMARKS)


@dataclass(frozen=True)
class Limits:
    """Optional hard limits a configuration must respect (None = no limit)."""

    max_encoder_params_m: float | None = None
    max_tokens: int | None = None
    max_llm_params_b: float | None = None
    max_memory_gb: float | None = None


@dataclass(frozen=True)
class NextStep:
    """The cheapest frontier point more accurate than the choice (what more budget buys)."""

    option: dict[str, Any]
    budget_needed_ms: float
    extra_ms: float
    accuracy_gain: float


@dataclass(frozen=True)
class ChooseResult:
    """The answer to "what should I deploy under this budget?".

    ``choice`` is None when nothing fits; ``fastest`` is then the quickest eligible option.
    Each option is a plain dict of the point's columns plus ``accuracy`` (the chosen
    benchmark) and ``budget_ttft_ms`` (the value compared with the budget) and ``basis``.
    """

    budget_ms: float
    by: str
    basis_description: str
    benchmark: str
    choice: dict[str, Any] | None
    alternatives: list[dict[str, Any]]
    frontier: list[dict[str, Any]]
    next_step: NextStep | None
    fastest: dict[str, Any] | None
    n_points: int
    n_eligible: int
    n_fit: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: ``{"choice", "alternatives", "frontier", ...}``."""
        return {
            "choice": self.choice,
            "alternatives": self.alternatives,
            "frontier": self.frontier,
            "next_step": None
            if self.next_step is None
            else {
                "option": self.next_step.option,
                "budget_needed_ms": self.next_step.budget_needed_ms,
                "extra_ms": self.next_step.extra_ms,
                "accuracy_gain": self.next_step.accuracy_gain,
            },
            "fastest": self.fastest,
            "budget_ms": self.budget_ms,
            "by": self.by,
            "basis": self.basis_description,
            "benchmark": self.benchmark,
            "counts": {"points": self.n_points, "eligible": self.n_eligible, "fit": self.n_fit},
            "notes": self.notes,
        }


def check_budget(budget: Any) -> float:
    """The budget as a positive finite float, or a UserError."""
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise UserError(f"budget must be a number of milliseconds, not {budget!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"budget must be a positive number of milliseconds, not {budget!r}")
    return value


def check_benchmark(points: pd.DataFrame, benchmark: str) -> str:
    """Validate the objective column name (lower-case benchmark or ``avg5``)."""
    name = str(benchmark).strip().lower()
    known = set(BENCHMARK_COLUMNS) | {
        c
        for c in points.columns
        if c not in OPTION_FIELDS and pd.api.types.is_numeric_dtype(points[c])
    }
    if name not in known:
        raise UserError(suggest(benchmark, sorted(set(BENCHMARK_COLUMNS)), "benchmark"))
    return name


def _clean(value: Any) -> Any:
    """JSON-friendly scalar (numpy -> Python, NaN -> None)."""
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _option(row: pd.Series, benchmark: str, by: str) -> dict[str, Any]:
    out = {c: _clean(row[c]) for c in OPTION_FIELDS if c in row.index}
    out["accuracy"] = _clean(row[benchmark])
    out["benchmark"] = benchmark
    out["budget_ttft_ms"] = _clean(row["_basis"])
    out["basis"] = row["_basis_col"]
    return out


def _basis(
    points: pd.DataFrame, by: str, relevant: pd.Series
) -> tuple[pd.Series, pd.Series, list[str]]:
    if by not in BASES:
        raise UserError(suggest(by, BASES, "--by value"))
    col, fallbacks, _ = BASES[by]
    value = pd.Series(np.nan, index=points.index, dtype=float)
    used = pd.Series("", index=points.index, dtype=object)
    notes: list[str] = []
    for c in (col, *fallbacks):
        if c not in points.columns:
            continue
        vals = pd.to_numeric(points[c], errors="coerce")
        fill = value.isna() & vals.notna()
        value[fill] = vals[fill]
        used[fill] = c
        n_fallback = int((fill & relevant).sum())
        if c != col and n_fallback:
            notes.append(
                f"{n_fallback} point(s) have no {col}; their {c} was compared with the budget"
            )
    return value, used, notes


def _flag(df: pd.DataFrame, column: str) -> np.ndarray:
    """A boolean column as a mask; missing column or missing values are False."""
    if column not in df:
        return np.zeros(len(df), dtype=bool)
    return np.array(
        [bool(v) if v is not None and v == v else False for v in df[column]], dtype=bool
    )


def _limit_mask(points: pd.DataFrame, limits: Limits) -> tuple[np.ndarray, list[str]]:
    mask = np.ones(len(points), dtype=bool)
    notes: list[str] = []
    checks = [
        ("max_encoder_params_m", "encoder_params_m", 1.0, "encoder parameters (M)"),
        ("max_tokens", "tokens", 1.0, "visual tokens"),
        ("max_llm_params_b", "llm_params_b", 1.0, "LLM parameters (B)"),
        ("max_memory_gb", "peak_mem_bytes", 1e9, "peak memory (GB)"),
    ]
    for attr, col, scale, what in checks:
        limit = getattr(limits, attr)
        if limit is None:
            continue
        if not limit > 0:  # NaN too (it fails every comparison)
            raise UserError(f"--{attr.replace('_', '-')} must be a positive number, not {limit}")
        if col not in points.columns or pd.to_numeric(points[col], errors="coerce").isna().all():
            raise UserError(f"no point has {what} ({col}); cannot apply --{attr.replace('_', '-')}")
        vals = pd.to_numeric(points[col], errors="coerce").to_numpy(float) / scale
        unknown = np.isnan(vals)
        if unknown.any():
            notes.append(
                f"{int(unknown.sum())} point(s) without {col} excluded by --{attr.replace('_', '-')}"
            )
        mask &= ~unknown & (np.nan_to_num(vals, nan=np.inf) <= limit)
    return mask, notes


def choose(
    points: pd.DataFrame,
    budget_ms: float,
    *,
    benchmark: str = "avg5",
    by: str = "ci-high",
    limits: Limits = Limits(),
    n_alternatives: int = 3,
) -> ChooseResult:
    """Most accurate option whose ``by``-TTFT fits ``budget_ms``, with alternatives and context.

    Ties in accuracy go to the lower budget TTFT, then the lower median TTFT, then the name
    order, so the answer is deterministic. Raises UserError for a bad budget, an unknown
    benchmark or ``by``, no points, or no accuracy for any point.
    """
    budget = check_budget(budget_ms)
    if points is None or len(points) == 0:
        raise UserError(
            "no points to choose from (empty store or no rows matched); run a sweep or use --source paper"
        )
    bench = check_benchmark(points, benchmark)
    if bench not in points.columns or pd.to_numeric(points[bench], errors="coerce").isna().all():
        raise UserError(
            f"no point has {bench} accuracy; ingest accuracy (vlm-pareto ingest), pass --accuracy FILE, "
            "or use --source paper"
        )
    df = points.reset_index(drop=True).copy()
    df["_acc"] = pd.to_numeric(df[bench], errors="coerce")
    basis, used, notes = _basis(df, by, df["_acc"].notna())
    df["_basis"], df["_basis_col"] = basis, used
    limit_ok, limit_notes = _limit_mask(df, limits)
    notes += limit_notes

    no_acc = int(df["_acc"].isna().sum())
    no_ttft = int(df["_basis"].isna().sum())
    if no_acc:
        notes.append(f"{no_acc} point(s) without {bench} accuracy ignored")
    if no_ttft:
        notes.append(f"{no_ttft} point(s) without TTFT ignored")
    # Accuracy from a --limit eval run is not comparable with full runs: never let it win.
    partial = _flag(df, "accuracy_partial")
    if partial.any():
        notes.append(f"{int(partial.sum())} point(s) with partial (--limit) accuracy left out")
    contended = _flag(df, "contended")
    if contended.any():
        notes.append(
            f"{int(contended.sum())} point(s) measured while the machine was "
            "busy (contended): their latency is unreliable, re-measure on a quiet machine (docs/noise.md)"
        )
    eligible = df[
        limit_ok & df["_acc"].notna().to_numpy() & df["_basis"].notna().to_numpy() & ~partial
    ]
    sort_keys = ["_acc", "_basis", "ttft_ms"] + [
        c for c in ("encoder", "llm", "resolution", "tiling", "recipe") if c in df
    ]
    ascending = [False, True, True] + [True] * (len(sort_keys) - 3)
    if "ttft_ms" not in df:
        sort_keys.remove("ttft_ms")
        ascending.pop(2)
    ranked = eligible.sort_values(sort_keys, ascending=ascending, kind="mergesort")
    fits = ranked[ranked["_basis"] <= budget]

    front_df = pd.DataFrame()
    if len(eligible):
        res = pareto_front(
            eligible[["_acc", "_basis"]].to_numpy(), (("acc", "max"), ("ttft", "min"))
        )
        front_df = eligible.iloc[res.front].sort_values(["_basis", "_acc"], kind="mergesort")
    frontier = [_option(r, bench, by) for _, r in front_df.iterrows()]

    choice = _option(fits.iloc[0], bench, by) if len(fits) else None
    alternatives = [_option(r, bench, by) for _, r in fits.iloc[1 : 1 + n_alternatives].iterrows()]

    next_step = None
    if choice is not None and len(front_df):
        better = front_df[front_df["_acc"] > choice["accuracy"]]
        if len(better):
            r = better.iloc[0]
            next_step = NextStep(
                option=_option(r, bench, by),
                budget_needed_ms=float(r["_basis"]),
                extra_ms=float(r["_basis"] - budget),
                accuracy_gain=float(r["_acc"] - choice["accuracy"]),
            )
    fastest = None
    if choice is None and len(eligible):
        fastest = _option(
            eligible.sort_values(
                ["_basis", "_acc"], ascending=[True, False], kind="mergesort"
            ).iloc[0],
            bench,
            by,
        )

    return ChooseResult(
        budget_ms=budget,
        by=by,
        basis_description=BASES[by][2],
        benchmark=bench,
        choice=choice,
        alternatives=alternatives,
        frontier=frontier,
        next_step=next_step,
        fastest=fastest,
        n_points=len(df),
        n_eligible=len(eligible),
        n_fit=len(fits),
        notes=notes,
    )
