"""Issue 12's race guarantees on a real PostgreSQL server (advisory-locked schema creation,
optimistic accuracy merge).

Marked ``postgres``: the server is the one ``scripts/services.sh start`` brings up (through
the ``pg`` fixture of tests/conftest.py, which empties it first); when it could not start,
these tests are skipped and listed in the end-of-run "services unavailable" summary.
"""

from __future__ import annotations

import multiprocessing as mp

import pytest

pytestmark = pytest.mark.postgres

FP = {"machine_id": "m1", "machine": "test machine"}


def _open(url: str, barrier, worker: int, results) -> None:  # child process
    from harness.store import MeasurementKey, Store

    barrier.wait()
    try:
        s = Store(url)
        run = s.create_run("race", {}, {**FP, "machine_id": f"m{worker}"})
        s.add_measurement(
            run, MeasurementKey("encoder", f"w{worker}"), status="skipped", reason="x"
        )
        results.put("ok")
    except BaseException as e:  # noqa: BLE001
        results.put(f"{type(e).__name__}: {e}")


@pytest.mark.parametrize("attempt", range(3))
def test_processes_creating_one_fresh_schema_at_once_all_succeed(pg, attempt):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [ctx.Process(target=_open, args=(pg, barrier, w, results)) for w in range(4)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert got == ["ok"] * 4, got
    from harness.store import Store

    assert len(Store(pg, readonly=True).list_runs()) == 4


def test_merge_accuracy_redoes_the_unit_when_a_row_changed_underneath(pg):
    from harness.store import Store

    store = Store(pg)
    base = {
        "encoder": "e",
        "resolution": 256,
        "llm": "l",
        "tiling": "none",
        "recipe": "r",
        "source": "csv",
    }
    store.add_accuracy([{**base, "scores": {"gqa": 1.0}}])
    other = Store(pg)
    seen = []

    def build(stored):
        seen.append(dict(stored[0]["scores"]))
        if len(seen) == 1:  # another process adds a score between our read and our write
            other.add_accuracy([{**base, "scores": {"gqa": 1.0, "pope": 2.0}}], replace=True)
        return [{**base, "scores": {**stored[0]["scores"], "textvqa": 3.0}}]

    counts = store.merge_accuracy(build)
    assert counts["replaced"] == 1 and len(seen) == 2
    assert store.accuracy().iloc[0]["scores"] == {"gqa": 1.0, "pope": 2.0, "textvqa": 3.0}


def test_readonly_store_refuses_writes_on_the_server(pg):
    import sqlalchemy as sa

    from harness.store import Store

    Store(pg)
    ro = Store(pg, readonly=True)
    with pytest.raises(sa.exc.DBAPIError, match="read-only"), ro.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM runs"))
