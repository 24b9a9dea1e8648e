"""The store on a real PostgreSQL server, exactly as on SQLite: schema and migrations,
crash safety, concurrent writers, a killed and resumed sweep, an Optuna study and nightly
history in the same database, and bad connection input.

The server is the one ``scripts/services.sh start`` brings up (``bash scripts/test.sh`` does);
its URL comes from the services env file (tests/conftest.py), or ``VLM_PARETO_TEST_PG_URL``
may name any scratch database this test may wipe. Every test starts from an empty ``public``
schema. Tests marked only ``postgres`` skip (and the run says so) when no server is up.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WRITER = Path(__file__).parent / "helpers" / "store_writer.py"
SLOW = Path(__file__).parent / "fixtures" / "slow_encoder"
FP = {"machine_id": "m1", "machine": "test machine"}
#: a sweep whose measurements take ~1 s each (a real torch encoder that sleeps per forward)
SLOW_SWEEP = [
    "sweep",
    "--config-name",
    "quick",
    "--config-dir",
    str(SLOW),
    "~encoders.fastvithd",
    "~encoders.fastvit",
    "+encoder@encoders.slow=slow",
    "encoders.slow.resolutions=[64,128]",
    "~llms.tiny_llama",
    "report=false",
]


def tables(url: str) -> set[str]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db(request, db_url) -> str:
    """The same test on SQLite (a file) and on the PostgreSQL server."""
    return db_url if request.param == "sqlite" else request.getfixturevalue("pg")


def cli(*args: str, timeout: float = 300, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def meas(values):
    from harness.protocol import Measurement
    from harness.stats import summarize

    return Measurement(
        samples_ms=list(values), stats=summarize(values), protocol="quick", threads=2
    )


@pytest.mark.postgres
def test_round_trip_and_accuracy_on_postgres(pg):
    from harness.store import MeasurementKey, Store

    s = Store(pg)
    run = s.create_run("c", {"a": 1}, FP)
    key = MeasurementKey("encoder", "fastvithd", resolution=256, tokens=16)
    s.add_measurement(run, key, meas([1.0, 2.0, 3.0]))
    s.add_measurement(run, key, meas([9.0, 9.0]))  # first ok wins
    rows = s.measurement_rows([run])
    assert len(rows) == 1 and rows[0]["samples_ms"] == [1.0, 2.0, 3.0]
    acc = dict(
        encoder="fastvithd",
        resolution=256,
        llm="vicuna-7b",
        tiling="none",
        recipe="llava-1.5",
        scores={"gqa": 60.6},
        source="t",
    )
    assert s.add_accuracy([acc])["inserted"] == 1 and s.add_accuracy([acc])["unchanged"] == 1


@pytest.mark.postgres
def test_schema_version_and_migrations_are_transactional_on_postgres(pg, monkeypatch):
    """A migration runs once, in one transaction: a failing one leaves the database as it was."""
    import sqlalchemy as sa

    from harness import store as store_mod
    from harness.errors import UserError
    from harness.store import SCHEMA_VERSION, Store

    s = Store(pg)
    assert s.schema_version == SCHEMA_VERSION and {
        "meta",
        "runs",
        "measurements",
        "accuracy",
    } <= tables(pg)
    run = s.create_run("c", {}, FP)
    s.add_measurement(
        run, store_mod.MeasurementKey("encoder", "e", resolution=64), meas([1.0, 2.0])
    )
    s.engine.dispose()
    nxt = SCHEMA_VERSION + 1

    def broken(conn):
        conn.execute(sa.text("ALTER TABLE measurements ADD COLUMN half_done INTEGER"))
        conn.execute(sa.text("SELECT no_such_column FROM measurements"))  # fails mid-migration

    def good(conn):
        conn.execute(sa.text("ALTER TABLE measurements ADD COLUMN note TEXT"))

    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", nxt)
    monkeypatch.setitem(store_mod.MIGRATIONS, nxt, broken)
    with pytest.raises(UserError):
        Store(pg)
    cols = {c["name"] for c in sa.inspect(sa.create_engine(pg)).get_columns("measurements")}
    assert "half_done" not in cols  # rolled back with the failed migration (transactional DDL)
    monkeypatch.setitem(store_mod.MIGRATIONS, nxt, good)
    again = Store(pg)
    assert again.schema_version == nxt
    assert "note" in {c["name"] for c in sa.inspect(again.engine).get_columns("measurements")}
    assert len(again.measurement_rows([run])) == 1  # the data survived the upgrade
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION)
    with pytest.raises(UserError, match="newer than this vlm-pareto"):
        Store(pg)


@pytest.mark.postgres
def test_sigkill_during_writes_loses_nothing_committed_on_postgres(pg):
    from harness.store import MeasurementKey, Store

    store = Store(pg)
    run = store.create_run("c", {}, FP)
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), pg, run, "0", "100000"], stdout=subprocess.PIPE, text=True
    )
    committed = []
    assert proc.stdout is not None
    while len(committed) < 40:
        line = proc.stdout.readline()
        assert line, "writer died early"
        committed.append(int(line.split()[2]))
    os.kill(proc.pid, signal.SIGKILL)  # mid-loop: likely inside a transaction
    proc.wait()
    ids = {r["id"] for r in Store(pg).measurement_rows([run])}
    assert set(committed) <= ids and len(ids) <= len(committed) + 1  # at most the one in flight
    Store(pg).add_measurement(run, MeasurementKey("encoder", "after-kill"), meas([1.0]))


def test_four_writers_500_rows_each(any_db):
    """4 processes x 500 distinct rows -> exactly 2,000 rows, no duplicate, no error."""
    from harness.store import Store

    store = Store(any_db)
    run = store.create_run("c", {}, FP)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), any_db, run, str(w), "500"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    assert all("error" not in err.lower() for _, err in outs)
    rows = Store(any_db).measurement_rows([run])
    assert len(rows) == 2000
    assert len({(r["name"], r["resolution"]) for r in rows}) == 2000
    reported = {int(line.split()[2]) for out, _ in outs for line in out.splitlines()}
    assert reported == {r["id"] for r in rows}  # every committed id is there, nothing else


@pytest.mark.postgres
def test_concurrent_writers_of_the_same_keys_on_postgres(pg):
    from harness.store import Store

    store = Store(pg)
    run = store.create_run("c", {}, FP)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), pg, run, str(w), "25", "overlap"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(3)
    ]
    for p in procs:
        p.communicate(timeout=240)
        assert p.returncode == 0
    rows = Store(pg).measurement_rows([run])
    assert len(rows) == 25 and len({(r["name"], r["resolution"]) for r in rows}) == 25


@pytest.mark.postgres
def test_sweep_killed_mid_run_and_resumed_on_postgres(pg):
    """SIGKILL a real (torch) sweep writing to PostgreSQL, resume it: nothing lost or repeated."""
    from harness.store import Store

    run_id = "pg-killme"
    args = [sys.executable, "-m", "harness", "--db", pg, *SLOW_SWEEP, f"run_id={run_id}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and proc.poll() is None:
        rows = Store(pg).measurement_rows([run_id], status="ok") if "runs" in tables(pg) else []
        done = sum(r["kind"] != "canary" for r in rows)
        if done >= 2:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store(pg)
    # the run's machine-speed canary row (harness/canary.py) is not a point
    before = {
        r["id"]: r for r in store.measurement_rows([run_id], status="ok") if r["kind"] != "canary"
    }
    assert 2 <= len(before) < 6, "the kill must land mid-run"
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    after = [m for m in store.measurement_rows([run_id]) if m["kind"] != "canary"]
    keys = [(m["kind"], m["name"], m["resolution"], m["tokens"], m["in_dim"]) for m in after]
    assert len(keys) == len(set(keys)) == 6  # 2 encoder + 2 prefill + 2 projector, once each
    assert all(m["status"] == "ok" for m in after)
    for rid, row in before.items():
        kept = [m for m in after if m["id"] == rid]
        assert kept and kept[0]["samples_ms"] == row["samples_ms"]
    assert f"reused {len(before)}" in r.stdout + r.stderr


@pytest.mark.postgres
def test_search_study_lives_in_the_same_postgres_database(pg, tmp_path):
    import optuna

    from harness.store import Store

    args = [
        "--db",
        pg,
        "search",
        "--preset",
        "paper_fig4",
        "--backend",
        "fake",
        "--budget-ms",
        "2500",
        "--trials",
        "6",
        "--study-name",
        "pg-study",
        "--quiet",
    ]
    first = cli(*args, "--report", str(tmp_path / "r1"))
    assert first.returncode == 0, first.stderr
    assert "pg-study" in optuna.study.get_all_study_names(storage=pg)
    study = optuna.load_study(study_name="pg-study", storage=pg)
    n1 = len(study.trials)
    assert (
        n1 >= 6 and {"studies", "trials"} <= tables(pg) and {"runs", "measurements"} <= tables(pg)
    )
    runs = Store(pg).list_runs()
    assert len(runs) == 1 and Store(pg).measurement_rows([runs[0]["id"]])
    again = cli(*args, "--resume", "--report", str(tmp_path / "r2"))
    assert again.returncode == 0, again.stderr
    assert len(optuna.load_study(study_name="pg-study", storage=pg).trials) >= n1 + 6
    assert len(Store(pg).list_runs()) == 1  # the resumed study measured into the same run


def _nightly_run(store, run_id: str, medians: dict[str, float], seed: int) -> None:
    import numpy as np

    from harness.protocol import Measurement
    from harness.stats import summarize
    from harness.store import MeasurementKey

    store.create_run(
        "vlm-pareto nightly",
        {"preset": "nightly"},
        {"machine_id": "m1", "git": {"commit": f"c-{run_id}"}},
        run_id=run_id,
    )
    rng = np.random.default_rng(seed)
    for name, med in medians.items():
        s = [float(x) for x in rng.lognormal(math.log(med), 0.02, 40)]
        key = MeasurementKey("encoder", name, resolution=256, tokens=16, protocol="rigorous")
        store.add_measurement(
            run_id,
            key,
            Measurement(samples_ms=s, stats=summarize(s), protocol="rigorous", threads=1),
        )
    store.set_run_status(run_id, "done")


@pytest.mark.postgres
def test_nightly_reads_its_history_from_postgres(pg, tmp_path):
    from harness.store import Store

    store = Store(pg)
    levels = [10.0] * 8 + [13.0, 13.0]  # two slow nights: a confirmed regression
    for i, level in enumerate(levels):
        _nightly_run(store, f"n{i:02d}", {"enc-a": level, "enc-b": 20.0}, seed=i)
    stable = cli("--db", pg, "nightly", "--run-id", "n07", "--out", str(tmp_path / "a"), "--json")
    assert stable.returncode == 0, stable.stderr
    bad = cli("--db", pg, "nightly", "--run-id", "n09", "--out", str(tmp_path / "b"), "--date", "d")
    assert bad.returncode == 1, bad.stderr
    summary = (tmp_path / "b" / "d" / "summary.md").read_text()
    assert "enc-a" in summary and "n08" in summary  # the regression and the night it started


# -- bad input: one line naming what failed and what to do, exit 2, nothing written ---------


def _one_line_exit_2(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert (
        len(lines) == 1
        and lines[0].startswith("vlm-pareto: error:")
        and "Traceback" not in r.stderr
    ), r.stderr
    return lines[0]


@pytest.mark.postgres
def test_bad_postgres_urls_are_one_line_exit_2_and_write_nothing(pg, tmp_path):
    import sqlalchemy as sa

    u = sa.engine.make_url(pg)
    closed = socket_free_port()
    cases = {
        "no server": (u.set(port=closed), "is the server running"),
        "wrong password": (u.set(password="not-the-password"), "check the user and password"),
        "no such database": (u.set(database="vlm_pareto_missing"), "create it"),
    }
    for what, (url, hint) in cases.items():
        text = url.render_as_string(hide_password=False)
        cmds = [["runs"]] + (
            [["sweep", "--config-name", "quick", "backend=fake", "report=false"]]
            if what == "no server"
            else []
        )
        for cmd in cmds:
            line = _one_line_exit_2(cli("--db", text, *cmd, cwd=tmp_path))
            assert hint in line, (what, line)
            if u.password:
                assert u.password not in line and "not-the-password" not in line  # never printed
    assert tables(pg) == set()  # nothing was written to the real database meanwhile


@pytest.mark.postgres
def test_database_without_the_schema(pg, tmp_path):
    import sqlalchemy as sa

    # a reader on an empty database: says so, creates nothing
    line = _one_line_exit_2(cli("--db", pg, "runs"))
    assert "no vlm-pareto results yet" in line and "run a sweep" in line
    assert tables(pg) == set()
    # a database that holds something else: refused by readers and writers, left untouched
    engine = sa.create_engine(pg)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    for cmd in (["runs"], ["sweep", "--config-name", "quick", "backend=fake", "report=false"]):
        line = _one_line_exit_2(cli("--db", pg, *cmd, cwd=tmp_path))
        assert "not a vlm-pareto results store" in line
    assert tables(pg) == {"invoices"}


def socket_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
