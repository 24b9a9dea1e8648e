"""Tidy accuracy CSV (read/write) and the latency CSV import.

Accuracy: ``encoder,resolution,llm,tiling,recipe,benchmark,score[,partial]``, one score per
line on the 0-100 scale. Latency: ``encoder,resolution,llm,tiling,encoder_ms,prefill_ms
[,ttft_ms]`` plus optional ``tokens, prompt_tokens, projector_ms, recipe, machine, backend``
for numbers measured elsewhere (a phone, Xcode). Errors name the file, line and column.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from harness.accuracy.avg5 import AccuracyRow, ScoreRecord
from harness.accuracy.keys import normalize_benchmark, normalize_key, normalize_recipe
from harness.errors import UserError, read_user_text

ACCURACY_COLUMNS: tuple[str, ...] = (
    "encoder",
    "resolution",
    "llm",
    "tiling",
    "recipe",
    "benchmark",
    "score",
)
LATENCY_REQUIRED: tuple[str, ...] = (
    "encoder",
    "resolution",
    "llm",
    "tiling",
    "encoder_ms",
    "prefill_ms",
)
LATENCY_OPTIONAL: tuple[str, ...] = (
    "ttft_ms",
    "projector_ms",
    "tokens",
    "prompt_tokens",
    "recipe",
    "machine",
    "backend",
)

#: ttft_ms given in a latency CSV must equal encoder + projector + prefill to this much.
TTFT_TOLERANCE_MS = 0.5
TTFT_TOLERANCE_REL = 0.01


def _rows(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...]
) -> list[tuple[int, dict[str, str]]]:
    try:
        return _parse_rows(path, required, optional)
    except csv.Error as e:  # NUL bytes, a field over the size limit, ...
        raise UserError(f"{path}: not a readable CSV file ({e})") from e


def _parse_rows(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...]
) -> list[tuple[int, dict[str, str]]]:
    text = read_user_text(path, encoding="utf-8-sig")  # -sig: spreadsheets write a BOM
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)} (expected {','.join(required)})"
        )
    extra = [c for c in header if c not in required and c not in optional]
    if extra:
        raise UserError(
            f"{path}: unknown column(s) {', '.join(extra)} "
            f"(allowed: {', '.join((*required, *optional))})"
        )
    out = []
    for lineno, raw in enumerate(reader, start=2):
        if None in raw:
            raise UserError(f"{path}:{lineno}: more fields than the header has")
        row = {k.strip(): (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        out.append((lineno, row))
    return out


def _float(text: str, where: str, *, low: float | None = 0.0, high: float | None = None) -> float:
    try:
        f = float(text)
    except ValueError as e:
        raise UserError(f"{where}: {text!r} is not a number") from e
    if not math.isfinite(f):
        raise UserError(f"{where}: {text!r} is not a finite number")
    if (low is not None and f < low) or (high is not None and f > high):
        raise UserError(f"{where}: {f} is outside {low}-{high if high is not None else 'inf'}")
    return f


def _wrap(where: str, fn, *args, **kwargs):
    """Call a normaliser, prefixing its error with the file and line."""
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        raise UserError(f"{where}: {e}") from e


def read_accuracy_csv(path: str | Path, *, strict_names: bool = True) -> list[ScoreRecord]:
    """Read a tidy accuracy CSV into score records (scores 0-100; ``partial`` optional)."""
    p = Path(path)
    records = []
    for lineno, row in _rows(p, ACCURACY_COLUMNS, ("partial",)):
        where = f"{p}:{lineno}"
        key = _wrap(
            where,
            normalize_key,
            row["encoder"],
            row["resolution"],
            row["llm"],
            row["tiling"] or "none",
            row["recipe"],
            strict=strict_names,
        )
        bench = _wrap(f"{where}: benchmark", normalize_benchmark, row["benchmark"])
        score = _float(row["score"], f"{where}: score", low=0.0, high=100.0)
        partial = row.get("partial", "").lower() in ("1", "true", "yes")
        records.append(ScoreRecord(key, bench, score, f"{p}:{lineno}", partial))
    if not records:
        raise UserError(f"{p}: no rows")
    return records


def write_accuracy_csv(rows: Iterable[AccuracyRow], path: str | Path) -> None:
    """Write accuracy rows as a tidy CSV that :func:`read_accuracy_csv` reads back."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([*ACCURACY_COLUMNS, "partial"])
        for r in rows:
            for bench, score in sorted(r.scores.items()):
                k = r.key
                w.writerow(
                    [
                        k.encoder,
                        k.resolution,
                        k.llm,
                        k.tiling,
                        k.recipe,
                        bench,
                        f"{score:.4f}",
                        "true" if r.partial else "false",
                    ]
                )


def read_latency_csv(path: str | Path, *, strict_names: bool = False) -> pd.DataFrame:
    """Read latency measured elsewhere into joined-points latency columns.

    ``ttft_ms`` defaults to encoder + projector + prefill; when given it must agree with that
    sum (to 0.5 ms or 1%). Rows get ``latency_source='imported'``.
    """
    p = Path(path)
    out = []
    for lineno, row in _rows(p, LATENCY_REQUIRED, LATENCY_OPTIONAL):
        where = f"{p}:{lineno}"
        key = _wrap(
            where,
            normalize_key,
            row["encoder"],
            row["resolution"],
            row["llm"],
            row["tiling"] or "none",
            "llava-1.5",
            strict=strict_names,
        )
        enc = _float(row["encoder_ms"], f"{where}: encoder_ms")
        pre = _float(row["prefill_ms"], f"{where}: prefill_ms")
        proj = (
            _float(row["projector_ms"], f"{where}: projector_ms")
            if row.get("projector_ms")
            else 0.0
        )
        total = enc + proj + pre
        if row.get("ttft_ms"):
            ttft = _float(row["ttft_ms"], f"{where}: ttft_ms")
            if abs(ttft - total) > max(TTFT_TOLERANCE_MS, TTFT_TOLERANCE_REL * total):
                raise UserError(
                    f"{where}: ttft_ms {ttft} != encoder_ms + projector_ms + prefill_ms "
                    f"= {total:.3f}; fix one of them or leave ttft_ms empty"
                )
        else:
            ttft = total
        tokens = int(_float(row["tokens"], f"{where}: tokens")) if row.get("tokens") else math.nan
        prompt = (
            int(_float(row["prompt_tokens"], f"{where}: prompt_tokens"))
            if row.get("prompt_tokens")
            else 0
        )
        recipe = _wrap(where, normalize_recipe, row["recipe"]) if row.get("recipe") else None
        out.append(
            {
                "encoder": key.encoder,
                "resolution": key.resolution,
                "llm": key.llm,
                "tiling": key.tiling,
                "recipe": recipe,
                "tokens": tokens,
                "prompt_tokens": prompt,
                "encoder_ms": enc,
                "projector_ms": proj if row.get("projector_ms") else math.nan,
                "prefill_ms": pre,
                "ttft_ms": ttft,
                "ttft_ci_low_ms": math.nan,
                "ttft_ci_high_ms": math.nan,
                "ttft_p90_ms": math.nan,
                "latency_source": "imported",
                "estimated": False,
                "machine": row.get("machine") or "unknown",
                "backend": row.get("backend") or "unknown",
                "run_id": None,
            }
        )
    if not out:
        raise UserError(f"{p}: no rows")
    return pd.DataFrame(out)
