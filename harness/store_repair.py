"""Checking and recovering a results store (``vlm-pareto db check`` / ``db recover``).

``check_store`` runs SQLite's full ``integrity_check`` through a read-only connection (the
file is never changed). ``recover_store`` copies every row SQLite can still read from a
damaged store into a *new* store: each table is scanned in rowid order and, where a damaged
page stops the scan, single rows are probed past the damage until the scan can resume. Rows
whose run was lost get a placeholder run marked ``partial``. Indexes are rebuilt by the new
store, so a store whose only damage is in index pages is recovered completely.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from harness.errors import UserError
from harness.store import (
    Store,
    accuracy_table,
    describe_url,
    measurements_table,
    now_iso,
    resolve_url,
    runs_table,
    sqlite_path,
    sqlite_ro_uri,
)

#: how far past a damaged region single rowids are probed when the table's max is unknown
PROBE_SPAN = 100_000


@dataclass
class CheckResult:
    where: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    schema_version: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "store": self.where,
            "ok": self.ok,
            "problems": self.problems,
            "counts": self.counts,
            "schema_version": self.schema_version,
        }


def _ro_connect(path: Path, immutable: bool = False) -> sqlite3.Connection:
    if not path.exists():
        raise UserError(f"no results store at {path}")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a database file")
    # immutable: a store in a folder nobody can write (SQLite cannot make its -shm file there)
    uri = sqlite_ro_uri(path, immutable)
    try:
        con = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as e:
        raise UserError(f"cannot open {path}: {e}") from e
    con.execute("PRAGMA query_only=ON")
    return con


def check_store(url: str | None = None) -> CheckResult:
    """Full integrity check of the store (read-only); never raises for damage, reports it."""
    url = resolve_url(url)
    path = sqlite_path(url)
    if path is None:
        # PostgreSQL checksums and checks its own pages; read every table once.
        store = Store(url, readonly=True)
        counts: dict[str, int] = {}
        with store.engine.connect() as conn:
            for table in (runs_table, measurements_table, accuracy_table):
                counts[table.name] = int(
                    conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                )
        return CheckResult(store.where, True, [], counts, str(store.schema_version))
    where = str(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        raise UserError(
            f"results store {path} is not a regular file (a device, pipe or socket); "
            "pass --db a database file"
        )
    if path.exists() and path.is_file() and path.stat().st_size == 0:
        return CheckResult(where, False, ["empty file (0 bytes): not a results store"])
    con = _ro_connect(path)
    try:
        try:
            rows = [str(r[0]) for r in con.execute("PRAGMA integrity_check(100)")]
        except sqlite3.OperationalError as e:
            if "unable to open" not in str(e) or os.access(path.parent, os.W_OK):
                return CheckResult(where, False, [str(e)])
            con.close()  # a read-only folder, not a damaged file: read it as immutable
            con = _ro_connect(path, immutable=True)
            wal = path.with_name(path.name + "-wal")
            unread = wal.stat().st_size if wal.exists() else 0
            where += " (read-only folder: checked as immutable" + (
                f"; its -wal file, {unread} bytes, was not read)" if unread else ")"
            )
            rows = [str(r[0]) for r in con.execute("PRAGMA integrity_check(100)")]
        except sqlite3.DatabaseError as e:
            if "file is not a database" in str(e):
                raise UserError(
                    f"{path} is not a SQLite database (a results store is one); file left untouched"
                ) from None
            return CheckResult(where, False, [str(e)])
        problems = [] if rows == ["ok"] else rows
        res = CheckResult(where, not problems, problems)
        try:
            tables = {
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if "meta" not in tables:
                res.ok = False
                res.problems.append("not a vlm-pareto results store (no meta table)")
                return res
            row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            res.schema_version = row[0] if row else None
            for t in ("runs", "measurements", "accuracy"):
                if t in tables:
                    res.counts[t] = int(con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])
        except sqlite3.DatabaseError as e:
            res.ok = False
            if str(e) not in res.problems:
                res.problems.append(str(e))
        return res
    finally:
        con.close()


@dataclass
class RecoverResult:
    src: str
    dst: str
    copied: dict[str, int] = field(default_factory=dict)
    damaged_regions: dict[str, int] = field(default_factory=dict)
    unusable: dict[str, int] = field(default_factory=dict)
    placeholder_runs: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "copied": self.copied,
            "damaged_regions": self.damaged_regions,
            "unusable": self.unusable,
            "placeholder_runs": self.placeholder_runs,
        }


def _read_table(
    con: sqlite3.Connection, table: str, cols: list[str]
) -> tuple[list[dict[str, Any]], int]:
    """Every readable row of ``table`` (rowid order) and the number of damaged regions met."""
    select = ", ".join(f'"{c}"' for c in cols)
    rows: dict[int, tuple[Any, ...]] = {}
    damaged = 0
    try:
        maxid = con.execute(f'SELECT max(rowid) FROM "{table}"').fetchone()[0]
    except sqlite3.DatabaseError:
        maxid = None
    pos = -(2**63)
    while True:
        try:
            for r in con.execute(
                f'SELECT rowid, {select} FROM "{table}" WHERE rowid > ? ORDER BY rowid', (pos,)
            ):
                rows[int(r[0])] = tuple(r[1:])
                pos = int(r[0])
            break
        except sqlite3.DatabaseError:
            damaged += 1
        # probe single rows past the damage until one reads again
        start = max(pos, 0) + 1
        limit = maxid if isinstance(maxid, int) and maxid >= start else start + PROBE_SPAN
        found = None
        for p in range(start, limit + 1):
            try:
                r = con.execute(
                    f'SELECT rowid, {select} FROM "{table}" WHERE rowid = ?', (p,)
                ).fetchone()
            except sqlite3.DatabaseError:
                continue
            if r is not None:
                rows[p] = tuple(r[1:])
                found = p
                break
        if found is None:
            break
        pos = found
    return [dict(zip(cols, rows[k], strict=True)) for k in sorted(rows)], damaged


def recover_store(src: str, dst: str) -> RecoverResult:
    """Copy every readable row of the SQLite store ``src`` into the new store ``dst``."""
    src_url = resolve_url(src)
    src_path = sqlite_path(src_url)
    if src_path is None:
        raise UserError(
            "db recover reads SQLite files only; restore a PostgreSQL store with its own tools "
            "(pg_dump / point-in-time recovery)"
        )
    dst_url = resolve_url(dst)
    dst_path = sqlite_path(dst_url)
    if dst_path is not None:
        if src_path.exists() and dst_path.exists() and dst_path.resolve() == src_path.resolve():
            raise UserError(
                "db recover: the destination must be a new file, not the damaged store itself"
            )
        if dst_path.exists() and dst_path.stat().st_size > 0:
            raise UserError(
                f"db recover: {dst_path} already exists; give a new file name (nothing is overwritten)"
            )
    con = _ro_connect(src_path)
    try:
        try:
            src_tables = {
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.DatabaseError as e:
            raise UserError(
                f"db recover: {src_path}: the schema page is unreadable ({e}); nothing can be recovered "
                "here, restore it from a backup"
            ) from e
        if not src_tables & {"runs", "measurements", "accuracy"}:
            raise UserError(f"db recover: {src_path} is not a vlm-pareto results store")
        data: dict[str, list[dict[str, Any]]] = {}
        res = RecoverResult(str(src_path), describe_url(dst_url))
        for table in (runs_table, measurements_table, accuracy_table):
            if table.name not in src_tables:
                continue
            try:
                have = {r[1] for r in con.execute(f'PRAGMA table_info("{table.name}")')}
            except sqlite3.DatabaseError as e:
                raise UserError(
                    f"db recover: {src_path}: cannot read the columns of {table.name} ({e})"
                ) from e
            cols = [c.name for c in table.columns if c.name in have]
            data[table.name], res.damaged_regions[table.name] = _read_table(con, table.name, cols)
    finally:
        con.close()
    out = Store(dst, create=True)
    _write_rows(out, data, res)
    return res


def _write_rows(out: Store, data: dict[str, list[dict[str, Any]]], res: RecoverResult) -> None:
    run_ids = set()
    with out.writer.begin() as conn:
        for table in (runs_table, measurements_table, accuracy_table):
            rows = data.get(table.name, [])
            ok = bad = 0
            if table is measurements_table:
                # measurements whose run row was lost: a placeholder run keeps them
                for r in rows:
                    rid = r.get("run_id")
                    if isinstance(rid, str) and rid not in run_ids:
                        conn.execute(
                            sa.insert(runs_table).values(
                                id=rid,
                                created_at=str(r.get("created_at") or now_iso()),
                                command="(recovered: run row unreadable)",
                                config="{}",
                                fingerprint="{}",
                                machine_id=str(r.get("machine_id") or "unknown"),
                                status="partial",
                                reason="recovered by 'vlm-pareto db recover': the run row was unreadable",
                            )
                        )
                        run_ids.add(rid)
                        res.placeholder_runs += 1
            for r in rows:
                sp = conn.begin_nested()
                try:
                    conn.execute(sa.insert(table).values(**r))
                    sp.commit()
                    ok += 1
                    if table is runs_table:
                        run_ids.add(r["id"])
                except sa.exc.DBAPIError:  # garbage from a damaged page: NULLs, duplicate keys
                    sp.rollback()
                    bad += 1
            res.copied[table.name] = ok
            res.unusable[table.name] = bad
