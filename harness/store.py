"""The results store: runs, measurements and accuracy rows in one SQL database.

SQLite under ``results/`` by default (WAL journal, so a SIGKILL mid-sweep never loses a
committed measurement nor leaves the file unreadable); any SQLAlchemy URL (PostgreSQL)
through ``--db`` or ``$VLM_PARETO_DB``. Every measurement is committed the moment it is
added. Unique keys plus ``INSERT ... ON CONFLICT DO NOTHING`` make concurrent writers safe:
two sweep workers measuring the same key never produce two rows.

The schema is versioned (table ``meta``); :data:`MIGRATIONS` upgrades older files in place.
Creating or migrating the schema happens in one write transaction that only one process can
hold (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL): concurrent processes
opening a new store wait for the winner and then see its finished schema.

Readers (``Store(readonly=True)``) open SQLite files with ``mode=ro``: they never create,
migrate or change the journal mode of a file, and a file they refuse is left byte-identical.
Writers run ``PRAGMA quick_check`` on open and refuse a damaged file; a damaged page met
later raises :class:`StoreCorrupt` and the store refuses every further write (see
docs/store.md; ``vlm-pareto db check`` / ``db recover``).
"""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError

from harness.errors import UserError
from harness.tasks import MeasurementKey  # noqa: F401 (the key lives with the tasks; re-exported)

if TYPE_CHECKING:
    import pandas as pd

    from harness.protocol import Measurement

T = TypeVar("T")

SCHEMA_VERSION = 2
DEFAULT_DB_ENV = "VLM_PARETO_DB"
DEFAULT_DB_PATH = Path("results") / "vlm_pareto.db"

metadata = sa.MetaData()

meta_table = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

runs_table = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("command", sa.Text, nullable=False),
    sa.Column("config", sa.Text, nullable=False),  # JSON
    sa.Column("fingerprint", sa.Text, nullable=False),  # JSON
    sa.Column("machine_id", sa.String(32), nullable=False, index=True),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False, default="running"),
    # why a run is not ``done`` (v2): the error that stopped it, or "interrupted"
    sa.Column("reason", sa.Text),
)

KEY_COLUMNS = (
    "run_id",
    "kind",
    "name",
    "resolution",
    "tiling",
    "tokens",
    "prompt_tokens",
    "in_dim",
    "backend",
    "device",
    "dtype",
    "protocol",
)

