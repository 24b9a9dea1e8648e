"""Where a configuration's accuracy comes from: known rows, a fitted surrogate, or a
synthetic law for benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from harness.errors import UserError, suggest
from harness.search.space import Config

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
        penalty = np.array(
            [0.0 if not c.startswith(("encoder=", "recipe=")) else ridge for c in cols]
        )
        coef, loo = _ridge(x, y, penalty)
        return AccuracySurrogate(
            tuple(float(v) for v in coef), tuple(cols), token_range, len(df), loo, target
        )

    def predict(
        self, encoder: str, tiling: str, recipe: str, tokens: float, llm_params_b: float
    ) -> float:
        row = pd.DataFrame(
            [
                {
                    "encoder": encoder,
                    "tiling": tiling,
                    "recipe": recipe,
                    "tokens": tokens,
                    "llm_params_b": llm_params_b,
                }
            ]
        )
        x = _features(row, list(self.columns), self.token_range)
        return float(np.clip(x @ np.asarray(self.coef), 0.0, 100.0)[0])

    def describe(self) -> str:
        return (
            f"accuracy surrogate: ridge on log2(tokens), log2(LLM params), tiling, encoder and recipe offsets; "
            f"fitted on {self.n_rows} row(s), leave-one-out RMSE {self.loo_rmse:.2f} {self.target} points"
        )


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
        return self.surrogate.predict(
            c.encoder, c.tiling, self.recipe, tokens, llm_params_b
        ), "predicted"


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
    from harness.points import accuracy_rows

    bench = str(benchmark).strip().lower()
    if bench not in known_benchmarks():
        raise UserError(suggest(benchmark, known_benchmarks(), "benchmark"))
    want = normalize_recipe(recipe)
    notes: list[str] = []
    acc = expand_scores(accuracy_rows(db, True, accuracy_files, paper, notes))
    if bench not in acc.columns:
        acc[bench] = math.nan
    known: dict[tuple, tuple[float, str]] = {}
    train = []
    for r in acc.to_dict("records"):
        value = pd.to_numeric(r.get(bench), errors="coerce")  # type: ignore[call-overload]
        if value is None or not math.isfinite(float(value)):
            continue
        try:
            k = normalize_key(r["encoder"], r["resolution"], r["llm"], r["tiling"], r["recipe"])
            params_b = get_llm_spec(k.llm).params_b
        except UserError:
            continue  # a model the zoo does not know cannot be placed on the features
        tokens = pd.to_numeric(r.get("tokens"), errors="coerce")  # type: ignore[call-overload]
        if tokens is None or not math.isfinite(float(tokens)):
            try:
                tokens = encoder_tokens(k.encoder, k.resolution, k.tiling)
            except UserError:
                continue
        if k.recipe == want:
            known[(k.encoder, k.resolution, k.llm, k.tiling, k.recipe)] = (
                float(value),
                str(r["accuracy_source"]),
            )
        train.append(
            {
                "encoder": k.encoder,
                "tiling": k.tiling,
                "recipe": k.recipe,
                "tokens": float(tokens),
                "llm_params_b": params_b,
                "accuracy": float(value),
            }
        )
    surrogate = AccuracySurrogate.fit(
        pd.DataFrame(
            train, columns=["encoder", "tiling", "recipe", "tokens", "llm_params_b", "accuracy"]
        ),
        target="accuracy",
    )
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
    value = (
        50.0
        + 10.0 * (1.0 - math.exp(-tokens / 256.0))
        + 3.0 * math.log2(llm_params_b / 0.5)
        + offset
        - (0.5 if c.tiling != "none" else 0.0)
    )
    return value, "synthetic"
