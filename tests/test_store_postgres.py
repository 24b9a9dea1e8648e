"""The store on a real PostgreSQL server (any SQLAlchemy URL is accepted, not just SQLite).

Runs when ``VLM_PARETO_TEST_PG_URL`` names a database this test may wipe, e.g.
``postgresql+psycopg://postgres@127.0.0.1:55432/vlm`` (needs the ``postgres`` extra); skipped
otherwise. Every test starts from an empty ``public`` schema.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PG_URL = os.environ.get("VLM_PARETO_TEST_PG_URL")
pytestmark = pytest.mark.skipif(not PG_URL, reason="set VLM_PARETO_TEST_PG_URL to a scratch PostgreSQL database")

WRITER = Path(__file__).parent / "helpers" / "store_writer.py"
FP = {"machine_id": "m1", "machine": "test machine"}


@pytest.fixture
def pg(monkeypatch):
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    monkeypatch.setenv("VLM_PARETO_DB", PG_URL)
    return PG_URL


def test_round_trip_and_accuracy_on_postgres(pg):
    from harness.protocol import Measurement
    from harness.stats import summarize
    from harness.store import MeasurementKey, Store

    s = Store(pg)
    run = s.create_run("c", {"a": 1}, FP)
    key = MeasurementKey("encoder", "fastvithd", resolution=256, tokens=16)
    s.add_measurement(run, key, Measurement([1.0, 2.0, 3.0], summarize([1.0, 2.0, 3.0]), "quick", 2))
    s.add_measurement(run, key, Measurement([9.0, 9.0], summarize([9.0, 9.0]), "quick", 2))  # first ok wins
    rows = s.measurement_rows([run])
    assert len(rows) == 1 and rows[0]["samples_ms"] == [1.0, 2.0, 3.0]
    acc = dict(encoder="fastvithd", resolution=256, llm="vicuna-7b", tiling="none", recipe="llava-1.5",
               scores={"gqa": 60.6}, source="t")
    assert s.add_accuracy([acc])["inserted"] == 1 and s.add_accuracy([acc])["unchanged"] == 1


def test_concurrent_writers_on_postgres(pg):
    from harness.store import Store

    store = Store(pg)
    run = store.create_run("c", {}, FP)
    procs = [subprocess.Popen([sys.executable, str(WRITER), pg, run, str(w), "25", "overlap"],
                              stdout=subprocess.PIPE, text=True) for w in range(3)]
    for p in procs:
        p.communicate(timeout=240)
        assert p.returncode == 0
    rows = Store(pg).measurement_rows([run])
    assert len(rows) == 25 and len({(r["name"], r["resolution"]) for r in rows}) == 25


def test_fake_sweep_and_resume_on_postgres(pg):
    from harness.store import Store
    from harness.sweep.configs import compose_sweep
    from harness.sweep.engine import run_sweep

    out = run_sweep(compose_sweep("quick", ["backend=fake", "report=false"]), command="t")
    again = run_sweep(compose_sweep("quick", ["backend=fake", "report=false", f"run_id={out.run_id}"]), command="t")
    assert again.counts["reused"] == out.plan.n_measurements and again.counts["measured"] == 0
    assert len(Store(pg).measurement_rows([out.run_id])) == out.plan.n_measurements
