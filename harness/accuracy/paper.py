"""The FastVLM paper's (CVPR 2025) Tables 1-6 as reference data.

``harness/data/paper_tables.csv`` holds one line per printed table row, transcribed as
printed (``-`` -> empty), with the row label, the table's group, the printed names and their
canonical forms, training data (PT+IT, millions), visual tokens, encoder size, encoder latency
(Tables 1, 3, 4) or TTFT (Table 6) on the M1 Max, every benchmark column, the paper's own
Avg-5 (Tables 1, 2, 4) and a ``note`` wherever tables disagree.

How points get a TTFT: latency depends on the architecture, not on the training data, so the
rows of one architecture (encoder, resolution, llm, tiling, and a token-path ``variant``)
share one latency row: Table 4's FastViTHD-256/Vicuna row gets Table 6 R15's TTFT. Encoder
latency is never carried across LLMs and prefill is never derived as TTFT - encoder, because
the tables disagree (Table 6 R3's whole TTFT, 166 ms, is below Table 4's FastViTHD-1024
encoder latency, 235.6 ms). Rows with no TTFT anywhere keep ``ttft_ms`` empty.
"""

from __future__ import annotations

import csv
import math
import re
from functools import lru_cache
from importlib import resources
from typing import Any

import pandas as pd

from harness.accuracy.avg5 import avg5
from harness.accuracy.join import ARCH_FIELDS, BENCHMARK_COLUMNS, POINT_COLUMNS
from harness.accuracy.keys import (
    KEY_FIELDS,
    normalize_encoder,
    normalize_llm,
    normalize_recipe,
    normalize_resolution,
    normalize_tiling,
)

PAPER_MACHINE = "Apple M1 Max (paper)"
PAPER_BACKEND = "coreml-ane+mlx-gpu (paper)"
DATA_FILE = "paper_tables.csv"

#: Benchmark columns of the data file (``seedbench_all`` is Table 5's SeedBench column).
SCORE_COLUMNS: tuple[str, ...] = (
    "gqa",
    "sqa",
    "textvqa",
    "pope",
    "llava_bench",
    "mmvet",
    "vqav2",
    "docvqa",
    "mmmu",
    "seedbench",
    "seedbench_all",
)
NUMBER_COLUMNS: tuple[str, ...] = (
    "tokens",
    "encoder_params_m",
    "encoder_ms",
    "ttft_ms",
    *SCORE_COLUMNS,
    "avg5_paper",
)

#: Variants that change only training, not the token path, so they share latency with ''.
TRAINING_ONLY_VARIANTS = {
    "frozen-encoder": "",
    "chat": "",
    "visionzip-ft-64": "visionzip-64",
    "visionzip-ft-192": "visionzip-192",
}

EXTRA_POINT_COLUMNS: tuple[str, ...] = (
    "method",
    "variant",
    "labels",
    "groups",
    "source",
    "seedbench_all",
    "avg5_paper",
    "note",
)


def _number(text: str, where: str) -> float:
    if text.strip() in ("", "-"):
        return math.nan
    f = float(text)
    if not math.isfinite(f) or f < 0:
        raise ValueError(f"{where}: bad number {text!r}")
    return f


def _source(table: str, row: str) -> str:
    return f"Table {table}, row {row}"


@lru_cache(maxsize=1)
def _load() -> pd.DataFrame:
    text = (resources.files("harness") / "data" / DATA_FILE).read_text(encoding="utf-8")
    rows: list[dict[str, Any]] = []
    for raw in csv.DictReader(text.splitlines()):
        where = f"{DATA_FILE} {raw['label']}"
        r: dict[str, Any] = dict(raw)
        r["table"] = int(raw["table"])
        r["encoder"] = normalize_encoder(raw["encoder"])
        r["resolution"] = normalize_resolution(raw["resolution"])
        r["llm"] = normalize_llm(raw["llm"])
        r["tiling"] = normalize_tiling(raw["tiling"])
        r["recipe"] = normalize_recipe(raw["data"])
        for c in NUMBER_COLUMNS:
            r[c] = _number(raw[c], f"{where} {c}")
        r["arch_variant"] = TRAINING_ONLY_VARIANTS.get(raw["variant"], raw["variant"])
        r["source"] = _source(raw["table"], raw["row"])
        scores = {b: r[b] for b in SCORE_COLUMNS if not math.isnan(r[b])}
        r["avg5"], r["missing"] = avg5(scores)
        rows.append(r)
    return pd.DataFrame(rows)


