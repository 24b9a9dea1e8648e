"""Figures for the team-setup services: start time, concurrent writers, kill safety.

    python scripts/bench_services.py            # fast: ~1-2 min on 2 idle cores
    python scripts/bench_services.py --full     # more kills, more rows

Prints, for SQLite and for the PostgreSQL server of scripts/services.sh (started here when
not running, stopped again afterwards):
  - services: seconds from a cold `scripts/services.sh start` (fresh state folder: initdb,
    munge key, slurmctld + slurmd) until both answer, and for the idempotent second `start`;
  - concurrency: 4 processes x 500 distinct rows -> rows stored, duplicates, writer errors,
    wall seconds and rows/s (PostgreSQL/SQLite ratio, both measured in this run);
  - kill safety: K writers killed with SIGKILL mid-stream -> committed rows lost (must be 0),
    rows beyond the last reported commit (at most the one in flight), store still writable.
Targets (issue 16): exactly 2,000 rows, 0 duplicates, 0 errors, 0 lost; services add <= ~3 min.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WRITER = ROOT / "tests" / "helpers" / "store_writer.py"
SERVICES = ROOT / "scripts" / "services.sh"
FP = {"machine_id": "bench", "machine": "bench"}


def sh(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SERVICES), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        k, eq, v = line.partition("=")
        if eq and not k.startswith("#"):
            out[k] = v
    return out


def cold_start() -> tuple[float, float, dict[str, str]]:
    """Seconds for a cold start and for a second (idempotent) start, in a fresh state folder."""
    state = Path(tempfile.mkdtemp(prefix="vlmp-bench-svc-"))
    env = {"VLM_PARETO_SERVICES_DIR": str(state), "VLM_PARETO_SERVICES_NO_INSTALL": "1"}
    try:
        t0 = time.perf_counter()
        sh("start", env=env)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        sh("start", env=env)
        warm = time.perf_counter() - t0
        facts = read_env(state / "services.env")
    finally:
        sh("stop", env=env)
        shutil.rmtree(state, ignore_errors=True)
    return cold, warm, facts


def wipe(url: str) -> None:
    import sqlalchemy as sa

    if url.startswith("sqlite"):
        return
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def concurrency(url: str, workers: int, rows: int) -> dict[str, float]:
    from harness.store import Store

    wipe(url)
    run = Store(url).create_run("bench", {}, FP)
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), url, run, str(w), str(rows)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    wall = time.perf_counter() - t0
    stored = Store(url).measurement_rows([run])
    keys = {(r["name"], r["resolution"]) for r in stored}
    errors = sum(
        p.returncode != 0 or "error" in err.lower() for p, (_, err) in zip(procs, outs, strict=True)
    )
    return {
        "rows": len(stored),
        "duplicates": len(stored) - len(keys),
        "errors": errors,
        "wall_s": wall,
        "rows_per_s": len(stored) / wall,
    }


def kills(url: str, n_kills: int) -> dict[str, int]:
    from harness.protocol import Measurement
    from harness.stats import summarize
    from harness.store import MeasurementKey, Store

    wipe(url)
    run = Store(url).create_run("bench", {}, FP)
    lost = extra = 0
    committed_total = 0
    for k in range(n_kills):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), url, run, str(k + 1), "100000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        committed = []
        assert proc.stdout is not None
        target = 20 + 7 * k  # kill at a different point each time
        while len(committed) < target:
            line = proc.stdout.readline()
            if not line:
                break
            committed.append(int(line.split()[2]))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        present = {
            r["id"] for r in Store(url).measurement_rows([run]) if r["extra"].get("worker") == k + 1
        }
        lost += len(set(committed) - present)
        extra += len(present - set(committed))
        committed_total += len(committed)
    s = [1.0, 2.0]
    Store(url).add_measurement(
        run,
        MeasurementKey("encoder", "after-kills"),
        Measurement(samples_ms=s, stats=summarize(s), protocol="quick", threads=1),
    )
    return {
        "kills": n_kills,
        "committed": committed_total,
        "lost": lost,
        "in_flight_kept": extra,
        "writable": 1,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true")
    args = ap.parse_args()
    n_kills, rows = (20, 500) if args.full else (5, 500)

    cold, warm, facts = cold_start()
    print(
        f"services: cold start {cold:.1f} s (PostgreSQL initdb+start, munge, slurmctld+slurmd until they "
        f"answer; no apt-get), second start {warm:.1f} s; "
        f"pg={'up' if 'VLM_PARETO_TEST_PG_URL' in facts else 'DOWN'} "
        f"slurm={'up' if 'VLM_PARETO_TEST_SLURM_PARTITION' in facts else 'DOWN'}"
    )

    already = sh("status").returncode == 0
    if not already:
        sh("start")
    try:
        pg = read_env(Path(sh("env").stdout.strip())).get("VLM_PARETO_TEST_PG_URL")
        tmp = Path(tempfile.mkdtemp(prefix="vlmp-bench-"))
        dbs = {"sqlite": f"sqlite:///{tmp / 'bench.db'}"}
        if pg:
            dbs["postgresql"] = pg
        else:
            print("postgresql: unavailable (scripts/services.sh could not start it)")
        res = {}
        for name, url in dbs.items():
            c = concurrency(url, 4, rows)
            res[name] = c
            print(
                f"{name:>10} concurrency: 4 x {rows} -> {c['rows']} rows, {c['duplicates']} duplicates, "
                f"{c['errors']} writer errors, {c['wall_s']:.1f} s, {c['rows_per_s']:.0f} rows/s"
            )
        for name, url in dbs.items():
            k = kills(url, n_kills)
            print(
                f"{name:>10} kill safety: {k['kills']} SIGKILLs after {k['committed']} reported commits -> "
                f"{k['lost']} lost, {k['in_flight_kept']} in-flight rows kept, writable afterwards"
            )
        if len(res) == 2:
            print(
                f"ratio postgresql/sqlite rows/s: {res['postgresql']['rows_per_s'] / res['sqlite']['rows_per_s']:.2f}"
            )
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if not already:
            sh("stop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
