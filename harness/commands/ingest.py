"""``vlm-pareto ingest``: eval results (lmms-eval JSON, tidy CSV) -> accuracy rows in the store.

Everything is read and validated first; the store is written once at the end, so any bad
input leaves the store untouched. Never imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from harness.accuracy.avg5 import AccuracyRow, ScoreRecord, merge_records
from harness.accuracy.csv_io import read_accuracy_csv
from harness.accuracy.keys import AVG5, Key, normalize_key
from harness.accuracy.lmms_eval import POPE_METRICS, find_results_files, read_results
from harness.accuracy.manifest import read_manifest
from harness.errors import UserError

LMMS_SOURCE = "lmms-eval"
CSV_SOURCE = "csv"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "ingest",
        help="ingest eval results (lmms-eval JSON, tidy CSV) as accuracy rows",
        description="Read lmms-eval results files (a file or a directory tree) or tidy CSVs "
        "(encoder,resolution,llm,tiling,recipe,benchmark,score) and store one accuracy row per "
        "(encoder, resolution, llm, tiling, recipe) with Avg-5 = mean(GQA, TextVQA, POPE, DocVQA, "
        "SeedBench-image). Re-ingesting the same files changes nothing.",
    )
    p.add_argument(
        "paths", nargs="*", help="lmms-eval *_results.json files or directories, or .csv files"
    )
    p.add_argument(
        "--manifest", help="YAML mapping results files (globs ok) to keys; see docs/accuracy.md"
    )
    p.add_argument("--encoder", help="key for the results files given as paths (e.g. fastvithd)")
    p.add_argument("--resolution", help="input side in pixels (total, for tiled models)")
    p.add_argument("--llm", help="e.g. qwen2-0.5b")
    p.add_argument("--tiling", default="none", help="'none' (default) or e.g. '2x2+overview'")
    p.add_argument("--recipe", default=None, help="'llava-1.5' or 'pt<PT>+it<IT>', e.g. pt15+it1.1")
    p.add_argument(
        "--pope-metric",
        choices=sorted(POPE_METRICS),
        default="accuracy",
        help="POPE score to use (default accuracy)",
    )
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="accept runs evaluated with --limit (effective < original samples); rows are marked partial",
    )
    p.add_argument(
        "--prefer",
        choices=["newest"],
        default=None,
        help="resolve conflicting duplicate scores by the newest file (its 'date', else its name)",
    )
    p.add_argument(
        "--skip-unknown", action="store_true", help="ignore tasks that are not known benchmarks"
    )
    p.add_argument(
        "--allow-new-names",
        action="store_true",
        help="accept any encoder/LLM name (slugified), not only the ones the sweeps know",
    )
    p.add_argument(
        "--config-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="also accept the encoders/LLMs defined in DIR/encoder/*.yaml and DIR/llm/*.yaml (the "
        "sweep's --config-dir); built-in zoo names and sweeps/llm/*.yaml are always accepted",
    )
    p.add_argument("--json", action="store_true", help="print the resulting rows as JSON")
    p.add_argument("--dry-run", action="store_true", help="validate and show, write nothing")
    return p


@dataclass(frozen=True)
class Collected:
    """What the inputs say, before anything is written."""

    rows: list[AccuracyRow]
    files: list[str]


def _flag_key(args: argparse.Namespace) -> Key:
    missing = [
        f"--{n}"
        for n in ("encoder", "resolution", "llm", "recipe")
        if getattr(args, n) in (None, "")
    ]
    if missing:
        raise UserError(
            f"lmms-eval results need a key: give {', '.join(missing)} "
            "(and --tiling if not 'none'), or use --manifest"
        )
    return normalize_key(
        args.encoder,
        args.resolution,
        args.llm,
        args.tiling,
        args.recipe,
        strict=not args.allow_new_names,
    )


def _lmms_records(path: Path, key: Key, args: argparse.Namespace) -> list[ScoreRecord]:
    rf = read_results(path, pope_metric=args.pope_metric, skip_unknown=args.skip_unknown)
    out = []
    for s in rf.scores:
        if s.partial and not args.allow_partial:
            counts = (
                f"n-samples effective {s.n_effective} < original {s.n_original}"
                if s.n_original is not None
                else f"config.limit {rf.limit:g}"
            )
            raise UserError(
                f"{path}: results.{s.task} was evaluated on a subset ({counts}); its "
                "scores are not comparable with full runs; pass --allow-partial to "
                "ingest it (the row is marked partial)"
            )
        out.append(ScoreRecord(key, s.benchmark, s.value, f"{path}", s.partial, rf.date))
    return out


def _stored_records(stored: list[dict], keys: set[tuple[Key, str]]) -> dict[str, list[ScoreRecord]]:
    """Scores already stored for the keys being ingested, so new files add to them."""
    out: dict[str, list[ScoreRecord]] = {}
    for r in stored:
        key = Key(r["encoder"], int(r["resolution"]), r["llm"], r["tiling"], r["recipe"])
        if (key, r["source"]) not in keys:
            continue
        for bench, value in (r["scores"] or {}).items():
            # Stored rows carry no file date: with --prefer newest, incoming files win.
            out.setdefault(r["source"], []).append(
                ScoreRecord(
                    key,
                    bench,
                    float(value),
                    f"the store (row {r['id']})",
                    bool(r["partial"]),
                    datetime.min,
                )
            )
    return out


def _read_store_rows() -> list[dict]:
    """The accuracy rows stored now (read-only; none when there is no store yet)."""
    from harness.store import Store, StoreMissing

    try:
        store = Store(url=None, readonly=True)
    except StoreMissing:
        return []  # no store yet: nothing to merge with
    df = store.accuracy()
    return [dict(r) for _, r in df.iterrows()]


@dataclass(frozen=True)
class Inputs:
    """Score records read from the files, by source, before any merge."""

    by_source: dict[str, list[ScoreRecord]]
    files: list[str]


def read_inputs(args: argparse.Namespace) -> Inputs:
    """Read and validate every input file (nothing is written)."""
    from harness.accuracy.keys import add_known_names
    from harness.accuracy.known import sweep_names

    for what, names in sweep_names(getattr(args, "config_dir", None) or ()).items():
        add_known_names(what, names)
    strict = not args.allow_new_names
    lmms: list[ScoreRecord] = []
    csv_records: list[ScoreRecord] = []
    files: list[str] = []
    if args.manifest:
        if any(getattr(args, n) for n in ("encoder", "resolution", "llm", "recipe")):
            raise UserError(
                "give the key either with --manifest or with --encoder/--resolution/--llm/--recipe, not both"
            )
        for entry in read_manifest(args.manifest, strict_names=strict):
            for f in entry.files:
                lmms.extend(_lmms_records(f, entry.key, args))
                files.append(str(f))
    if not args.manifest and not args.paths:
        raise UserError("nothing to ingest: give results files/directories, a .csv, or --manifest")
    flag_key: Key | None = None
    missing = [raw for raw in args.paths if not Path(raw).exists()]
    if missing:  # before any key question: the file itself is the first problem
        raise UserError(f"no such file or directory: {missing[0]}")
    for raw in args.paths:
        path = Path(raw)
        if path.suffix.lower() == ".csv":
            csv_records.extend(read_accuracy_csv(path, strict_names=strict))
            files.append(str(path))
            continue
        if flag_key is None:
            flag_key = _flag_key(args)
        for f in find_results_files(path):
            lmms.extend(_lmms_records(f, flag_key, args))
            files.append(str(f))
    return Inputs({LMMS_SOURCE: lmms, CSV_SOURCE: csv_records}, files)


def merge(inputs: Inputs, stored: list[dict], prefer: str | None) -> list[AccuracyRow]:
    """Merge the inputs with the scores already stored for the same keys (pure)."""
    by_source = {s: list(recs) for s, recs in inputs.by_source.items()}
    wanted = {(r.key, s) for s, recs in by_source.items() for r in recs}
    for source, recs in _stored_records(stored, wanted).items():
        by_source[source] = recs + by_source[source]
    rows: list[AccuracyRow] = []
    for source, recs in by_source.items():
        if recs:
            rows.extend(merge_records(recs, source, prefer=prefer))
    return rows


def collect(args: argparse.Namespace, *, merge_store: bool = True) -> Collected:
    """Read and validate every input; return the merged rows (nothing is written)."""
    inputs = read_inputs(args)
    stored = _read_store_rows() if merge_store else []
    return Collected(merge(inputs, stored, args.prefer), inputs.files)


def _fmt(row: AccuracyRow) -> str:
    k = row.key
    head = f"{k.encoder}@{k.resolution} + {k.llm} (tiling {k.tiling}, recipe {k.recipe})"
    if row.avg5 is not None:
        acc = f"Avg-5 {row.avg5:.2f}"
    else:
        acc = f"no Avg-5 (missing: {', '.join(row.missing)})"
    scores = ", ".join(f"{b} {v:.1f}" for b, v in row.scores.items())
    flag = " [partial: --limit run]" if row.partial else ""
    return f"  {head}: {acc}{flag}\n      {scores}"


def _unknown_name(e: BaseException | None) -> bool:
    from harness.accuracy.keys import UnknownName

    while e is not None:
        if isinstance(e, UnknownName):
            return True
        e = e.__cause__
    return False


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UserError as e:
        if not _unknown_name(e):
            raise
        raise UserError(
            f"{e}; a model of your own? pass --allow-new-names, or --config-dir DIR "
            "(the sweep's, with encoder/ and llm/ YAML files)"
        ) from e


def _run(args: argparse.Namespace) -> int:
    counts = None
    if args.dry_run:
        collected = collect(args)
    else:
        from harness.store import Store

        inputs = read_inputs(args)  # every file validated before the store is opened
        store = Store(url=None)
        merged: list[AccuracyRow] = []

        def build(stored: list[dict]) -> list[dict]:
            # runs inside the store's write unit: merged with the rows stored *now*, so a
            # concurrent ingest of overlapping files is never overwritten
            merged[:] = merge(inputs, stored, args.prefer)
            return [r.to_store() for r in merged]

        counts = store.merge_accuracy(build, replace=True)
        collected = Collected(merged, inputs.files)
    if args.json:
        json.dump([r.to_json() for r in collected.rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    n_avg = sum(r.avg5 is not None for r in collected.rows)
    verb = "would ingest" if args.dry_run else "ingested"
    print(
        f"{verb} {len(collected.rows)} accuracy row(s) from {len(collected.files)} file(s); "
        f"{n_avg} with Avg-5 ({'+'.join(AVG5)})"
    )
    for r in collected.rows:
        print(_fmt(r))
    if counts is not None:
        print("store: " + ", ".join(f"{v} {k}" for k, v in counts.items() if k != "conflicts"))
    return 0