def paper_rows() -> pd.DataFrame:
    """Every transcribed row (one per printed table row), with canonical key fields, the
    computed ``avg5``/``missing``, the paper's ``avg5_paper``, ``source`` and ``note``."""
    return _load().copy()


def _merge_accuracy(group: pd.DataFrame) -> dict[str, Any]:
    """One model printed in several tables (e.g. Table 4 row 1 = Table 5 row 3 = R15)."""
    first = group.iloc[0]
    scores: dict[str, float] = {}
    for _, r in group.iterrows():
        for b in SCORE_COLUMNS:
            v = r[b]
            if math.isnan(v):
                continue
            if b in scores and scores[b] != v:
                # The transcription test guards this; a disagreement must become a variant.
                raise ValueError(f"paper tables disagree on {b}: {group['source'].tolist()}")
            scores[b] = float(v)
    value, missing = avg5(scores)
    table6 = group[group["table"] == 6]
    method = (table6.iloc[0] if len(table6) else first)["method"]
    notes = [n for n in group["note"] if n]
    return {
        **{f: first[f] for f in KEY_FIELDS},
        "scores": scores,
        "avg5": value,
        "missing": missing,
        "partial": False,
        "source": "; ".join(group["source"]),
        "accuracy_source": "paper",
        "method": method,
        "variant": first["variant"],
        "arch_variant": first["arch_variant"],
        "labels": ";".join(group["label"]),
        "groups": ";".join(dict.fromkeys(group["group"])),
        "avg5_paper": next((v for v in group["avg5_paper"] if not math.isnan(v)), math.nan),
        "tokens": first["tokens"],
        "encoder_params_m": first["encoder_params_m"],
        "note": " ".join(notes),
    }


def paper_accuracy(*, variants: bool = False) -> pd.DataFrame:
    """Accuracy rows in store format (``scores`` dict, ``avg5``, ``missing``, ``source``).

    Rows of one model repeated across tables are merged (``source`` lists them all). By
    default only plain models are returned, so the five key fields are unique; pass
    ``variants=True`` for token-pruning baselines, frozen-encoder and multi-scale variants
    too (then ``variant`` tells rows with the same key apart).
    """
    rows = _load()
    rows = rows[rows["llm"] != "none"]
    if not variants:
        rows = rows[rows["variant"] == ""]
    merged = [_merge_accuracy(g) for _, g in rows.groupby([*KEY_FIELDS, "variant"], sort=False)]
    return pd.DataFrame(merged).reset_index(drop=True)


def _params_b(llm: str) -> float:
    m = re.search(r"(\d+(?:\.\d+)?)b$", llm)
    return float(m.group(1)) if m and not llm.startswith("unreported") else math.nan


def _one(values: pd.Series) -> float:
    vals = sorted({float(v) for v in values if not math.isnan(v)})
    if len(vals) > 1:
        raise ValueError(f"paper tables disagree on a latency: {vals}")
    return vals[0] if vals else math.nan


