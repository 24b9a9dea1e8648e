"""Read lmms-eval results files (``<model>/<YYYYMMDD_HHMMSS>_results.json``).

Only ``json`` is used to parse: nothing in a results file is ever executed. Every problem is
a :class:`~harness.errors.UserError` naming the file and the field, raised while reading, so
callers can validate every input before writing anything.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.errors import UserError, read_user_text, suggest


@dataclass(frozen=True)
class TaskMetric:
    """Where one benchmark's score lives in a task's results."""

    benchmark: str
    metric: str  # "<metric>,<filter>"
    percent: bool = False  # lmms-eval reports this metric on 0-100 already (GPT-judged ones)
    optional: bool = False  # extracted when present, not an error when absent


#: lmms-eval task name -> metrics to extract. POPE's metric is chosen by ``pope_metric``.
TASKS: dict[str, tuple[TaskMetric, ...]] = {
    "gqa": (TaskMetric("gqa", "exact_match,none"),),
    "textvqa_val": (TaskMetric("textvqa", "exact_match,none"),),
    "textvqa": (TaskMetric("textvqa", "exact_match,none"),),
    "pope": (TaskMetric("pope", "pope_accuracy,none"),),
    "docvqa_val": (TaskMetric("docvqa", "anls,none"),),
    "seedbench": (
        TaskMetric("seedbench", "seed_image,none"),
        TaskMetric("seedbench_all", "seed_all,none", optional=True),
    ),
    "scienceqa_img": (TaskMetric("sqa", "exact_match,none"),),
    "vqav2_val": (TaskMetric("vqav2", "exact_match,none"),),
    "mmvet": (TaskMetric("mmvet", "gpt_eval_score,none", percent=True),),
    "mmmu_val": (TaskMetric("mmmu", "mmmu_acc,none"),),
    "llava_in_the_wild": (TaskMetric("llava_bench", "gpt_eval_llava_all,none", percent=True),),
}

POPE_METRICS = {"accuracy": "pope_accuracy,none", "f1": "pope_f1_score,none"}

_STAMP = re.compile(r"(\d{8}_\d{6})")


@dataclass(frozen=True)
class TaskScore:
    """One benchmark score read from one results file, on the 0-100 scale."""

    benchmark: str
    value: float
    task: str
    metric: str
    n_original: int | None
    n_effective: int | None
    partial: bool  # evaluated on a subset (``--limit``): not comparable with full runs


@dataclass(frozen=True)
class ResultsFile:
    """The parts of one lmms-eval results file that accuracy rows need."""

    path: str
    model: str | None
    date: datetime | None  # the file's ``date`` field, else the timestamp in its name
    limit: float | None
    scores: tuple[TaskScore, ...]


def find_results_files(path: str | Path) -> list[Path]:
    """``path`` itself if it is a file, else every ``*_results.json`` under it (sorted)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        found = sorted(q for q in p.rglob("*.json") if q.name.endswith("results.json"))
        if not found:
            raise UserError(f"{p}: no lmms-eval '*_results.json' files under this directory")
        return found
    raise UserError(f"{p}: no such file or directory")


def parse_date(value: Any, path: str | Path) -> datetime | None:
    """The ``date`` field (unix seconds, ``YYYYMMDD_HHMMSS`` or ISO), else the name's stamp."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return datetime.fromtimestamp(float(value))
        except (OverflowError, OSError, ValueError) as e:
            raise UserError(f"{path}: date {value!r} is not a valid unix time ({e})") from e
    if isinstance(value, str):
        text = value.strip()
        for fmt, width in (
            ("%Y%m%d_%H%M%S", 15),
            ("%Y-%m-%dT%H:%M:%S", 19),
            ("%Y-%m-%d %H:%M:%S", 19),
        ):
            try:
                return datetime.strptime(text[:width], fmt)
            except ValueError:
                pass
    m = _STAMP.search(Path(path).name)
    if m:
        return datetime.strptime(m.group(1), "%Y%m%d_%H%M%S")
    return None


def _number(value: Any, where: str, percent: bool) -> float:
    """Validate a raw score and return it on the 0-100 scale."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where}: score must be a number, got {type(value).__name__} {value!r}")
    f = float(value)
    if not math.isfinite(f):
        raise UserError(f"{where}: score is {value!r}; the evaluation did not produce a number")
    top = 100.0 if percent else 1.0
    if not 0.0 <= f <= top:
        scale = "0-100" if percent else "0-1 (lmms-eval reports fractions)"
        raise UserError(f"{where}: score {f} is outside {scale}")
    # Rounded to 1e-6 points so 0.616 reads back as 61.6, not 61.60000000000001.
    return round(f if percent else f * 100.0, 6)


