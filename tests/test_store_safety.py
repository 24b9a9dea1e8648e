"""The store under races, corruption and mistakes (issue 12).

- several processes opening one *fresh* store at the same instant (a barrier) all succeed;
- overlapping concurrent accuracy ingests lose nothing;
- damaged data pages / index pages are detected: writers refuse, readers give one line, the
  file stays byte-identical, ``db check`` fails, ``db recover`` copies every readable row;
- read-only commands never create, migrate or change the journal mode of a database;
- a run is ``done`` only when its plan completed.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import UserError
from harness.protocol import Measurement
from harness.stats import summarize
from harness.store import SCHEMA_VERSION, MeasurementKey, Store, StoreCorrupt

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from sqlite_pages import btree_pages, damage_page, root_pages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FP = {"machine_id": "m1", "machine": "test machine", "git": {"commit": "abc"}}


def meas(values):
    return Measurement(
        samples_ms=list(values), stats=summarize(values), protocol="quick", threads=2
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VLM_PARETO_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=env,
    )


def one_line(stderr: str) -> bool:
    return (
        stderr.startswith("vlm-pareto: error:")
        and stderr.count("\n") == 1
        and "Traceback" not in stderr
    )


# -- concurrency -----------------------------------------------------------------------------


def _open_fresh(paths: list[str], barrier, worker: int, results) -> None:  # runs in a child process
    for p in paths:
        barrier.wait()
        try:
            s = Store(p)
            run = s.create_run("race", {}, {**FP, "machine_id": f"m{worker}"})
            s.add_measurement(run, MeasurementKey("encoder", f"w{worker}"), meas([1.0, 2.0]))
            results.put((p, worker, "ok"))
        except BaseException as e:  # noqa: BLE001 - the test reports every failure
            results.put((p, worker, f"{type(e).__name__}: {e}"))


def test_processes_opening_one_fresh_store_at_once_all_succeed(tmp_path):
    workers, stores = 4, 3
    paths = [str(tmp_path / f"fresh{i}" / "store.db") for i in range(stores)]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_open_fresh, args=(paths, barrier, w, results)) for w in range(workers)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=240) for _ in range(workers * stores)]
    for p in procs:
        p.join(timeout=60)
    failures = [g for g in got if g[2] != "ok"]
    assert not failures, failures
    for path in paths:
        s = Store(path, readonly=True)
        assert s.schema_version == SCHEMA_VERSION
        assert len(s.list_runs()) == workers and len(s.measurement_rows()) == workers
        con = sqlite3.connect(path)
        assert con.execute("select count(*) from meta").fetchone()[0] == 1
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _csv(path: Path, benches: dict[str, float]) -> Path:
    lines = ["encoder,resolution,llm,tiling,recipe,benchmark,score"]
    lines += [f"fastvithd,256,qwen2-0.5b,none,llava-1.5,{b},{v}" for b, v in benches.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_concurrent_overlapping_ingests_lose_nothing(tmp_path):
    db = tmp_path / "acc.db"
    all_scores = {
        "gqa": 60.1,
        "textvqa": 55.2,
        "pope": 85.3,
        "docvqa": 40.4,
        "seedbench": 62.5,
        "mmmu": 30.6,
    }
    names = list(all_scores)
    files = []
    for i in range(6):  # each file: 2 benchmarks, overlapping its neighbours (same scores)
        subset = {b: all_scores[b] for b in (names[i], names[(i + 1) % len(names)])}
        files.append(_csv(tmp_path / f"part{i}.csv", subset))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "harness", "--db", str(db), "ingest", str(f)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for f in files
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    acc = Store(str(db), readonly=True).accuracy()
    assert len(acc) == 1
    stored = acc.iloc[0]["scores"]
    # every benchmark of every ingest is there, with its score
    assert sorted(stored.values()) == sorted(all_scores.values()), stored


# -- corruption ------------------------------------------------------------------------------


def _filled_store(path: Path, n: int = 400) -> tuple[str, int]:
    s = Store(str(path))
    run = s.create_run("fill", {"x": 1}, FP)
    for i in range(n):
        key = MeasurementKey("encoder", f"enc{i % 5}", resolution=64 + i, protocol="quick")
        s.add_measurement(
            run, key, meas([1.0 + i % 7 + j * 0.01 for j in range(30)]), extra={"i": i}
        )
    s.add_accuracy(
        [
            {
                "encoder": "fastvithd",
                "resolution": 256,
                "llm": "qwen2-0.5b",
                "tiling": "none",
                "recipe": "llava-1.5",
                "source": "csv",
                "scores": {"gqa": 60.0},
            }
        ]
    )
    s.set_run_status(run, "done")
    s.engine.dispose()
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return run, n


def test_damaged_data_pages_are_refused_and_recovered(tmp_path):
    db = tmp_path / "s.db"
    run, n = _filled_store(db)
    _, leaves = btree_pages(db, root_pages(db)["measurements"])
    assert len(leaves) > 4
    damage_page(db, leaves[len(leaves) // 2], offset=8)  # a data page in the middle
    before = digest(db)
    with pytest.raises(StoreCorrupt, match="damaged.*db recover"):
        Store(str(db))  # writers quick-check on open
    assert digest(db) == before
    r = cli("--db", str(db), "runs")
    assert r.returncode == 2 and one_line(r.stderr) and "db recover" in r.stderr
    r = cli("ingest", "--db", str(db), str(_csv(tmp_path / "a.csv", {"gqa": 1.0})))
    assert r.returncode == 2 and one_line(r.stderr)
    assert digest(db) == before
    r = cli("--db", str(db), "db", "check")
    assert r.returncode == 1 and "DAMAGED" in r.stdout
    assert digest(db) == before
    out = tmp_path / "new.db"
    r = cli("db", "recover", str(db), str(out), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert 0 < res["copied"]["measurements"] < n and res["damaged_regions"]["measurements"] >= 1
    assert res["copied"]["runs"] == 1 and res["copied"]["accuracy"] == 1
    assert digest(db) == before
    r = cli("--db", str(out), "db", "check")
    assert r.returncode == 0 and r.stdout.startswith("ok:")
    assert len(Store(str(out)).measurement_rows([run])) == res["copied"]["measurements"]


def test_damaged_index_pages_only_are_detected_and_recovered_completely(tmp_path):
    db = tmp_path / "s.db"
    run, n = _filled_store(db)
    roots = root_pages(db)
    index = next(name for name in roots if name.startswith("sqlite_autoindex_measurements"))
    interior, leaves = btree_pages(db, roots[index])
    damage_page(db, leaves[0], offset=8)
    before = digest(db)
    with pytest.raises(StoreCorrupt):
        Store(str(db))
    r = cli("--db", str(db), "db", "check")
    assert r.returncode == 1 and "DAMAGED" in r.stdout
    out = tmp_path / "new.db"
    r = cli("db", "recover", str(db), str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["copied"]["measurements"] == n  # every row: only the index was hit
    assert digest(db) == before
    assert len(Store(str(out)).measurement_rows([run])) == n


#: every other command on a store with damaged data pages: one line, exit 2, file unchanged
DAMAGED_STORE_COMMANDS = {
    "report": ["report", "--out", "{tmp}/rep", "--no-static"],
    "choose": ["choose", "--budget-ms", "100"],
    "compare": ["compare", "--baseline", "{run}", "--candidate", "{run}"],
    "sweep": ["sweep", "--config-name", "quick", "backend=fake", "report=false", "progress=false"],
}


@pytest.fixture(scope="module")
def damaged_data_store(tmp_path_factory) -> tuple[Path, str]:
    """A filled store with one data page of ``measurements`` damaged (built once, copied)."""
    db = tmp_path_factory.mktemp("damaged") / "s.db"
    run, _ = _filled_store(db)
    _, leaves = btree_pages(db, root_pages(db)["measurements"])
    damage_page(db, leaves[len(leaves) // 2], offset=8)
    return db, run


@pytest.mark.parametrize("command", list(DAMAGED_STORE_COMMANDS))
def test_every_command_on_damaged_data_pages_is_one_line_and_writes_nothing(
    tmp_path, damaged_data_store, command
):
    src, run = damaged_data_store
    db = tmp_path / "s.db"
    db.write_bytes(src.read_bytes())
    before = digest(db)
    argv = [a.format(tmp=tmp_path, run=run) for a in DAMAGED_STORE_COMMANDS[command]]
    r = cli("--db", str(db), *argv)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert one_line(r.stderr), r.stderr[-2000:]
    assert "damaged" in r.stderr and str(db) in r.stderr
    assert digest(db) == before
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


def test_corruption_met_mid_way_refuses_every_later_write(tmp_path):
    db = tmp_path / "s.db"
    run, _ = _filled_store(db)
    s = Store(str(db))  # opened (and checked) before the damage
    _, leaves = btree_pages(db, root_pages(db)["measurements"])
    for p in leaves:
        damage_page(db, p, offset=8)
    s.engine.dispose()
    with pytest.raises(StoreCorrupt):
        s.measurement_rows([run])
    before = digest(db)
    with pytest.raises(StoreCorrupt):
        s.set_run_status(run, "partial")
    with pytest.raises(StoreCorrupt):
        s.add_accuracy([{"encoder": "x", "resolution": 1, "llm": "y", "scores": {"gqa": 1.0}}])
    assert digest(db) == before


@pytest.fixture
def bounded_open_check(monkeypatch):
    """Writers use the bounded open check (what a store over FULL_OPEN_CHECK_BYTES gets)."""
    import harness.store

    monkeypatch.setattr(harness.store, "FULL_OPEN_CHECK_BYTES", 0)
    calls: list[str] = []
    real = harness.store.spot_check

    def spy(conn, path, rows=None):
        calls.append(str(path))
        return real(conn, path, rows)

    monkeypatch.setattr(harness.store, "spot_check", spy)
    return calls


def test_bounded_open_check_passes_a_healthy_store(tmp_path, bounded_open_check):
    db = tmp_path / "s.db"
    run, n = _filled_store(db)
    before = digest(db)
    s = Store(str(db))
    assert bounded_open_check == [str(db)]  # the large-store path ran
    assert len(s.measurement_rows([run])) == n
    s.engine.dispose()
    assert digest(db) == before


def _damage_last_leaf(db: Path) -> None:
    _, leaves = btree_pages(db, root_pages(db)["measurements"])
    damage_page(db, max(leaves), offset=8)


def _damage_runs(db: Path) -> None:
    interior, leaves = btree_pages(db, root_pages(db)["runs"])
    for p in interior + leaves:
        damage_page(db, p, offset=8)


def _damage_unique_index(db: Path) -> None:
    roots = root_pages(db)
    index = next(name for name in roots if name.startswith("sqlite_autoindex_measurements"))
    _, leaves = btree_pages(db, roots[index])
    for p in leaves:
        damage_page(db, p, offset=8)


def _truncate_one_page(db: Path) -> None:
    from sqlite_pages import page_size

    with open(db, "r+b") as fh:
        fh.truncate(db.stat().st_size - page_size(db))


def _truncate_half_a_page(db: Path) -> None:
    from sqlite_pages import page_size

    with open(db, "r+b") as fh:
        fh.truncate(db.stat().st_size - page_size(db) // 2)


@pytest.mark.parametrize(
    "damage, reaches_the_check",
    [
        (_damage_last_leaf, True),
        (_damage_runs, True),
        (_damage_unique_index, True),
        # SQLite itself may notice a file shorter than its header while opening it (then
        # the engine's error hook refuses it before the check runs): either way, refused
        (_truncate_one_page, False),
        (_truncate_half_a_page, True),
    ],
    ids=lambda f: f.__name__.strip("_") if callable(f) else "",
)
def test_bounded_open_check_refuses_what_it_covers(
    tmp_path, bounded_open_check, damage, reaches_the_check
):
    db = tmp_path / "s.db"
    _filled_store(db)
    damage(db)
    before = digest(db)
    with pytest.raises(StoreCorrupt, match="damaged.*db recover"):
        Store(str(db))
    if reaches_the_check:
        assert bounded_open_check == [str(db)]
    assert digest(db) == before


def test_recover_refuses_to_overwrite(tmp_path):
    db = tmp_path / "s.db"
    _filled_store(db, n=5)
    (tmp_path / "exists.db").write_bytes(b"x")
    with pytest.raises(UserError, match="already exists"):
        from harness.store_repair import recover_store

        recover_store(str(db), str(tmp_path / "exists.db"))
    assert (tmp_path / "exists.db").read_bytes() == b"x"


# -- read-only commands stay read-only -------------------------------------------------------

READERS = [
    ["runs"],
    ["report", "--out", "{tmp}/rep"],
    ["choose", "--budget-ms", "100"],
    ["compare", "--baseline", "a", "--candidate", "b"],
    ["runtimes"],
    ["runtimes", "--all-runs"],
]


@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
def test_readers_never_create_a_missing_store(tmp_path, argv, capsys):
    missing = tmp_path / "nothing" / "here.db"
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["--db", str(missing), *args]) == 2
    assert not missing.exists() and not missing.parent.exists()
    err = capsys.readouterr().err
    assert one_line(err)


@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
def test_readers_leave_empty_and_foreign_files_byte_identical(tmp_path, argv, capsys):
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert main(["--db", str(empty), *args]) == 2
    assert empty.read_bytes() == b"" and not Path(f"{empty}-wal").exists()
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("create table people (name text)")
    con.execute("insert into people values ('x')")
    con.commit()
    con.close()
    before = digest(foreign)
    assert main(["--db", str(foreign), *args]) == 2
    assert digest(foreign) == before
    assert sqlite3.connect(foreign).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert all(one_line(line + "\n") for line in capsys.readouterr().err.splitlines())


def test_writers_refuse_a_foreign_sqlite_file_without_changing_its_mode(tmp_path):
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("create table people (name text)")
    con.commit()
    con.close()
    before = digest(foreign)
    with pytest.raises(UserError, match="not a vlm-pareto results store"):
        Store(str(foreign))
    assert digest(foreign) == before
    assert sqlite3.connect(foreign).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def _v1_store(path: Path) -> None:
    s = Store(str(path))
    s.create_run("old", {}, FP, run_id="r-old")
    s.engine.dispose()
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE runs DROP COLUMN reason")
    con.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def test_readers_never_migrate_writers_do(tmp_path, capsys):
    db = tmp_path / "old.db"
    _v1_store(db)
    before = digest(db)
    assert main(["--db", str(db), "runs"]) == 2
    assert "db migrate" in capsys.readouterr().err
    assert digest(db) == before
    assert main(["db", "migrate", "--db", str(db)]) == 0
    s = Store(str(db), readonly=True)
    assert s.schema_version == SCHEMA_VERSION
    assert s.get_run("r-old")["reason"] is None


def test_readonly_store_cannot_write(db_url):
    Store(db_url)
    ro = Store(db_url, readonly=True)
    with pytest.raises(AssertionError):
        ro.set_run_status("x", "done")


# -- run lifecycle ---------------------------------------------------------------------------


def test_a_crash_mid_plan_leaves_the_run_partial_with_its_reason(db_url, monkeypatch):
    from harness.sweep import engine
    from harness.sweep.configs import compose_sweep

    real = engine.Measurer.run
    calls = []

    def crash_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.Measurer, "run", crash_second)
    cfg = compose_sweep("quick", ["backend=fake", f"db={db_url}"])
    with pytest.raises(RuntimeError):
        engine.run_sweep(cfg, command="t")
    run = Store(db_url, readonly=True).list_runs()[-1]
    assert run["status"] == "partial" and "disk on fire" in run["reason"]


def test_a_completed_plan_is_done_and_a_resumed_one_clears_the_reason(db_url, monkeypatch):
    from harness.sweep import engine
    from harness.sweep.configs import compose_sweep

    real = engine.Measurer.run
    state = {"n": 0, "crash": True}

    def crash_once(*args, **kwargs):
        state["n"] += 1
        if state["crash"] and state["n"] == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.Measurer, "run", crash_once)
    cfg = compose_sweep("quick", ["backend=fake", f"db={db_url}", "run_id=resume-me"])
    with pytest.raises(RuntimeError):
        engine.run_sweep(cfg, command="t")
    state["crash"] = False
    engine.run_sweep(
        compose_sweep("quick", ["backend=fake", f"db={db_url}", "run_id=resume-me"]), command="t"
    )
    run = Store(db_url, readonly=True).get_run("resume-me")
    assert run["status"] == "done" and run["reason"] is None


def test_final_status_rules():
    from harness.sweep.engine import SweepOutcome, final_status

    out = SweepOutcome(run_id="r", plan=None, counts={"measured": 1, "reused": 0})  # type: ignore[arg-type]
    assert final_status(True, None, out) == ("done", None)
    assert final_status(False, KeyboardInterrupt(), out)[0] == "interrupted"
    assert final_status(False, ValueError("x"), out) == (
        "partial",
        "stopped before its plan completed: ValueError: x",
    )
    out.failures.append("enc: RuntimeError: y")
    assert final_status(True, None, out)[0] == "partial"


def test_db_check_in_a_read_only_folder_is_not_damage(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "s.db"
    _filled_store(db)
    for side in folder.glob("s.db-*"):
        side.unlink()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (a read-only folder even for root)")
    try:
        r = cli("--db", str(db), "db", "check")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert r.returncode == 0 and "passed the integrity check" in r.stdout, r.stdout + r.stderr
    assert "read-only folder" in r.stdout


def test_readers_open_a_store_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "s.db"
    run, _ = _filled_store(db)
    for side in folder.glob("s.db-*"):
        side.unlink()
    before = db.read_bytes()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (a read-only folder even for root)")
    try:
        runs = cli("--db", str(db), "runs")
        check = cli("--db", str(db), "db", "check")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert runs.returncode == 0 and run in runs.stdout, runs.stdout + runs.stderr
    assert check.returncode == 0
    assert db.read_bytes() == before and not list(folder.glob("s.db-*"))


def test_a_device_file_as_the_store_is_one_line_exit_2():
    for argv in (("runs",), ("db", "check")):
        r = cli("--db", "/dev/null", *argv)
        assert r.returncode == 2 and one_line(r.stderr), r.stderr
        assert "not a regular file" in r.stderr and "disk I/O" not in r.stderr


def test_db_check_on_a_text_file_is_one_line_exit_2(tmp_path):
    f = tmp_path / "notes.db"
    f.write_text("not a database, just text\n" * 20)
    r = cli("--db", str(f), "db", "check")
    assert r.returncode == 2 and one_line(r.stderr) and "not a SQLite database" in r.stderr