def paper_latency(*, include_encoder_only: bool = False) -> pd.DataFrame:
    """Latency rows in joined-points latency columns, one per architecture.

    ``encoder_ms`` where Tables 1/3/4 print it, ``ttft_ms`` where Table 6 prints it, both
    when one architecture appears in both (``prefill_ms`` stays empty: the paper does not
    print it). ``recipe`` is empty: latency matches every recipe of its architecture.
    Table 3's encoder-only rows (llm ``none``) only with ``include_encoder_only``.
    """
    rows = _load()
    if not include_encoder_only:
        rows = rows[rows["llm"] != "none"]
    out = []
    for _, g in rows.groupby([*ARCH_FIELDS, "arch_variant"], sort=False):
        enc, ttft = _one(g["encoder_ms"]), _one(g["ttft_ms"])
        if math.isnan(enc) and math.isnan(ttft):
            continue
        first = g.iloc[0]
        out.append(
            {
                **{f: first[f] for f in ARCH_FIELDS},
                "recipe": None,
                "tokens": first["tokens"],
                "prompt_tokens": math.nan,
                "encoder_ms": enc,
                "projector_ms": math.nan,
                "prefill_ms": math.nan,
                "ttft_ms": ttft,
                "ttft_ci_low_ms": math.nan,
                "ttft_ci_high_ms": math.nan,
                "ttft_p90_ms": math.nan,
                "latency_source": "paper",
                "estimated": False,
                "machine": PAPER_MACHINE,
                "backend": PAPER_BACKEND,
                "encoder_params_m": first["encoder_params_m"],
                "llm_params_b": _params_b(first["llm"]),
                "run_id": None,
                "arch_variant": first["arch_variant"],
                "latency_sources": "; ".join(
                    s
                    for s, e, t in zip(g["source"], g["encoder_ms"], g["ttft_ms"], strict=True)
                    if not (math.isnan(e) and math.isnan(t))
                ),
            }
        )
    return pd.DataFrame(out).reset_index(drop=True)


def paper_groups() -> list[str]:
    """The table groups ``paper_points(group=...)`` accepts (plus prefixes like ``table6``)."""
    return list(dict.fromkeys(_load()["group"]))


def paper_points(group: str | None = None) -> pd.DataFrame:
    """Joined points from published numbers alone (``report --source paper``).

    One row per paper model (variants included, told apart by ``method``/``variant``), in the
    joined-points columns plus ``method, variant, labels, groups, source, seedbench_all,
    avg5_paper, note``. ``ttft_ms`` is empty where the paper gives none for the architecture.
    ``group`` keeps rows printed in that group (``'table6-0.5b'``) or any group starting with
    it (``'table6'``, ``'table4'``).
    """
    acc = paper_accuracy(variants=True)
    lat = paper_latency()
    lat_by_arch = {
        tuple(r[f] for f in (*ARCH_FIELDS, "arch_variant")): r for _, r in lat.iterrows()
    }
    points = []
    for _, a in acc.iterrows():
        groups = a["groups"].split(";")
        if group is not None and not any(g == group or g.startswith(group + "-") for g in groups):
            continue
        lrow = lat_by_arch.get(tuple(a[f] for f in (*ARCH_FIELDS, "arch_variant")))
        p: dict[str, Any] = {f: a[f] for f in KEY_FIELDS}
        for c in POINT_COLUMNS:
            if c in p:
                continue
            if lrow is not None and c in lrow.index:
                p[c] = lrow[c]
            else:
                p[c] = math.nan
        p.update(
            tokens=a["tokens"],
            encoder_params_m=a["encoder_params_m"],
            llm_params_b=_params_b(a["llm"]),
            latency_source="paper",
            accuracy_source="paper",
            estimated=False,
            machine=PAPER_MACHINE,
            backend=PAPER_BACKEND,
            run_id=None,
            avg5=a["avg5"],
        )
        for b in BENCHMARK_COLUMNS:
            p[b] = a["scores"].get(b, math.nan)
        for c in EXTRA_POINT_COLUMNS:
            p[c] = a["scores"].get(c, math.nan) if c == "seedbench_all" else a[c]
        points.append(p)
    if group is not None and not points:
        from harness.errors import UserError, suggest

        raise UserError(suggest(group, paper_groups(), "paper group"))
    return pd.DataFrame(points, columns=[*POINT_COLUMNS, *EXTRA_POINT_COLUMNS])
