"""The tables the harness passes between stages, declared once.

- **benchmarks**: the accuracy columns (lower-case), the first five making up Avg-5;
- **TTFT rows**: what :func:`harness.ttft.compose_ttft` produces from stored measurements;
- **joined points**: TTFT rows joined with accuracy rows (:mod:`harness.accuracy.join`), the
  one table reports, ``choose``, ``search`` and the Pareto functions consume
  (docs/DESIGN.md "Joined points" is generated from the same tuples);
- **file versions**: the ``schema_version`` written into exported measurement files and
  nightly baselines, bumped when their layout changes.

Pure data, no imports beyond the standard library: any module may use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: Benchmarks of Avg-5 (the paper's average), in the paper's order.
AVG5: tuple[str, ...] = ("gqa", "textvqa", "pope", "docvqa", "seedbench")
#: Every benchmark column (Avg-5 first), lower-case, as used everywhere.
BENCHMARK_COLUMNS: tuple[str, ...] = (*AVG5, "sqa", "mmmu", "mmvet", "vqav2", "llava_bench")
#: Scores that can be ingested and chosen by but have no column of their own in the points
#: (Table 5's SeedBench-all is not SeedBench-image; it never enters Avg-5).
OTHER_BENCHMARKS: tuple[str, ...] = ("seedbench_all",)

#: What identifies one point: architecture + the training recipe its accuracy came from.
ARCH_FIELDS: tuple[str, ...] = ("encoder", "resolution", "llm", "tiling")
KEY_FIELDS: tuple[str, ...] = (*ARCH_FIELDS, "recipe")

#: Where a point's latency / accuracy came from.
LATENCY_SOURCES: tuple[str, ...] = ("measured", "imported", "paper", "predicted")
ACCURACY_SOURCES: tuple[str, ...] = ("ingested", "csv", "paper", "predicted")

#: Columns that describe a point's latency, carried from the TTFT rows into the points.
LATENCY_COLUMNS: tuple[str, ...] = (
    "tokens",
    "prompt_tokens",
    "encoder_ms",
    "projector_ms",
    "prefill_ms",
    "ttft_ms",
    "ttft_ci_low_ms",
    "ttft_ci_high_ms",
    "ttft_p90_ms",
    "latency_source",
    "estimated",
    "machine",
    "backend",
    "encoder_params_m",
    "llm_params_b",
    "peak_mem_bytes",
    "run_id",
    "interference",
    "contended",
)

#: The rows ``compose_ttft`` returns: one per (encoder, resolution, tiling, LLM) measured.
TTFT_COLUMNS: tuple[str, ...] = (
    *ARCH_FIELDS,
    "tokens",
    "prompt_tokens",
    "encoder_ms",
    "projector_ms",
    "prefill_ms",
    "ttft_ms",
    "ttft_ci_low_ms",
    "ttft_ci_high_ms",
    "ttft_p90_ms",
    "estimated",
    "backend",
    "machine",
    "run_id",
    "encoder_backend",
    "prefill_backend",
    "dtype",
    "encoder_params_m",
    "llm_params_b",
    "latency_source",
    "peak_mem_bytes",
    "interference",
    "contended",
)

#: The joined-points table (one row per (encoder, resolution, llm, tiling, recipe)).
POINT_COLUMNS: tuple[str, ...] = (
    *KEY_FIELDS,
    "tokens",
    "prompt_tokens",
    "encoder_ms",
    "projector_ms",
    "prefill_ms",
    "ttft_ms",
    "ttft_ci_low_ms",
    "ttft_ci_high_ms",
    "ttft_p90_ms",
    "avg5",
    *BENCHMARK_COLUMNS,
    "latency_source",
    "accuracy_source",
    "estimated",
    "machine",
    "backend",
    "encoder_params_m",
    "llm_params_b",
    "peak_mem_bytes",
    "run_id",
    "interference",
    "contended",
    "accuracy_partial",
)

#: Columns of a chosen option (``vlm-pareto choose``), when present in the points.
OPTION_FIELDS: tuple[str, ...] = tuple(
    c for c in POINT_COLUMNS if c not in ("avg5", *BENCHMARK_COLUMNS, "accuracy_partial")
)

#: Layout version of exported measurement files (CSV/JSON/Parquet) and nightly baselines:
#: a ``schema_version`` column in every row. Files from before versioning have none (= 1).
FILE_SCHEMA_VERSION = 1


def check_file_version(rows: Iterable[Any], where: str) -> None:
    """Refuse rows written with a newer file layout than this version reads (UserError)."""
    from harness.errors import UserError

    for r in rows:
        v = r.get("schema_version") if isinstance(r, dict) else None
        if v is None or v != v:  # absent or NaN: written before versioning
            continue
        try:
            version = int(v)
        except (TypeError, ValueError):
            raise UserError(f"{where}: schema_version {v!r} is not a number") from None
        if version > FILE_SCHEMA_VERSION:
            raise UserError(
                f"{where} has file schema_version {version}; this vlm-pareto reads up to "
                f"{FILE_SCHEMA_VERSION}: upgrade vlm-pareto"
            )


def markdown_points_table() -> str:
    """The joined-points columns as docs/DESIGN.md lists them (kept in sync by a test)."""
    return ", ".join(POINT_COLUMNS)