def _samples(n_samples: Any, task: str, where: str) -> tuple[int | None, int | None]:
    if not isinstance(n_samples, dict) or task not in n_samples:
        return None, None
    entry = n_samples[task]
    if not isinstance(entry, dict):
        raise UserError(
            f"{where}: n-samples.{task} must be an object with 'original' and 'effective'"
        )
    out = []
    for field in ("original", "effective"):
        v = entry.get(field)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise UserError(
                f"{where}: n-samples.{task}.{field} must be a non-negative integer, got {v!r}"
            )
        out.append(v)
    return out[0], out[1]


def parse_results(
    data: Any, path: str | Path, *, pope_metric: str = "accuracy", skip_unknown: bool = False
) -> ResultsFile:
    """Validate a decoded results document and extract the benchmark scores (pure)."""
    where = str(path)
    if pope_metric not in POPE_METRICS:
        raise UserError(suggest(pope_metric, POPE_METRICS, "POPE metric"))
    if not isinstance(data, dict):
        raise UserError(f"{where}: top level must be a JSON object, got {type(data).__name__}")
    results = data.get("results")
    if not isinstance(results, dict):
        raise UserError(f"{where}: no 'results' object; is this an lmms-eval *_results.json file?")
    if not results:
        raise UserError(f"{where}: 'results' is empty")
    raw_config = data.get("config")
    config: dict[str, Any] = raw_config if isinstance(raw_config, dict) else {}
    limit = config.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))):
        raise UserError(f"{where}: config.limit must be a number or null, got {limit!r}")
    n_samples = data.get("n-samples")
    scores: list[TaskScore] = []
    for task in sorted(results):
        entry = results[task]
        if task not in TASKS:
            if skip_unknown:
                continue
            raise UserError(
                f"{where}: results.{task}: "
                + suggest(task, TASKS, "benchmark task")
                + "; pass --skip-unknown to ignore it"
            )
        if not isinstance(entry, dict):
            raise UserError(f"{where}: results.{task} must be an object of metrics")
        n_orig, n_eff = _samples(n_samples, task, where)
        if n_orig is not None and n_eff is not None:
            partial = n_eff < n_orig
        else:
            # Without per-task counts a limited run cannot be proven complete.
            partial = limit is not None
        for tm in TASKS[task]:
            metric = POPE_METRICS[pope_metric] if tm.benchmark == "pope" else tm.metric
            if metric not in entry:
                if tm.optional:
                    continue
                raise UserError(f"{where}: results.{task} has no {metric!r} metric")
            value = _number(entry[metric], f"{where}: results.{task}.{metric}", tm.percent)
            scores.append(TaskScore(tm.benchmark, value, task, metric, n_orig, n_eff, partial))
    model = config.get("model") if isinstance(config.get("model"), str) else None
    return ResultsFile(
        where,
        model,
        parse_date(data.get("date"), path),
        float(limit) if limit is not None else None,
        tuple(scores),
    )


def read_results(
    path: str | Path, *, pope_metric: str = "accuracy", skip_unknown: bool = False
) -> ResultsFile:
    """Read and validate one results file."""
    p = Path(path)
    text = read_user_text(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(
            f"{p}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg}); "
            "is the file truncated?"
        ) from e
    except RecursionError as e:
        raise UserError(f"{p}: JSON nested too deeply to be an lmms-eval results file") from e
    except ValueError as e:  # e.g. an integer literal over Python's digit limit
        raise UserError(f"{p}: invalid JSON ({str(e).splitlines()[0]})") from e
    return parse_results(data, p, pope_metric=pope_metric, skip_unknown=skip_unknown)
