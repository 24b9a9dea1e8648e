"""scripts/estimator_study.py on a real store: what it counts, and bad input (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.protocol import Measurement
from harness.stats import summarize
from harness.store import MeasurementKey, Store

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "estimator_study.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def _sweep(store: Store, run_id: str, rounds: list[list[float]], canary: list[float]) -> None:
    store.create_run("vlm-pareto sweep", {}, {"machine_id": "m1"}, run_id=run_id)
    s = [x for r in rounds for x in r]
    key = MeasurementKey("encoder", "enc-a", resolution=256, tokens=16, protocol="standard")
    extra = {"round_sizes": [len(r) for r in rounds], "round_index": list(range(len(rounds)))}
    store.add_measurement(run_id, key, Measurement(s, summarize(s), "standard", 1), extra=extra)
    ckey = MeasurementKey("canary", "canary-mm-dw-v1", protocol="canary")
    points = [{"at": f"before round {i + 1}", "median_ms": c} for i, c in enumerate(canary)]
    store.add_measurement(
        run_id,
        ckey,
        Measurement(canary, summarize(canary), "canary", 1),
        extra={"canary": {"version": 1, "checkpoints": points}},
    )


def test_counts_agreement_per_estimator_and_canary_normalisation(tmp_path):
    db = tmp_path / "store.db"
    store = Store(f"sqlite:///{db}")
    # A's second round ran in a slow process (the VM's per-process speed modes): the mean of
    # round medians moves 7%, the medians and the minimum do not. B's canary read 2x slower.
    _sweep(store, "a", [[10.0, 10.1, 10.2], [12.0, 12.1, 12.2], [10.0, 10.1, 10.3]], [4.0] * 3)
    _sweep(store, "b", [[10.0, 10.1, 10.2], [10.0, 10.2, 10.1], [10.1, 10.0, 10.2]], [8.0] * 3)
    out = _run(str(db))
    assert out.returncode == 0, out.stderr
    lines = {ln[:36].strip(): ln[36:].split() for ln in out.stdout.splitlines()[2:]}
    assert out.stdout.startswith("1 keys measured back to back, from 1 store(s)")
    assert lines["minimum"][0] == "100%" and lines["lowest round median"][0] == "100%"
    assert lines["median of round medians"][0] == "100%"
    assert lines["mean of round medians"][0] == "0%"
    # the canary doubling makes B's normalised medians half of A's: no agreement
    assert lines["median, rounds / their canary"][0] == "0%"
    assert lines["median / the run's canary"][0] == "0%"


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    missing = _run(str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "no such file" in missing.stderr
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    bad = _run(str(junk))
    assert bad.returncode == 2 and "is not a vlm-pareto store" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert "a directory" in _run(str(tmp_path)).stderr
    for within in ("-1", "nan", "2"):
        r = _run(str(junk), "--within", within)
        assert r.returncode == 2 and "--within must be in (0, 1)" in r.stderr


def test_the_same_store_twice_counts_once(tmp_path):
    db = tmp_path / "store.db"
    store = Store(f"sqlite:///{db}")
    _sweep(store, "a", [[10.0, 10.1], [10.2, 10.0]], [4.0] * 2)
    _sweep(store, "b", [[10.0, 10.1], [10.2, 10.0]], [4.0] * 2)
    out = _run(str(db), str(db))
    assert out.returncode == 0 and out.stdout.startswith(
        "1 keys measured back to back, from 1 store"
    )
