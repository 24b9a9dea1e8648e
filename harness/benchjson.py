"""Read pytest-benchmark JSON (``--benchmark-json``) into compare rows.

A significance test needs the raw rounds: ``stats.data``, the per-iteration time of every
round in seconds. pytest-benchmark 5 always writes them into ``--benchmark-json`` files, but
runs stored with ``--benchmark-save``/``--benchmark-autosave`` (and files from older
versions) carry only summary statistics unless ``--benchmark-save-data`` is given. A file
without raw rounds is refused rather than compared on medians alone.

Each benchmark becomes one row in the measurement format of ``harness.compare``:
``kind='benchmark'``, ``name`` = the test's full name (``path::test[param]``), the other
key fields neutral, ``backend='pytest-benchmark'`` and ``machine_id`` derived from the
file's ``machine_info`` (so two files from different machines are refused as unlike).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from harness.errors import UserError

SAVE_DATA_FLAG = "--benchmark-save-data"


def looks_like_benchmark_json(doc: Any) -> bool:
    """True for a parsed pytest-benchmark JSON document (has ``benchmarks`` and ``machine_info``)."""
    return (
        isinstance(doc, dict) and isinstance(doc.get("benchmarks"), list) and "machine_info" in doc
    )


def benchmark_machine_id(machine_info: dict[str, Any]) -> str:
    """A stable id for the machine a pytest-benchmark file came from.

    Built from what identifies hardware and interpreter (host name, CPU model, architecture,
    Python implementation and version), not from anything that changes between runs.
    """
    cpu = machine_info.get("cpu") or {}
    parts = [
        machine_info.get("node", ""),
        machine_info.get("machine", ""),
        machine_info.get("processor", ""),
        cpu.get("brand_raw", "") if isinstance(cpu, dict) else str(cpu),
        machine_info.get("python_implementation", ""),
        machine_info.get("python_version", ""),
    ]
    return "pb-" + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12]


def rows_from_benchmark_json(doc: dict[str, Any], source: str = "<json>") -> list[dict[str, Any]]:
    """Rows (dicts) with ``samples_ms`` for every benchmark of a parsed pytest-benchmark file."""
    if not looks_like_benchmark_json(doc):
        raise UserError(
            f"{source} is not a pytest-benchmark JSON file (no 'benchmarks'/'machine_info')"
        )
    benches = doc["benchmarks"]
    if not benches:
        raise UserError(f"{source} holds no benchmarks")
    machine_id = benchmark_machine_id(doc.get("machine_info") or {})
    created_at = doc.get("datetime")
    commit = (doc.get("commit_info") or {}).get("id")
    rows = []
    missing = []
    for b in benches:
        stats = b.get("stats") or {}
        data = stats.get("data")
        name = b.get("fullname") or b.get("name")
        if not data:
            missing.append(str(name))
            continue
        rows.append(
            {
                "kind": "benchmark",
                "name": name,
                "resolution": 0,
                "tiling": "none",
                "tokens": 0,
                "prompt_tokens": 0,
                "backend": "pytest-benchmark",
                "device": "cpu",
                "dtype": "none",
                "protocol": "pytest-benchmark",
                "status": "ok",
                "machine_id": machine_id,
                "run_id": str(source),
                "created_at": created_at,
                "git_commit": commit,
                # Seconds per iteration -> ms, the unit of everything else.
                "samples_ms": [float(x) * 1e3 for x in data],
                "median_ms": float(stats["median"]) * 1e3 if "median" in stats else None,
                "extra": {
                    "group": b.get("group"),
                    "rounds": stats.get("rounds"),
                    "iterations": stats.get("iterations"),
                },
            }
        )
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise UserError(
            f"{source} has no raw timings for {len(missing)} benchmark(s) ({shown}); a significance "
            f"test needs them: rerun pytest with --benchmark-json=FILE, or add {SAVE_DATA_FLAG} to "
            "--benchmark-save/--benchmark-autosave"
        )
    return rows


def read_benchmark_json(path: str | Path) -> list[dict[str, Any]]:
    """Read a pytest-benchmark JSON file into compare rows (see module docstring)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise UserError(f"no such file: {p}") from e
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"cannot read {p} as JSON: {e}") from e
    return rows_from_benchmark_json(doc, str(p))
