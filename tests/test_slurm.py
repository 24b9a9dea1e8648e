"""Hydra multiruns on a real SLURM cluster (``hydra/launcher=submitit_slurm``).

The cluster is the single-node one ``scripts/services.sh start`` brings up (slurmctld, slurmd,
munge on loopback; ``bash scripts/test.sh`` does it); its partition and ``SLURM_CONF`` come
from the services env file (tests/conftest.py). Every job here is a real SLURM job (sbatch,
slurmd, srun) writing into one run of one database: PostgreSQL, or SQLite on a path all jobs
see. Skipped, and reported at the end of the run, when the cluster could not be started.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
SLOW = Path(__file__).parent / "fixtures" / "slow_encoder"
#: a grid of real torch measurements of ~1 s each (a custom encoder that sleeps per forward)
SLOW_GRID = [
    "--config-name",
    "quick",
    "--config-dir",
    str(SLOW),
    "~encoders.fastvithd",
    "~encoders.fastvit",
    "+encoder@encoders.slow=slow",
    "~llms.tiny_llama",
    "report=false",
]


def partition() -> str:
    return os.environ["VLM_PARETO_TEST_SLURM_PARTITION"]


def slurm_args(sweep_dir: Path) -> list[str]:
    return [
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={partition()}",
        "hydra.launcher.timeout_min=15",
        f"hydra.sweep.dir={sweep_dir}",
    ]


def sweep_cmd(db: str, sweep_dir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harness",
        "--db",
        db,
        "sweep",
        "-m",
        *args,
        *slurm_args(sweep_dir),
    ]


def job_ids(sweep_dir: Path) -> set[str]:
    """SLURM job ids submitit used for this multirun (its folders are named after them)."""
    sub = sweep_dir / ".submitit"
    return (
        {p.name for p in sub.iterdir() if re.fullmatch(r"\d+_\d+", p.name)}
        if sub.is_dir()
        else set()
    )


def job_states(ids: set[str]) -> dict[str, str]:
    out = {}
    for jid in ids:
        r = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", jid, "-o", "%T"], capture_output=True, text=True
        )
        out[jid] = r.stdout.strip() or "GONE"
    return out


def wait_until_jobs_leave_the_queue(ids: set[str], timeout: float = 180) -> dict[str, str]:
    deadline = time.time() + timeout
    while True:
        states = job_states(ids)
        if all(
            s not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING") for s in states.values()
        ):
            return states
        assert time.time() < deadline, states
        time.sleep(0.5)


def measured_in_job_logs(sweep_dir: Path) -> int:
    """Sum of 'measured N' over the jobs' own logs: measurements actually taken."""
    total = 0
    for log in (sweep_dir / ".submitit").glob("*/*_log.*"):
        total += sum(
            int(m) for m in re.findall(r"measured (\d+), reused", log.read_text(errors="replace"))
        )
    return total


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared_db(request, tmp_path) -> str:
    """One database every job writes to: a SQLite file on a path the node sees, or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared' / 'store.db'}"
    return request.getfixturevalue("pg")


def _keys(rows):
    return [
        (
            r["kind"],
            r["name"],
            r["resolution"],
            r["tiling"],
            r["tokens"],
            r["prompt_tokens"],
            r["in_dim"],
        )
        for r in rows
        if r["kind"] != "canary"  # the run's machine-speed reference row (harness/canary.py)
    ]


def test_multirun_jobs_run_on_slurm_into_one_run_each_measurement_once(shared_db, tmp_path):
    from harness.store import Store

    mr = tmp_path / "mr"
    cmd = sweep_cmd(shared_db, mr, "--config-name", "quick", "backend=fake", "tiling=none,2x2")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = job_ids(mr)
    assert len(ids) == 2  # one SLURM array task per grid cell
    assert set(wait_until_jobs_leave_the_queue(ids).values()) == {
        "COMPLETED"
    }  # ran and finished on SLURM
    store = Store(shared_db)
    runs = store.list_runs()
    assert len(runs) == 1  # both jobs wrote into one run
    rows = store.measurement_rows([runs[0]["id"]])
    keys = _keys(rows)
    assert len(keys) == len(set(keys)) and all(row["status"] == "ok" for row in rows)
    assert {row["tiling"] for row in rows if row["kind"] == "encoder"} == {"none", "2x2"}
    # shared prefills were measured by one job and reused by the other: taken exactly once
    assert measured_in_job_logs(mr) == len(rows)


def test_scancel_mid_run_then_resume_loses_and_repeats_nothing(pg, tmp_path):
    from harness.store import Store

    mr = tmp_path / "mr"
    cmd = sweep_cmd(pg, mr, *SLOW_GRID, "encoders.slow.resolutions=[128,256]", "tiling=none,2x2")
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    victim = None
    while time.time() < deadline and proc.poll() is None:
        states = job_states(job_ids(mr))
        running = sorted(j for j, st in states.items() if st == "RUNNING")
        try:
            done = sum(
                r["kind"] != "canary" for r in Store(pg, create=False).measurement_rows(status="ok")
            )
        except Exception:
            done = 0
        if running and done >= 1:
            victim = running[0]
            break
        time.sleep(0.3)
    assert victim is not None, "no job was running with a measurement stored"
    subprocess.run(["scancel", victim], check=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err  # a failed job is a failed multirun, not bad input
    assert "ended without an exit code" in err and "run_id=" in err
    states = wait_until_jobs_leave_the_queue(job_ids(mr))
    assert states[victim] == "CANCELLED", states
    store = Store(pg)
    run_id = store.list_runs()[0]["id"]
    before = {
        r["id"]: r for r in store.measurement_rows([run_id], status="ok") if r["kind"] != "canary"
    }
    assert before
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(store.list_runs()) == 1
    after = store.measurement_rows([run_id])
    keys = _keys(after)
    assert len(keys) == len(set(keys)) == 8  # 4 encoder + 2 prefill + 2 projector
    assert all(row["status"] == "ok" for row in after)
    for rid, row in before.items():  # nothing measured before the scancel was redone or lost
        kept = [m for m in after if m["id"] == rid]
        assert kept and kept[0]["samples_ms"] == row["samples_ms"]


def test_a_failed_point_in_a_slurm_job_fails_the_multirun(tmp_path):
    from harness.store import Store

    db = f"sqlite:///{tmp_path / 'shared' / 'store.db'}"
    mr = tmp_path / "mr"
    # the full-image 256 px forward crashes (tiling none); the 2x2 job's 128 px tiles do not
    cmd = sweep_cmd(
        db,
        mr,
        *SLOW_GRID,
        "encoders.slow.resolutions=[256]",
        "encoders.slow.model.fail_at=256",
        "tiling=none,2x2",
    )
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert set(wait_until_jobs_leave_the_queue(job_ids(mr)).values()) == {
        "COMPLETED"
    }  # ran; a point failed
    rows = Store(db).measurement_rows()
    failed = [row for row in rows if row["status"] == "failed"]
    assert [(row["kind"], row["tiling"]) for row in failed] == [("encoder", "none")]
    assert "configured to fail" in failed[0]["reason"]
    assert any(row["status"] == "ok" and row["tiling"] == "2x2" for row in rows)


def test_unknown_partition_is_one_line_exit_2_and_submits_nothing(tmp_path):
    db = tmp_path / "store.db"
    before = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True, text=True
    ).stdout
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "--db",
        str(db),
        "sweep",
        "--config-name",
        "quick",
        "backend=fake",
        "-m",
        "tiling=none,2x2",
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={partition()}x",
        f"hydra.sweep.dir={tmp_path / 'mr'}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert (
        len(lines) == 1
        and "SLURM partition" in lines[0]
        and f"did you mean '{partition()}'" in lines[0]
    ), r.stderr
    assert not db.exists() and not (tmp_path / "mr").exists()
    after = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True, text=True
    ).stdout
    assert after == before  # nothing was submitted


def test_unreachable_database_is_refused_before_any_job_is_submitted(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = sweep_cmd(
        f"postgresql+psycopg://vlm:pw@127.0.0.1:{port}/vlm",
        tmp_path / "mr",
        "--config-name",
        "quick",
        "backend=fake",
        "tiling=none,2x2",
    )
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert (
        len(lines) == 1
        and "cannot connect to database" in lines[0]
        and "is the server running" in lines[0]
    )
    assert not job_ids(tmp_path / "mr")


def test_claim_of_a_cancelled_job_on_another_node_is_taken_over_at_once(tmp_path):
    """A claim names its SLURM job: once SLURM says that job ended, the claim is stale (not 2 h later)."""
    from harness.store import now_iso
    from harness.sweep.engine import _claim_is_stale

    r = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-p",
            partition(),
            "-o",
            str(tmp_path / "j.out"),
            "--wrap",
            "sleep 120",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    job = r.stdout.strip().split(";")[0]
    claim = {"reason": f"another-node:4242 slurm-job {job}", "created_at": now_iso()}
    deadline = time.time() + 60
    while job_states({job})[job] == "PENDING" and time.time() < deadline:
        time.sleep(0.3)
    assert not _claim_is_stale(claim)  # its job is alive: wait for it
    subprocess.run(["scancel", job], check=True)
    wait_until_jobs_leave_the_queue({job})
    assert _claim_is_stale(claim)
    # without a job id, a claim from another host is only stale after the claim timeout
    assert not _claim_is_stale({"reason": "another-node:4242", "created_at": now_iso()})
