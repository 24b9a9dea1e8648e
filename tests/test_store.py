"""The results store: round trips, resume semantics, crash safety, concurrency, bad input."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.fingerprint import fingerprint
from harness.protocol import Measurement
from harness.stats import summarize
from harness.store import SCHEMA_VERSION, MeasurementKey, Store

WRITER = Path(__file__).parent / "helpers" / "store_writer.py"
FP = {"machine_id": "m1", "machine": "test machine", "git": {"commit": "abc"}}


def meas(values):
    return Measurement(
        samples_ms=list(values), stats=summarize(values), protocol="quick", threads=2
    )


@pytest.fixture
def store(db_url):
    return Store(db_url)


def test_default_store_location_and_schema(db_url, store):
    assert store.url == db_url
    assert store.schema_version == SCHEMA_VERSION
    con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bare_path_is_sqlite(tmp_path):
    s = Store(str(tmp_path / "sub" / "x.db"))
    assert s.url.startswith("sqlite:///") and (tmp_path / "sub" / "x.db").exists()


def test_round_trip_measurement(store):
    run = store.create_run("sweep quick", {"a": 1}, FP)
    key = MeasurementKey("encoder", "fastvithd", resolution=256, tokens=16, protocol="quick")
    rid = store.add_measurement(
        run, key, meas([1.0, 2.0, 3.0]), extra={"gflops": 29.6}, build_s=0.5
    )
    row = store.get_measurement(run, key)
    assert row["id"] == rid and row["samples_ms"] == [1.0, 2.0, 3.0]
    assert row["median_ms"] == 2.0 and row["extra"] == {"gflops": 29.6} and row["build_s"] == 0.5
    assert row["machine_id"] == "m1" and row["status"] == "ok"
    df = store.measurements(run_ids=[run])
    assert len(df) == 1 and df.iloc[0]["samples_ms"] == [1.0, 2.0, 3.0]


def test_ok_row_is_kept_failed_row_is_replaced(store):
    run = store.create_run("c", {}, FP)
    key = MeasurementKey("prefill", "qwen2-0.5b", tokens=64, prompt_tokens=16)
    store.add_measurement(run, key, status="failed", reason="boom")
    store.add_measurement(run, key, meas([5.0, 6.0]))
    assert store.get_measurement(run, key)["status"] == "ok"
    store.add_measurement(run, key, meas([50.0, 60.0]))  # a second writer of the same key
    rows = store.measurement_rows([run])
    assert len(rows) == 1 and rows[0]["median_ms"] == 5.5


def test_resume_same_run_and_refuse_other_machine(store):
    run = store.create_run("c", {}, FP, run_id="r1")
    assert store.create_run("c", {}, FP, run_id="r1") == run
    with pytest.raises(UserError, match="measured on machine m1"):
        store.create_run("c", {}, {**FP, "machine_id": "m2"}, run_id="r1")


def test_unknown_run(store):
    with pytest.raises(UserError, match="no run 'nope'"):
        store.require_run("nope")


def test_export_formats(store, tmp_path):
    run = store.create_run("c", {}, FP)
    store.add_measurement(run, MeasurementKey("encoder", "e", resolution=64), meas([1.0, 2.0]))
    import pandas as pd

    for ext in ("csv", "parquet", "json"):
        path = store.export(tmp_path / f"m.{ext}")
        df = pd.read_json(path) if ext == "json" else getattr(pd, f"read_{ext}")(path)
        assert len(df) == 1 and df.iloc[0]["name"] == "e"
    with pytest.raises(UserError, match=".csv, .parquet or .json"):
        store.export(tmp_path / "m.xlsx")


def test_accuracy_idempotent_and_conflicts(store):
    row = dict(
        encoder="fastvithd",
        resolution=256,
        llm="vicuna-7b",
        tiling="none",
        recipe="llava-1.5",
        scores={"gqa": 60.6},
        avg5=None,
        missing=["pope"],
        source="t.json",
    )
    assert store.add_accuracy([row])["inserted"] == 1
    assert store.add_accuracy([row])["unchanged"] == 1
    with pytest.raises(UserError, match="different scores"):
        store.add_accuracy([{**row, "scores": {"gqa": 61.0}}])
    assert store.accuracy().iloc[0]["scores"] == {"gqa": 60.6}
    assert store.add_accuracy([{**row, "scores": {"gqa": 61.0}}], replace=True)["replaced"] == 1
    assert len(store.accuracy()) == 1


def test_missing_store_for_readers(tmp_path):
    with pytest.raises(UserError, match="no results store"):
        Store(str(tmp_path / "missing.db"), create=False)
    assert not (tmp_path / "missing.db").exists()


def test_corrupt_store_is_refused_and_untouched(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    digest = hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(
        UserError, match="corrupt or not a database|not a SQLite database|cannot read"
    ):
        Store(str(bad))
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == digest


def test_foreign_sqlite_database_is_refused(tmp_path):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table x (y int)").connection.commit()
    with pytest.raises(UserError, match="not a vlm-pareto results store"):
        Store(str(other))


def test_unwritable_results_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    with pytest.raises(UserError, match="cannot create results directory"):
        Store(str(blocker / "results" / "x.db"))


def test_locked_store_gives_one_line_error(db_url):
    s = Store(db_url, retries=1, busy_timeout_s=0.1)
    run = s.create_run("c", {}, FP)
    con = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(UserError, match="locked"):
            s.add_measurement(run, MeasurementKey("encoder", "e"), meas([1.0]))
    finally:
        con.execute("ROLLBACK")
    s.add_measurement(run, MeasurementKey("encoder", "e"), meas([1.0]))  # fine once released
    assert len(s.measurement_rows([run])) == 1


def test_newer_schema_is_refused(db_url):
    Store(db_url)
    con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    con.execute("update meta set value='99' where key='schema_version'")
    con.commit()
    with pytest.raises(UserError, match="newer than this vlm-pareto"):
        Store(db_url)


def test_sigkill_during_writes_loses_nothing_committed(db_url):
    store = Store(db_url)
    run = store.create_run("c", {}, FP)
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), db_url, run, "0", "100000"], stdout=subprocess.PIPE, text=True
    )
    committed = []
    assert proc.stdout is not None
    while len(committed) < 40:
        line = proc.stdout.readline()
        assert line, "writer died early"
        committed.append(int(line.split()[2]))
    os.kill(proc.pid, signal.SIGKILL)  # mid-loop: likely inside a transaction
    proc.wait()
    path = db_url.removeprefix("sqlite:///")
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = {r[0] for r in con.execute("select id from measurements")}
    assert set(committed) <= ids
    # and the store is still usable for writing
    Store(db_url).add_measurement(run, MeasurementKey("encoder", "after-kill"), meas([1.0]))


def test_concurrent_writers_no_duplicates_no_losses(db_url):
    store = Store(db_url)
    run = store.create_run("c", {}, FP)
    n, workers = 30, 4
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), db_url, run, str(w), str(n), "overlap"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ] + [
        subprocess.Popen(
            [sys.executable, str(WRITER), db_url, run, str(w + 10), str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(2)
    ]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    rows = Store(db_url).measurement_rows([run])
    # overlapping keys: n unique rows whoever wrote them; distinct keys: every one present
    assert len(rows) == n + 2 * n
    keys = {(r["name"], r["resolution"]) for r in rows}
    assert len(keys) == len(rows)
    for out in outs:
        for line in out.splitlines():
            assert int(line.split()[2]) in {r["id"] for r in rows}


def test_fingerprint_has_what_comparisons_need():
    fp = fingerprint(threads=2)
    for key in (
        "cpu_model",
        "cpu_cores",
        "memory_gib",
        "os",
        "python",
        "libraries",
        "threads",
        "git",
        "machine_id",
    ):
        assert key in fp
    assert fp["libraries"]["vlm-pareto"]
    assert len(fp["machine_id"]) == 12
    assert fingerprint()["machine_id"] == fp["machine_id"]
