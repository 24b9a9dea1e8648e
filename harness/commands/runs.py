"""``vlm-pareto runs``: list the runs in the store, or export their measurements."""

from __future__ import annotations

import argparse
import json

from harness.store import Store


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "runs",
        help="list runs in the store, or export measurements (CSV/Parquet/JSON)",
        description="List the runs in the results store (newest last), or export measurements "
        "of some or all runs to a CSV, Parquet or JSON file.",
    )
    p.add_argument(
        "--run", action="append", default=None, help="restrict to this run id (repeatable)"
    )
    p.add_argument(
        "--export", metavar="FILE", help="write measurements to FILE (.csv, .parquet or .json)"
    )
    p.add_argument("--json", action="store_true", help="print runs as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    store = Store(readonly=True)
    if args.run:
        for rid in args.run:
            store.require_run(rid)
    if args.export:
        path = store.export(args.export, run_ids=args.run)
        print(f"wrote {path}")
        return 0
    runs = store.list_runs()
    if args.run:
        runs = [r for r in runs if r["id"] in set(args.run)]
    counts: dict[str, dict[str, int]] = {}
    for m in store.measurement_rows(run_ids=args.run):
        c = counts.setdefault(m["run_id"], {"ok": 0, "skipped": 0, "failed": 0})
        c[m["status"]] = c.get(m["status"], 0) + 1
    if args.json:
        out = [
            {
                "id": r["id"],
                "created_at": r["created_at"],
                "status": r["status"],
                "machine_id": r["machine_id"],
                "machine": r["fingerprint"].get("machine"),
                "git_commit": r["git_commit"],
                "command": r["command"],
                "measurements": counts.get(r["id"], {}),
            }
            for r in runs
        ]
        print(json.dumps(out, indent=2))
        return 0
    if not runs:
        print("no runs yet")
        return 0
    print(
        f"{'run':<28} {'created (UTC)':<20} {'status':<9} {'ok':>4} {'skip':>4} {'fail':>4}  machine"
    )
    for r in runs:
        c = counts.get(r["id"], {})
        print(
            f"{r['id']:<28} {r['created_at'][:19]:<20} {r['status']:<9} {c.get('ok', 0):>4} "
            f"{c.get('skipped', 0):>4} {c.get('failed', 0):>4}  {r['fingerprint'].get('machine', r['machine_id'])}"
        )
    return 0
