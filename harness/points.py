"""Build the joined-points table (docs/DESIGN.md) that report, choose and search consume.

Three latency sources, one output shape:

* ``source='store'`` (default): measurement rows of the chosen runs -> ``compose_ttft`` ->
  joined with accuracy from the store, ``--accuracy`` files and, as a fallback, the paper's
  published accuracy for the same configuration and recipe (labelled ``accuracy_source=paper``).
* ``latency_csv=[...]``: latency measured elsewhere (``read_latency_csv``) joined the same way.
* ``source='paper'``: the paper's own points (TTFT on an M1 Max), nothing from this machine.

Accuracy priority when several sources know a configuration: ingested (store) > CSV files >
paper. No torch import anywhere on this path.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.errors import UserError

SOURCES = ("store", "paper")
_ACC_PRIORITY = {"ingested": 0, "csv": 1, "paper": 2, "predicted": 3}


@dataclass(frozen=True)
class PointsResult:
    """The joined points plus what did not join and how the table was built."""

    points: pd.DataFrame
    unmatched_latency: pd.DataFrame
    unmatched_accuracy: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    source: str = "store"
    benchmark: str = "avg5"
    #: the store runs the latency came from (None: every run; empty for paper / CSV sources)
    run_ids: list[str] | None = None


def _empty() -> pd.DataFrame:
    return pd.DataFrame()


def _store_latency(db: str | None, run_ids: Sequence[str] | None, notes: list[str]) -> pd.DataFrame:
    from harness.store import Store

    store = Store(db, readonly=True)
    if run_ids:
        for r in run_ids:
            store.require_run(r)
    else:
        runs = store.list_runs()
        if not runs:
            raise UserError(
                f"the store {store.url} has no runs; run 'vlm-pareto sweep' first, "
                "or use --source paper / --latency-csv FILE"
            )
    m = store.measurements(run_ids=list(run_ids) if run_ids else None, status="ok")
    if m.empty:
        which = f"run(s) {', '.join(run_ids)}" if run_ids else "the store"
        raise UserError(f"{which} has no successful measurements; nothing to report")
    from harness.ttft import compose_ttft

    by_kind = {k: m[m["kind"] == k] for k in ("encoder", "projector", "prefill")}
    lat = compose_ttft(by_kind["encoder"], by_kind["projector"], by_kind["prefill"])
    # noise hooks (docs/noise.md): compose_ttft marks points with a contended part; canaries
    from harness.canary import run_canary_text

    for rid in sorted(set(m["run_id"])):
        line = run_canary_text(store, rid)
        if line:
            notes.append(f"run {rid}: {line}")
    # Figures name the machine: use the fingerprint's human label, not the hash.
    labels = {
        r["machine_id"]: r["fingerprint"].get("machine") or r["machine_id"]
        for r in store.list_runs()
    }
    if not lat.empty and "machine" in lat:
        lat["machine"] = lat["machine"].map(lambda mid: labels.get(mid, mid))
    notes.append(
        f"latency: {len(lat)} configuration(s) composed from {len(m)} measurement(s) of "
        + (f"run(s) {', '.join(run_ids)}" if run_ids else f"all {m['run_id'].nunique()} run(s)")
    )
    return lat


def _file_accuracy(paths: Sequence[str | Path]) -> pd.DataFrame:
    from harness.accuracy.avg5 import merge_records
    from harness.accuracy.csv_io import read_accuracy_csv

    records = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise UserError(f"accuracy file {path} does not exist")
        if path.suffix.lower() != ".csv":
            raise UserError(
                f"{path}: --accuracy takes a tidy CSV (encoder,resolution,llm,tiling,recipe,benchmark,score); "
                "ingest lmms-eval results into the store with 'vlm-pareto ingest' instead"
            )
        records += read_accuracy_csv(path)
    rows = [r.to_store() for r in merge_records(records, "csv:" + ",".join(str(p) for p in paths))]
    df = pd.DataFrame(rows)
    df["accuracy_source"] = "csv"
    return df


def _accuracy(
    db: str | None,
    use_store: bool,
    files: Sequence[str | Path] | None,
    use_paper: bool,
    notes: list[str],
) -> pd.DataFrame:
    frames = []
    if use_store:
        from harness.store import Store, StoreMissing

        try:
            acc = Store(db, readonly=True).accuracy()
        except StoreMissing:  # no store yet: no stored accuracy
            acc = pd.DataFrame()
        if len(acc):
            acc = acc.copy()
            acc["accuracy_source"] = [
                "paper" if str(s).startswith(("Table", "paper")) else "ingested"
                for s in acc["source"]
            ]
            frames.append(acc)
            notes.append(f"accuracy: {len(acc)} row(s) from the store")
    if files:
        f = _file_accuracy(files)
        frames.append(f)
        notes.append(f"accuracy: {len(f)} row(s) from {len(files)} file(s)")
    if use_paper:
        from harness.accuracy.paper import paper_accuracy

        p = paper_accuracy().copy()
        p["accuracy_source"] = "paper"
        frames.append(p)
    if not frames:
        return pd.DataFrame(
            columns=["encoder", "resolution", "llm", "tiling", "recipe", "scores", "avg5", "source"]
        )
    acc = pd.concat(frames, ignore_index=True)
    # One row per key: the best-ranked source wins (the join refuses duplicate keys).
    from harness.accuracy.keys import normalize_key

    keys = []
    for r in acc.itertuples(index=False):
        k = normalize_key(r.encoder, r.resolution, r.llm, r.tiling, r.recipe, strict=False)
        keys.append((k.encoder, k.resolution, k.llm, k.tiling, k.recipe))
    acc["_key"] = keys
    acc["_rank"] = [_ACC_PRIORITY.get(str(s), 9) for s in acc["accuracy_source"]]
    acc = acc.sort_values("_rank", kind="mergesort").drop_duplicates("_key", keep="first")
    return acc.drop(columns=["_key", "_rank"]).reset_index(drop=True)


#: Accuracy rows of every source the points use, one per key, best source first (public for
#: ``harness.search``): ``accuracy_rows(db, use_store, files, use_paper, notes)``.
accuracy_rows = _accuracy


def load_points(
    *,
    db: str | None = None,
    run_ids: Sequence[str] | None = None,
    source: str = "store",
    latency_csv: Sequence[str | Path] | None = None,
    accuracy_files: Sequence[str | Path] | None = None,
    recipe: str | None = None,
    benchmark: str = "avg5",
    paper_accuracy: bool = True,
) -> PointsResult:
    """Joined points from the store, imported latency CSVs, or the paper.

    ``paper_accuracy`` lets measured/imported latency borrow the paper's accuracy for the
    same (encoder, resolution, llm, tiling, recipe) when nothing better is known; those rows
    say ``accuracy_source='paper'``. Raises UserError for unknown sources, missing files,
    unknown runs, or an empty store.
    """
    if source not in SOURCES:
        from harness.errors import suggest

        raise UserError(suggest(source, SOURCES, "source"))
    from harness.accuracy.join import join, known_benchmarks

    bench = str(benchmark).strip().lower()
    if bench not in known_benchmarks():
        from harness.errors import suggest

        raise UserError(suggest(benchmark, known_benchmarks(), "benchmark"))
    notes: list[str] = []

    if source == "paper":
        if latency_csv or run_ids:
            raise UserError("--source paper uses the paper's latencies; drop --latency-csv / --run")
        if accuracy_files:
            raise UserError(
                "--source paper uses the paper's accuracies; drop --accuracy (or use --latency-csv with it)"
            )
        from harness.accuracy.keys import normalize_recipe
        from harness.accuracy.paper import paper_points

        pts = paper_points()
        if recipe is not None:
            want = normalize_recipe(recipe)
            pts = pts[pts["recipe"] == want]
            if pts.empty:
                raise UserError(f"the paper has no points for recipe {want!r}")
        no_ttft = int(pts["ttft_ms"].isna().sum())
        if no_ttft:
            notes.append(f"{no_ttft} paper row(s) have no published TTFT (shown in the table only)")
        notes.append("latency and accuracy: FastVLM paper (CVPR 2025), TTFT measured on an M1 Max")
        return PointsResult(pts.reset_index(drop=True), _empty(), _empty(), notes, "paper", bench)

    if latency_csv:
        from harness.accuracy.csv_io import read_latency_csv

        lat = pd.concat([read_latency_csv(p) for p in latency_csv], ignore_index=True)
        notes.append(f"latency: {len(lat)} row(s) imported from {len(latency_csv)} CSV file(s)")
        use_store_acc = False
    else:
        lat = _store_latency(db, run_ids, notes)
        use_store_acc = True
    if lat.empty:
        raise UserError("no latency rows to report")
    acc = _accuracy(db, use_store_acc, accuracy_files, paper_accuracy, notes)
    res = join(lat, acc, benchmark=bench, recipe=recipe)
    points = res.points
    # Latency rows without accuracy still matter (breakdown, scaling, choose's notes): keep them.
    if len(res.unmatched_latency):
        keep = res.unmatched_latency.drop(columns=["reason"], errors="ignore").copy()
        if recipe is not None:
            keep["recipe"] = recipe
        keep["accuracy_source"] = ""
        points = pd.concat([points, keep.reindex(columns=points.columns)], ignore_index=True)
        notes.append(
            f"{len(res.unmatched_latency)} configuration(s) have no {bench} accuracy (latency only)"
        )
    n_paper = int((points["accuracy_source"] == "paper").sum()) if len(points) else 0
    if n_paper:
        notes.append(
            f"{n_paper} point(s) use the paper's published accuracy for the same configuration"
        )
    unmatched_acc = res.unmatched_accuracy
    if paper_accuracy and len(unmatched_acc) and "accuracy_source" in unmatched_acc:
        # Paper rows with no latency here are expected; only report the user's own rows.
        unmatched_acc = unmatched_acc[unmatched_acc["accuracy_source"] != "paper"]
    return PointsResult(
        points.reset_index(drop=True),
        res.unmatched_latency,
        unmatched_acc.reset_index(drop=True),
        notes,
        "csv" if latency_csv else "store",
        bench,
        [] if latency_csv else (list(run_ids) if run_ids else None),
    )


# ------------------------------------------------------------------ shared CLI arguments


def add_input_args(p: argparse.ArgumentParser) -> None:
    """The input options report, choose and search share."""
    g = p.add_argument_group("inputs")
    g.add_argument(
        "--run", dest="runs", action="append", metavar="ID", help="a run in the store (repeatable)"
    )
    g.add_argument(
        "--all-runs", action="store_true", help="every run in the store (default: the latest run)"
    )
    g.add_argument(
        "--source",
        choices=SOURCES,
        default="store",
        help="'store' (default): measurements in the store; 'paper': the FastVLM paper's numbers",
    )
    g.add_argument(
        "--latency-csv",
        action="append",
        metavar="FILE",
        help="latency measured elsewhere (encoder,resolution,llm,tiling,encoder_ms,prefill_ms,...); repeatable",
    )
    g.add_argument(
        "--accuracy",
        action="append",
        metavar="FILE",
        help="tidy accuracy CSV (encoder,resolution,llm,tiling,recipe,benchmark,score); repeatable",
    )
    g.add_argument(
        "--recipe", default=None, help="training recipe of the accuracy, e.g. llava-1.5, pt15+it1.1"
    )
    g.add_argument(
        "--benchmark",
        default="avg5",
        help="accuracy axis: avg5 (default) or gqa, textvqa, pope, ...",
    )
    g.add_argument(
        "--no-paper-accuracy",
        action="store_true",
        help="do not borrow the paper's accuracy for measured configurations",
    )
    g.add_argument(
        "--device",
        default=None,
        metavar="NAME",
        help="replace latencies by predictions for a device profile (vlm-pareto predict --list)",
    )


def points_from_args(args: argparse.Namespace) -> PointsResult:
    """Resolve the shared input options (see :func:`add_input_args`) into joined points."""
    import os

    db = getattr(args, "db", None) or os.environ.get("VLM_PARETO_DB")
    run_ids = args.runs
    if args.source == "store" and not args.latency_csv and not run_ids and not args.all_runs:
        from harness.store import Store

        runs = Store(db, readonly=True).list_runs()
        if not runs:
            raise UserError(
                "the store has no runs; run 'vlm-pareto sweep' first, or use --source paper / --latency-csv FILE"
            )
        run_ids = [runs[-1]["id"]]
    if args.all_runs and run_ids:
        raise UserError("--all-runs and --run are exclusive")
    result = load_points(
        db=db,
        run_ids=run_ids,
        source=args.source,
        latency_csv=args.latency_csv,
        accuracy_files=args.accuracy,
        recipe=args.recipe,
        benchmark=args.benchmark,
        paper_accuracy=not args.no_paper_accuracy,
    )
    if getattr(args, "device", None):
        from harness.predict.apply import with_predicted_latency

        result = with_predicted_latency(result, args.device, db)
    return result