measurements_table = sa.Table(
    "measurements",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # encoder | prefill | projector | canary
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("resolution", sa.Integer, nullable=False, default=0),
    sa.Column("tiling", sa.String(32), nullable=False, default="none"),
    sa.Column("tokens", sa.Integer, nullable=False, default=0),
    sa.Column("prompt_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("in_dim", sa.Integer, nullable=False, default=0),
    sa.Column("backend", sa.String(32), nullable=False),
    sa.Column("device", sa.String(32), nullable=False),
    sa.Column("dtype", sa.String(16), nullable=False),
    sa.Column("protocol", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # ok | skipped | failed
    sa.Column("reason", sa.Text),
    sa.Column("samples_ms", sa.Text),  # JSON list
    sa.Column("median_ms", sa.Float),
    sa.Column("mean_ms", sa.Float),
    sa.Column("min_ms", sa.Float),
    sa.Column("p90_ms", sa.Float),
    sa.Column("iqr_ms", sa.Float),
    sa.Column("ci_low_ms", sa.Float),
    sa.Column("ci_high_ms", sa.Float),
    sa.Column("noisy", sa.Boolean),
    sa.Column("threads", sa.Integer),
    sa.Column("peak_mem_bytes", sa.BigInteger),
    sa.Column("build_s", sa.Float),
    sa.Column("estimated", sa.Boolean, nullable=False, default=False),
    sa.Column("extra", sa.Text),  # JSON
    sa.Column("machine_id", sa.String(32), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.UniqueConstraint(*KEY_COLUMNS, name="uq_measurement_key"),
)

accuracy_table = sa.Table(
    "accuracy",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("encoder", sa.String(200), nullable=False),
    sa.Column("resolution", sa.Integer, nullable=False),
    sa.Column("llm", sa.String(200), nullable=False),
    sa.Column("tiling", sa.String(32), nullable=False),
    sa.Column("recipe", sa.String(64), nullable=False),
    sa.Column("scores", sa.Text, nullable=False),  # JSON {benchmark: 0-100}
    sa.Column("avg5", sa.Float),
    sa.Column("missing", sa.Text),  # JSON list
    sa.Column("partial", sa.Boolean, nullable=False, default=False),
    sa.Column("source", sa.String(500), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.UniqueConstraint(
        "encoder", "resolution", "llm", "tiling", "recipe", "source", name="uq_accuracy_key"
    ),
)

#: tables Optuna's RDBStorage creates in the same database
OPTUNA_TABLES = {"studies", "version_info", "alembic_version", "trials"}

#: key of the PostgreSQL advisory lock held while the schema is created or migrated
SCHEMA_LOCK_KEY = 0x766C6D70  # "vlmp"


def _migrate_v2(conn: sa.Connection) -> None:
    """v2: runs.reason (why a run stopped before its plan completed)."""
    if "reason" not in {c["name"] for c in sa.inspect(conn).get_columns("runs")}:
        conn.execute(sa.text("ALTER TABLE runs ADD COLUMN reason TEXT"))


#: version -> function upgrading a database from version-1 to version (runs in one transaction).
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {2: _migrate_v2}


class StoreMissing(UserError):
    """There is no store yet where a reader looked (missing path, empty file, no tables)."""


class StoreCorrupt(UserError):
    """The store file is damaged: nothing more is written to it (see docs/store.md)."""


def corrupt_message(where: str, detail: str) -> str:
    if "not a database" in detail.lower():
        return f"{where} is not a SQLite database, or is damaged beyond reading ({detail}); file left untouched"
    return (
        f"results store {where} is damaged ({detail}); nothing was written to it. Restore it from a "
        f"backup, or copy every readable row into a new file with 'vlm-pareto db recover {where} NEW.db'"
    )


#: SQLite error texts that mean a damaged or foreign file (SQLITE_CORRUPT / SQLITE_NOTADB)
_CORRUPT_MARKERS = ("malformed", "not a database", "disk image", "corrupt")
#: PostgreSQL SQLSTATEs for damaged data (data_corrupted, index_corrupted)
_CORRUPT_SQLSTATES = {"XX001", "XX002"}


def is_corruption(e: BaseException) -> bool:
    """Whether a DB-API / SQLAlchemy error says the database file itself is damaged."""
    orig = getattr(e, "orig", None) or e
    if (
        getattr(orig, "sqlstate", None) in _CORRUPT_SQLSTATES
        or getattr(orig, "pgcode", None) in _CORRUPT_SQLSTATES
    ):
        return True
    if isinstance(orig, sqlite3.DatabaseError) and not isinstance(orig, (sqlite3.IntegrityError,)):
        low = str(orig).lower()
        return any(m in low for m in _CORRUPT_MARKERS)
    return False


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


#: Stores already noted as read without their -wal file (the note is printed once).
_NOTED_IMMUTABLE: set[str] = set()


def resolve_url(url: str | None = None) -> str:
    """``--db`` value / ``$VLM_PARETO_DB`` / default file -> SQLAlchemy URL.

    A bare path is taken as a SQLite file.
    """
    url = url or os.environ.get(DEFAULT_DB_ENV) or str(DEFAULT_DB_PATH)
    if "://" in url:
        return url
    return f"sqlite:///{Path(url).expanduser()}"


def sqlite_ro_uri(path: Path, immutable: bool = False) -> str:
    """SQLite URI that opens ``path`` read-only (``immutable``: without -wal/-shm files)."""
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    return uri + "&immutable=1" if immutable else uri


def sqlite_path(url: str) -> Path | None:
    u = sa.engine.make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    if u.database.startswith("file:"):  # sqlite URI filename
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(u.database).path))
    return Path(u.database)


def describe_url(url: str) -> str:
    """The file of a SQLite URL, else the URL without its password (for messages)."""
    path = sqlite_path(url)
    if path is not None:
        return str(path)
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, default=_json_default)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class Store:
    """Results database.

    ``create=False`` refuses to make a new SQLite file. ``readonly=True`` (the read-only
    commands: runs, report, choose, compare, zoo) also never migrates, never changes the
    journal mode and opens SQLite with ``mode=ro``, so a refused file stays byte-identical.
    Writers quick-check an existing file first and refuse a damaged one.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        create: bool = True,
        readonly: bool = False,
        retries: int = 8,
        busy_timeout_s: float = 30.0,
        check: bool = True,
    ):
        self.url = resolve_url(url)
        self.readonly = readonly
        self.retries = retries
        self.busy_timeout_s = busy_timeout_s
        self.busy_timeout_ms = int(busy_timeout_s * 1000)
        #: set once a damaged page was met: every later write is refused
        self.corrupt: str | None = None
        self.where = describe_url(self.url)
        create = create and not readonly
        path = sqlite_path(self.url)
        self.path = path
        if path is not None:
            if not path.exists():
                if not create:
                    raise StoreMissing(
                        f"no results store at {path} (no runs yet); run 'vlm-pareto sweep' first or pass --db"
                    )
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise UserError(
                        f"cannot create results directory {path.parent}: {e.strerror}"
                    ) from e
                if not os.access(path.parent, os.W_OK):
                    raise UserError(
                        f"results directory {path.parent} is not writable; pass --db elsewhere"
                    )
            elif path.is_dir():
                raise UserError(f"results store {path} is a directory, not a database file")
            elif not path.is_file():
                raise UserError(
                    f"results store {path} is not a regular file (a device, pipe or socket); "
                    "pass --db a database file"
                )
            elif not os.access(path, os.R_OK):
                raise UserError(f"results store {path} is not readable; check its permissions")
            elif readonly and path.stat().st_size == 0:
                raise StoreMissing(
                    f"{path} is an empty file, not a results store; run a sweep with --db {path} first"
                )
        try:
            if path is not None and readonly:
                # a folder nobody may write: SQLite cannot make the -shm file a WAL reader
                # needs, so read the file as immutable (nobody can change it)
                immutable = not os.access(path.parent, os.W_OK)
                uri = sqlite_ro_uri(path, immutable)
                if immutable:
                    wal = path.with_name(path.name + "-wal")
                    if wal.exists() and wal.stat().st_size and str(path) not in _NOTED_IMMUTABLE:
                        import sys

                        _NOTED_IMMUTABLE.add(str(path))
                        print(
                            f"vlm-pareto: note: {path} is in a read-only folder: read as it is, "
                            f"without its -wal file ({wal.stat().st_size} bytes of later writes)",
                            file=sys.stderr,
                        )
                self.engine = sa.create_engine(
                    "sqlite://",
                    creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False),
                )
            else:
                self.engine = sa.create_engine(self.url)
        except (sa.exc.ArgumentError, ImportError) as e:
            raise UserError(f"cannot use database URL {self.where!r}: {e}") from e
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            timeout, ro = self.busy_timeout_ms, readonly

            def on_connect(dbapi_conn: Any, _record: Any) -> None:
                # explicit transactions (below) instead of the driver's implicit ones
                dbapi_conn.isolation_level = None
                _sqlite_pragmas(dbapi_conn, timeout, readonly=ro)

            def on_begin(conn: sa.Connection) -> None:
                # Write transactions take the write lock up front: a read-then-write
                # transaction can then never fail half-way on a lock (it waits for
                # busy_timeout instead), and schema creation is serialized across processes.
                write = conn.get_execution_options().get("vlm_pareto_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write and not ro else "BEGIN")

            sa.event.listen(self.engine, "connect", on_connect)
            sa.event.listen(self.engine, "begin", on_begin)
        elif dialect == "postgresql" and readonly:

            def pg_readonly(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("SET default_transaction_read_only = on")
                cur.close()
                dbapi_conn.commit()

            sa.event.listen(self.engine, "connect", pg_readonly)

        def on_error(ctx: Any) -> None:
            if is_corruption(ctx.original_exception):
                self.corrupt = error_line(ctx.original_exception)
                raise StoreCorrupt(
                    corrupt_message(self.where, self.corrupt)
                ) from ctx.original_exception

        sa.event.listen(self.engine, "handle_error", on_error)
        #: the engine for write transactions (``BEGIN IMMEDIATE`` on SQLite)
        self.writer = self.engine.execution_options(vlm_pareto_write=True)
        self._ensure_schema(create, check=check)

    # -- schema ---------------------------------------------------------------------------
    def _ensure_schema(self, create: bool, *, check: bool = True) -> None:
        """Create, check or migrate the schema, waiting out other processes doing the same.

        SQLite can answer ``database is locked`` without calling the busy handler (switching
        a fresh file to WAL, or a reader meeting another process's WAL recovery), so lock
        errors are retried here with backoff until ``busy_timeout_s`` has passed.
        """
        deadline = time.monotonic() + max(self.busy_timeout_s, 1.0)
        delay = 0.02
        while True:
            try:
                self._ensure_schema_once(create, check=check)
                return
            except (OperationalError, sqlite3.OperationalError) as e:
                if not _is_lock_error(e) or time.monotonic() > deadline:
                    raise UserError(_explain_db_error(self.where, e)) from e
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)

    def _ensure_schema_once(self, create: bool, *, check: bool = True) -> None:
        try:
            with (self.engine if self.readonly else self.writer).begin() as conn:
                if conn.dialect.name == "postgresql" and not self.readonly:
                    # one process creates/migrates; the others wait here and then see its schema
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY}
                    )
                insp = sa.inspect(conn)
                tables = set(insp.get_table_names())
                # Optuna studies (vlm-pareto search) share the database: their tables are
                # not a sign of a foreign database.
                ours_or_optuna = {
                    t for t in tables if t in OPTUNA_TABLES or t.startswith(("trial", "study"))
                }
                if "meta" not in tables:
                    if tables - ours_or_optuna and "runs" not in tables:
                        raise UserError(
                            f"{self.where} is a database, but not a vlm-pareto results store (left untouched)"
                        )
                    if not create and not tables:
                        raise StoreMissing(
                            f"{self.where} holds no vlm-pareto results yet; run a sweep first"
                        )
                    if self.readonly:
                        raise UserError(
                            f"{self.where} is not a complete vlm-pareto results store (no meta table)"
                        )
                    metadata.create_all(conn)
                    conn.execute(
                        sa.insert(meta_table).values(
                            key="schema_version", value=str(SCHEMA_VERSION)
                        )
                    )
                else:
                    raw = conn.execute(
                        sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
                    ).scalar_one_or_none()
                    try:
                        version = int(str(raw))
                    except ValueError:
                        raise UserError(
                            f"results store {self.where} has no valid schema version ({raw!r})"
                        ) from None
                    if version > SCHEMA_VERSION:
                        raise UserError(
                            f"results store schema v{version} is newer than this vlm-pareto (v{SCHEMA_VERSION}); upgrade vlm-pareto"
                        )
                    if version < SCHEMA_VERSION and self.readonly:
                        raise UserError(
                            f"results store {self.where} has schema v{version}, this vlm-pareto reads v{SCHEMA_VERSION}; "
                            f"upgrade it with 'vlm-pareto --db {self.where} db migrate' (read-only commands never change it)"
                        )
                    if check and not self.readonly:
                        problems = open_check(conn, self.path)
                        if problems:
                            self.corrupt = problems[0]
                            raise StoreCorrupt(corrupt_message(self.where, problems[0]))
                    for v in range(version + 1, SCHEMA_VERSION + 1):
                        MIGRATIONS[v](conn)
                        conn.execute(
                            sa.update(meta_table)
                            .where(meta_table.c.key == "schema_version")
                            .values(value=str(v))
                        )
            if self.engine.dialect.name == "sqlite" and not self.readonly:
                # WAL: readers never block the writer and a killed writer leaves a readable
                # file. Set only after the file was accepted as a store (it is persistent).
                raw_conn = self.engine.raw_connection()
                try:
                    cur = raw_conn.cursor()
                    mode = cur.execute("PRAGMA journal_mode").fetchone()
                    if not mode or str(mode[0]).lower() != "wal":
                        got = cur.execute("PRAGMA journal_mode=WAL").fetchone()
                        if not got or str(got[0]).lower() != "wal":
                            # another connection held a lock: SQLite kept the old mode
                            raise sqlite3.OperationalError("database is locked (journal mode)")
                    cur.close()
                finally:
                    raw_conn.close()
        except UserError:
            raise
        except OperationalError as e:
            if _is_lock_error(e):
                raise  # retried by _ensure_schema
            raise UserError(_explain_db_error(self.where, e)) from e
        except DatabaseError as e:
            raise UserError(
                f"cannot read results store {self.where}: {error_line(e)} (file left untouched)"
            ) from e

    @property
    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
                ).scalar_one()
            )

    # -- retries --------------------------------------------------------------------------
    def _retry(self, fn: Callable[[], T], *, on_conflict: bool = False) -> T:
        """Run a write, retrying while another writer holds the lock.

        ``on_conflict``: also retry when a concurrent writer inserted the same unique key
        first (``fn`` re-reads and decides again). A store found damaged refuses the write.
        """
        if self.readonly:
            raise AssertionError("write on a read-only Store")
        deadline = time.monotonic() + max(self.busy_timeout_s, 1.0)
        delay = 0.02
        for attempt in range(max(self.retries, 0) + 1000):
            if self.corrupt is not None:
                raise StoreCorrupt(corrupt_message(self.where, self.corrupt))
            try:
                return fn()
            except IntegrityError as e:
                if not on_conflict or attempt >= 50:
                    raise UserError(f"database error on {self.where}: {error_line(e)}") from e
            except OperationalError as e:
                locked = "locked" in str(e).lower() or "busy" in str(e).lower()
                if not locked or attempt >= self.retries and time.monotonic() > deadline:
                    raise UserError(_explain_db_error(self.where, e)) from e
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)
        raise UserError(f"results store {self.where}: gave up after repeated write conflicts")

    def _insert_ignore(self, table: sa.Table, values: dict[str, Any]) -> sa.Insert:
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table).values(**values).on_conflict_do_nothing()
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).values(**values).on_conflict_do_nothing()
        return sa.insert(table).values(**values)

    # -- runs -----------------------------------------------------------------------------
    def create_run(
        self,
        command: str,
        config: dict[str, Any],
        fingerprint: dict[str, Any],
        run_id: str | None = None,
    ) -> str:
        """Create a run, or reopen ``run_id`` (resume) if it exists on the same machine."""
        rid = run_id or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        existing = self.get_run(rid)
        if existing is not None:
            if existing["machine_id"] != fingerprint.get("machine_id"):
                raise UserError(
                    f"run {rid} was measured on machine {existing['machine_id']}, this is "
                    f"{fingerprint.get('machine_id')}: resume it there or start a new run"
                )
            self.set_run_status(rid, "running")
            return rid
        values = dict(
            id=rid,
            created_at=now_iso(),
            command=command,
            config=_json(config) or "{}",
            fingerprint=_json(fingerprint) or "{}",
            machine_id=str(fingerprint.get("machine_id", "unknown")),
            git_commit=(fingerprint.get("git") or {}).get("commit"),
            status="running",
        )

        def write() -> None:
            with self.writer.begin() as conn:
                conn.execute(self._insert_ignore(runs_table, values))

        self._retry(write)
        return rid

    def set_run_status(self, run_id: str, status: str, reason: str | None = None) -> None:
        """Set a run's status (``running``, ``done``, ``partial``, ``failed``, ``interrupted``)
        and why it is not ``done`` (None clears the reason)."""

        def write() -> None:
            with self.writer.begin() as conn:
                conn.execute(
                    sa.update(runs_table)
                    .where(runs_table.c.id == run_id)
                    .values(status=status, reason=reason)
                )

        self._retry(write)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(runs_table).where(runs_table.c.id == run_id))
                .mappings()
                .first()
            )
        return _run_dict(row) if row else None

    def require_run(self, run_id: str) -> dict[str, Any]:
        run = self.get_run(run_id)
        if run is None:
            known = [r["id"] for r in self.list_runs()][-5:]
            hint = f" (latest: {', '.join(known)})" if known else " (the store has no runs)"
            raise UserError(f"no run {run_id!r} in {self.url}{hint}")
        return run

    def list_runs(self, machine_id: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(runs_table).order_by(runs_table.c.created_at)
        if machine_id:
            q = q.where(runs_table.c.machine_id == machine_id)
        with self.engine.connect() as conn:
            return [_run_dict(r) for r in conn.execute(q).mappings()]

    # -- measurements ---------------------------------------------------------------------
    def add_measurement(
        self,
        run_id: str,
        key: MeasurementKey,
        measurement: Measurement | None = None,
        *,
        status: str = "ok",
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
        build_s: float | None = None,
        estimated: bool = False,
        machine_id: str | None = None,
        replace: bool = False,
    ) -> int:
        """Store one measurement, committed at once; return its row id.

        An existing ``ok`` row with the same key wins (the first writer's numbers are kept);
        an existing ``skipped``/``failed``/``running`` row is replaced, so a resumed sweep
        retries it. ``replace=True`` overwrites an ``ok`` row too (interleaved rounds add
        samples to a row).
        """
        if status not in ("ok", "skipped", "failed", "running"):
            raise ValueError(f"bad status {status!r}")
        if status == "ok" and measurement is None:
            raise ValueError("an ok measurement needs samples")
        run = self.require_run(run_id)
        values: dict[str, Any] = {
            **key.as_dict(),
            "run_id": run_id,
            "status": status,
            "reason": reason,
        }
        values.update(
            extra=_json(extra or {}),
            build_s=_finite(build_s),
            estimated=bool(estimated),
            machine_id=machine_id or run["machine_id"],
            created_at=now_iso(),
        )
        if measurement is not None:
            s = measurement.stats
            values.update(
                samples_ms=_json([float(x) for x in measurement.samples_ms]),
                median_ms=s.median_ms,
                mean_ms=s.mean_ms,
                min_ms=s.min_ms,
                p90_ms=s.p90_ms,
                iqr_ms=s.iqr_ms,
                ci_low_ms=s.ci_low_ms,
                ci_high_ms=s.ci_high_ms,
                noisy=bool(s.noisy),
                threads=measurement.threads,
                peak_mem_bytes=measurement.peak_mem_bytes,
            )
        where = sa.and_(*(measurements_table.c[c] == values[c] for c in KEY_COLUMNS))

        def write() -> int:
            with self.writer.begin() as conn:
                stale = where if replace else sa.and_(where, measurements_table.c.status != "ok")
                conn.execute(sa.delete(measurements_table).where(stale))
                try:
                    conn.execute(self._insert_ignore(measurements_table, values))
                except IntegrityError:  # dialects without ON CONFLICT: the other writer won
                    pass
                return int(
                    conn.execute(sa.select(measurements_table.c.id).where(where)).scalar_one()
                )

        return self._retry(write)

    def claim(self, run_id: str, key: MeasurementKey, owner: str) -> dict[str, Any]:
        """Try to reserve ``key`` for ``owner`` (a ``running`` row); return the row now stored.

        Several sweep workers sharing a run use this so each unique measurement is taken once:
        the caller owns the key iff the returned row is ``running`` with ``reason == owner``.
        A ``skipped``/``failed`` row from an earlier attempt is replaced by the claim.
        """
        run = self.require_run(run_id)
        values: dict[str, Any] = {
            **key.as_dict(),
            "run_id": run_id,
            "status": "running",
            "reason": owner,
        }
        values.update(
            extra="{}", estimated=False, machine_id=run["machine_id"], created_at=now_iso()
        )
        where = sa.and_(*(measurements_table.c[c] == values[c] for c in KEY_COLUMNS))

        def write() -> dict[str, Any]:
            with self.writer.begin() as conn:
                # skipped/failed rows of an earlier attempt are retried by the claimant
                conn.execute(
                    sa.delete(measurements_table).where(
                        where, measurements_table.c.status.in_(["skipped", "failed"])
                    )
                )
                try:
                    conn.execute(self._insert_ignore(measurements_table, values))
                except IntegrityError:
                    pass
                row = conn.execute(sa.select(measurements_table).where(where)).mappings().first()
                return _measurement_dict(row)

        return self._retry(write)

    def release(self, run_id: str, key: MeasurementKey, owner: str | None = None) -> None:
        """Drop a ``running`` claim (of ``owner``, or any when None) so another worker can take it."""
        values = {**key.as_dict(), "run_id": run_id}
        cond = [measurements_table.c[c] == values[c] for c in KEY_COLUMNS]
        cond.append(measurements_table.c.status == "running")
        if owner is not None:
            cond.append(measurements_table.c.reason == owner)

        def write() -> None:
            with self.writer.begin() as conn:
                conn.execute(sa.delete(measurements_table).where(sa.and_(*cond)))

        self._retry(write)

    def get_measurement(self, run_id: str, key: MeasurementKey) -> dict[str, Any] | None:
        values = {**key.as_dict(), "run_id": run_id}
        where = sa.and_(*(measurements_table.c[c] == values[c] for c in KEY_COLUMNS))
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(measurements_table).where(where)).mappings().first()
        return _measurement_dict(row) if row else None

    def measurement_rows(
        self,
        run_ids: Sequence[str] | None = None,
        kind: str | None = None,
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        q = sa.select(measurements_table).order_by(measurements_table.c.id)
        if run_ids:
            q = q.where(measurements_table.c.run_id.in_(list(run_ids)))
        if kind:
            q = q.where(measurements_table.c.kind == kind)
        if status:
            q = q.where(measurements_table.c.status == status)
        with self.engine.connect() as conn:
            return [_measurement_dict(r) for r in conn.execute(q).mappings()]

    def measurements(
        self,
        run_ids: Sequence[str] | None = None,
        kind: str | None = None,
        status: str | None = None,
    ) -> pd.DataFrame:
        """Measurements as a DataFrame (``samples_ms`` lists and ``extra`` dicts decoded)."""
        import pandas as pd

        rows = self.measurement_rows(run_ids, kind, status)
        cols = [c.name for c in measurements_table.columns]
        return pd.DataFrame(rows, columns=cols)

    # -- accuracy -------------------------------------------------------------------------
    def add_accuracy(
        self, rows: Iterable[dict[str, Any]], *, replace: bool = False
    ) -> dict[str, int]:
        """Insert accuracy rows in one transaction; identical rows are left alone.

        Returns counts ``{"inserted", "unchanged", "replaced", "conflicts"}``. A row whose key
        exists with different scores is a conflict unless ``replace``; conflicts write nothing.
        """
        fixed = list(rows)
        return self.merge_accuracy(lambda _stored: fixed, replace=replace)

    def merge_accuracy(
        self,
        build: Callable[[list[dict[str, Any]]], Iterable[dict[str, Any]]],
        *,
        replace: bool = True,
    ) -> dict[str, int]:
        """Read the stored accuracy rows, ``build`` the rows to write from them, write them.

        Read, build and write form one unit: if another process changed or inserted one of
        the rows in between, the whole unit is redone on the new state (on SQLite the write
        lock is taken up front; on PostgreSQL the write checks the row it read is unchanged),
        so two overlapping ingests never lose each other's scores. ``build`` gets the stored
        rows as dicts (``scores`` decoded) and may raise UserError (nothing is written).
        """
        counts = {"inserted": 0, "unchanged": 0, "replaced": 0, "conflicts": 0}
        key_cols = ("encoder", "resolution", "llm", "tiling", "recipe", "source")

        def write() -> dict[str, int]:
            c = dict.fromkeys(counts, 0)
            with self.writer.begin() as conn:
                stored = [
                    dict(r)
                    for r in conn.execute(
                        sa.select(accuracy_table).order_by(accuracy_table.c.id)
                    ).mappings()
                ]
                by_key = {tuple(r[k] for k in key_cols): r for r in stored}
                decoded = [
                    {**r, "scores": json.loads(r["scores"]) if r["scores"] else {}} for r in stored
                ]
                prepared = [_accuracy_values(r) for r in build(decoded)]
                for v in prepared:
                    where = sa.and_(*(accuracy_table.c[k] == v[k] for k in key_cols))
                    old = by_key.get(tuple(v[k] for k in key_cols))
                    if old is None:
                        conn.execute(
                            sa.insert(accuracy_table).values(**v)
                        )  # a racing insert: IntegrityError
                        c["inserted"] += 1
                    elif (old["scores"], bool(old["partial"])) == (v["scores"], v["partial"]):
                        c["unchanged"] += 1
                    elif replace:
                        same_as_read = sa.and_(
                            where,
                            accuracy_table.c.scores == old["scores"],
                            accuracy_table.c.partial == old["partial"],
                        )
                        if (
                            conn.execute(
                                sa.update(accuracy_table).where(same_as_read).values(**v)
                            ).rowcount
                            != 1
                        ):
                            raise _Changed()
                        c["replaced"] += 1
                    else:
                        c["conflicts"] += 1
                if c["conflicts"]:
                    raise _Conflict(c)
            return c

        for _ in range(50):
            try:
                return self._retry(write, on_conflict=True)
            except _Changed:
                time.sleep(0.01 + random.random() * 0.05)
            except _Conflict as e:
                raise UserError(
                    f"{e.counts['conflicts']} accuracy row(s) already stored with different scores; "
                    "nothing written (pass --prefer newest to replace)"
                ) from None
        raise UserError(
            f"results store {self.where}: accuracy rows kept changing under this ingest; try again"
        )

    def accuracy(self) -> pd.DataFrame:
        import pandas as pd

        with self.engine.connect() as conn:
            rows = [
                dict(r)
                for r in conn.execute(
                    sa.select(accuracy_table).order_by(accuracy_table.c.id)
                ).mappings()
            ]
        for r in rows:
            r["scores"] = json.loads(r["scores"]) if r["scores"] else {}
            r["missing"] = json.loads(r["missing"]) if r["missing"] else []
        return pd.DataFrame(rows, columns=[c.name for c in accuracy_table.columns])

    # -- export ---------------------------------------------------------------------------
    def export(self, path: str | Path, run_ids: Sequence[str] | None = None) -> Path:
        """Write measurements to CSV, Parquet or JSON (by extension) in one call.

        Every row carries ``schema_version`` (:data:`harness.schema.FILE_SCHEMA_VERSION`), so
        a reader (``compare``, nightly baselines) can refuse a layout it does not know.
        """
        from harness.schema import FILE_SCHEMA_VERSION

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet", ".pq", ".json"):
            raise UserError(
                f"cannot export to {path.name}: use a .csv, .parquet or .json file name"
            )
        df = self.measurements(run_ids).assign(schema_version=FILE_SCHEMA_VERSION)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if suffix == ".csv":
                out = df.copy()
                out["samples_ms"] = out["samples_ms"].map(json.dumps)
                out["extra"] = out["extra"].map(json.dumps)
                out.to_csv(path, index=False)
            elif suffix in (".parquet", ".pq"):
                out = df.copy()
                out["extra"] = out["extra"].map(json.dumps)
                out.to_parquet(path, index=False)
            else:
                path.write_text(
                    json.dumps(df.to_dict(orient="records"), indent=1, default=_json_default)
                )
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from e
        return path


class _Changed(Exception):
    """A row read in this unit was changed by another process before the write."""


class _Conflict(Exception):
    def __init__(self, counts: dict[str, int]):
        self.counts = counts


def _sqlite_pragmas(dbapi_conn: Any, busy_timeout_ms: int, *, readonly: bool = False) -> None:
    """Per-connection settings; none of them changes the file (journal mode is set once, by
    a writer, after the file was accepted)."""
    cur = dbapi_conn.cursor()
    try:
        # first, so that every later statement waits for a lock instead of failing
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if readonly:
            cur.execute("PRAGMA query_only=ON")
        else:
            # NORMAL is durable against process crashes in WAL mode (only power loss can drop
            # the last transaction), and much cheaper than FULL.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
    finally:
        cur.close()


def quick_check(conn: sa.Connection, full: bool = False) -> list[str]:
    """Problems SQLite's ``quick_check`` (``integrity_check`` when ``full``) finds; [] when
    fine and on other dialects (PostgreSQL checksums its own pages)."""
    if conn.dialect.name != "sqlite":
        return []
    pragma = "integrity_check" if full else "quick_check"
    rows = [str(r[0]) for r in conn.exec_driver_sql(f"PRAGMA {pragma}(20)")]
    return [] if rows == ["ok"] else rows


#: a SQLite store (file + WAL) up to this size gets SQLite's full ``quick_check`` when a
#: writer opens it (about 0.1 s from the page cache, 1 s from a cold disk); a larger one gets
#: the bounded :func:`spot_check` (see docs/store.md: a full ``quick_check`` of a 225 MB store
#: takes 0.5 s warm and 5 s cold). ``vlm-pareto db check`` always runs the full check.
FULL_OPEN_CHECK_BYTES = 32 * 2**20
#: rows of ``measurements`` the bounded check reads, spread evenly over the table
SPOT_CHECK_ROWS = 64


def open_check(conn: sa.Connection, path: Path | None) -> list[str]:
    """The check a writer runs on open: ``quick_check`` for a small store, else
    :func:`spot_check`. Problems found ([] when fine and on other dialects)."""
    if conn.dialect.name != "sqlite":
        return []
    size = _store_bytes(path)
    if path is None or size <= FULL_OPEN_CHECK_BYTES:
        return [f"quick_check: {p}" for p in quick_check(conn)]
    return spot_check(conn, path)


def _store_bytes(path: Path | None) -> int:
    if path is None:
        return 0
    total = 0
    for p in (path, Path(f"{path}-wal")):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total


def spot_check(conn: sa.Connection, path: Path, rows: int | None = None) -> list[str]:
    """A bounded check of a large SQLite store (cost independent of its size).

    - the file is a whole number of pages, and (no WAL content) as long as its header says
      (a truncated copy);
    - ``quick_check`` of every table but ``measurements`` (runs, meta, accuracy, Optuna's:
      all small) with their indexes;
    - ``rows`` rows of ``measurements`` spread evenly over its rowids (first and last
      included) are read whole, and each index of the table must find each of them.

    Damage elsewhere in ``measurements`` is met when a command reads that page (it raises
    :class:`StoreCorrupt`) and by the full check of ``vlm-pareto db check``. A damaged page
    that SQLite itself reports while reading raises :class:`StoreCorrupt` through the
    engine's error hook; the problems it can name are returned.
    """
    n = SPOT_CHECK_ROWS if rows is None else rows
    page_size = int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())
    pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
    size = path.stat().st_size
    wal = Path(f"{path}-wal")
    wal_empty = not wal.exists() or wal.stat().st_size == 0
    if size % page_size:
        return [f"file size {size} is not a whole number of {page_size}-byte pages (truncated?)"]
    if wal_empty and size < pages * page_size:
        return [f"file holds {size // page_size} pages, its header says {pages} (truncated)"]
    tables = [
        str(r[0])
        for r in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    problems: list[str] = []
    for t in tables:
        if t == "measurements":
            continue
        quoted = t.replace('"', '""')
        found = [str(r[0]) for r in conn.exec_driver_sql(f'PRAGMA quick_check("{quoted}")')]
        problems += [f"quick_check({t}): {p}" for p in found if p != "ok"]
    if problems or "measurements" not in tables or n <= 0:
        return problems
    indexes: dict[str, list[str]] = {}
    for idx in conn.exec_driver_sql("PRAGMA index_list(measurements)").mappings():
        cols = [
            str(c["name"])
            for c in conn.exec_driver_sql(f'PRAGMA index_info("{idx["name"]}")').mappings()
        ]
        if cols and all(cols):  # not an expression index
            indexes[str(idx["name"])] = cols
    lo, hi = conn.exec_driver_sql("SELECT min(rowid), max(rowid) FROM measurements").one()
    if lo is None:
        return []
    targets = sorted({int(lo) + (int(hi) - int(lo)) * i // max(n - 1, 1) for i in range(n)})
    for target in targets:
        row = (
            conn.exec_driver_sql(
                "SELECT rowid AS _rowid, * FROM measurements WHERE rowid >= ? ORDER BY rowid LIMIT 1",
                (target,),
            )
            .mappings()
            .first()
        )
        if row is None:
            continue
        rowid = int(row["_rowid"])
        for text_col in ("samples_ms", "extra"):
            try:
                if row[text_col] is not None:
                    json.loads(row[text_col])
            except (TypeError, ValueError):
                return [f"measurements row {rowid}: unreadable {text_col}"]
        for name, cols in indexes.items():
            where = " AND ".join(f'"{c}" IS ?' for c in cols)
            hit = conn.exec_driver_sql(
                f'SELECT rowid FROM measurements INDEXED BY "{name}" WHERE {where} AND rowid = ?',
                (*(row[c] for c in cols), rowid),
            ).first()
            if hit is None:
                return [f"index {name} is missing row {rowid} of measurements"]
    return []


def error_line(e: BaseException) -> str:
    """The first line of a database error's message (the driver's own error when wrapped)."""
    orig = getattr(e, "orig", None)
    lines = str(orig or e).splitlines()
    return lines[0] if lines else type(orig or e).__name__


def _server_hint(msg: str) -> str | None:
    """What to do about a database server that refuses us (PostgreSQL and the like)."""
    low = msg.lower()
    if (
        "connection refused" in low
        or "could not connect" in low
        or "timeout expired" in low
        or "no route to host" in low
        or "name or service not known" in low
    ):
        return "is the server running and the host/port in --db right?"
    if (
        "password authentication failed" in low
        or "no password supplied" in low
        or "role" in low
        and "does not exist" in low
    ):
        return "check the user and password in --db (or ~/.pgpass)"
    if "database" in low and "does not exist" in low:
        return "create it (createdb) or fix the database name in --db"
    return None


def _is_lock_error(e: BaseException) -> bool:
    low = str(e).lower()
    return "locked" in low or "busy" in low


def _explain_db_error(where: str, e: Exception) -> str:
    msg = error_line(e)
    low = msg.lower()
    try:  # never print a password
        where = sa.engine.make_url(where).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        pass
    hint = _server_hint(msg)
    if hint:
        return (
            f"cannot connect to database {where}: {msg.removeprefix('connection failed: ')}; {hint}"
        )
    if "locked" in low or "busy" in low:
        return f"results store {where} is locked by another process ({msg}); wait for it or use another --db"
    if "unable to open" in low or "readonly" in low or "read-only" in low:
        return (
            f"cannot write results store {where} ({msg}); check permissions or pass --db elsewhere"
        )
    if "not a database" in low or "malformed" in low:
        return f"results store {where} is corrupt or not a database ({msg}); file left untouched"
    return f"database error on {where}: {msg}"


def _run_dict(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["config"] = json.loads(d["config"]) if d.get("config") else {}
    d["fingerprint"] = json.loads(d["fingerprint"]) if d.get("fingerprint") else {}
    return d


def _measurement_dict(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["samples_ms"] = json.loads(d["samples_ms"]) if d.get("samples_ms") else []
    d["extra"] = json.loads(d["extra"]) if d.get("extra") else {}
    return d


def _accuracy_values(r: dict[str, Any]) -> dict[str, Any]:
    scores = {str(k): float(v) for k, v in (r.get("scores") or {}).items()}
    return dict(
        encoder=str(r["encoder"]),
        resolution=int(r["resolution"]),
        llm=str(r["llm"]),
        tiling=str(r.get("tiling") or "none"),
        recipe=str(r.get("recipe") or "unknown"),
        scores=_json(scores),
        avg5=_finite(r.get("avg5")),
        missing=_json(list(r.get("missing") or [])),
        partial=bool(r.get("partial", False)),
        source=str(r.get("source") or "unknown"),
        created_at=now_iso(),
    )
