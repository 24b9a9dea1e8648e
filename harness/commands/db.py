"""``vlm-pareto db``: check, migrate or recover the results store (see docs/store.md)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "db",
        help="check, migrate or recover the results store",
        description="Maintenance of the results store (--db, $VLM_PARETO_DB or results/vlm_pareto.db). "
        "'check' runs SQLite's full integrity_check read-only (exit 1 if the store is damaged); "
        "'migrate' upgrades an older schema in place; 'recover SRC DST' copies every readable row of a "
        "damaged SQLite store into a new store DST.",
    )
    actions = p.add_subparsers(dest="action", metavar="<action>", required=True)
    c = actions.add_parser("check", help="full integrity check, read-only (exit 1 if damaged)")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    actions.add_parser("migrate", help="upgrade the store's schema to this version of vlm-pareto")
    r = actions.add_parser(
        "recover", help="copy every readable row of a damaged store into a new one"
    )
    r.add_argument("src", help="the damaged SQLite store (opened read-only, never changed)")
    r.add_argument("dst", help="a new SQLite file (or database URL) to copy the readable rows into")
    r.add_argument("--json", action="store_true", help="print what was copied as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    from harness.store import SCHEMA_VERSION, Store
    from harness.store_repair import check_store, recover_store

    if args.action == "check":
        res = check_store(None)
        if args.json:
            print(json.dumps(res.as_json(), indent=1))
        elif res.ok:
            counts = ", ".join(f"{v} {k}" for k, v in res.counts.items())
            print(
                f"ok: {res.where} passed the integrity check (schema v{res.schema_version}; {counts})"
            )
        else:
            print(f"DAMAGED: {res.where} failed the integrity check:")
            for line in res.problems[:10]:
                print(f"  {line}")
            if len(res.problems) > 10:
                print(f"  ... and {len(res.problems) - 10} more")
            print(
                f"Restore it from a backup, or copy every readable row into a new store with "
                f"'vlm-pareto db recover {res.where} NEW.db'. Nothing is written to it until then."
            )
        return 0 if res.ok else 1
    if args.action == "migrate":
        store = Store(None, create=False)
        print(f"{store.where}: schema v{store.schema_version} (this vlm-pareto: v{SCHEMA_VERSION})")
        return 0
    rec = recover_store(args.src, args.dst)
    if args.json:
        print(json.dumps(rec.as_json(), indent=1))
        return 0
    copied = ", ".join(f"{v} {k}" for k, v in rec.copied.items())
    print(f"recovered into {rec.dst}: {copied}")
    damaged = {k: v for k, v in rec.damaged_regions.items() if v}
    if damaged:
        print("  skipped damaged regions: " + ", ".join(f"{k} {v}" for k, v in damaged.items()))
    unusable = {k: v for k, v in rec.unusable.items() if v}
    if unusable:
        print(
            "  unusable rows (garbage from damaged pages): "
            + ", ".join(f"{k} {v}" for k, v in unusable.items())
        )
    if rec.placeholder_runs:
        print(
            f"  {rec.placeholder_runs} run(s) whose row was lost were recreated as placeholders (status partial)"
        )
    return 0
