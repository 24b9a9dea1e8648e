"""Checks for ``hydra/launcher=submitit_slurm`` made before any job is submitted.

A multirun on a cluster fans out into jobs that each open the store; a bad partition or an
unreachable database would otherwise fail once per job, after the jobs were queued. Here
they are one line and exit code 2 before anything is submitted or written.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from harness.errors import UserError, suggest

SLURM_LAUNCHER = "submitit_slurm"


def launcher_overrides(overrides: list[str]) -> tuple[str | None, str | None]:
    """(launcher name, partition) named by the command line's overrides."""
    launcher = partition = None
    for ov in overrides:
        key, eq, value = ov.partition("=")
        if not eq:
            continue
        key = key.lstrip("+~")
        if key == "hydra/launcher":
            launcher = value.strip()
        elif key == "hydra.launcher.partition":
            partition = value.strip().strip("'\"") or None
    return launcher, partition


def slurm_partitions() -> list[str]:
    """Partition names the cluster reports (``sinfo``); UserError when it does not answer."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise UserError(
            f"hydra/launcher={SLURM_LAUNCHER} needs SLURM's sbatch and sinfo on PATH; "
            "run the sweep on a node of the cluster (docs/team.md)"
        )
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        raise UserError(
            f"hydra/launcher={SLURM_LAUNCHER}: sinfo did not answer in 60 s; "
            "is slurmctld running and SLURM_CONF right?"
        ) from e
    if r.returncode != 0:
        first = (r.stderr.strip().splitlines() or ["no output"])[0]
        raise UserError(
            f"hydra/launcher={SLURM_LAUNCHER}: sinfo failed ({first}); "
            "is slurmctld running and SLURM_CONF right?"
        )
    return sorted(set(r.stdout.split()))


def check_slurm(overrides: list[str]) -> None:
    """The partition of a SLURM multirun exists (the cluster's default when none is named)."""
    launcher, partition = launcher_overrides(overrides)
    if launcher != SLURM_LAUNCHER:
        return
    parts = slurm_partitions()
    if not parts:
        raise UserError(f"hydra/launcher={SLURM_LAUNCHER}: the cluster reports no partition")
    if partition is not None and partition not in parts:
        raise UserError(
            suggest(partition, parts, "SLURM partition (hydra.launcher.partition)")
            + "; list them with sinfo"
        )


#: claim owners written inside a SLURM job end with this and the job id
JOB_TAG = " slurm-job "
#: squeue states of a job that may still be measuring
LIVE_STATES = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "RESIZING",
    "SUSPENDED",
    "STOPPED",
}


def owner_suffix() -> str:
    """`` slurm-job <id>`` inside a SLURM job (appended to a claim's ``host:pid``), else ''."""
    job = (
        os.environ.get("SLURM_ARRAY_JOB_ID")
        and os.environ.get("SLURM_ARRAY_TASK_ID")
        and f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    )
    job = job or os.environ.get("SLURM_JOB_ID")
    return f"{JOB_TAG}{job}" if job else ""


def split_owner(owner: str) -> tuple[str, str | None]:
    """(``host:pid``, SLURM job id or None) of a claim owner."""
    base, tag, job = owner.partition(JOB_TAG)
    return (base, job.strip() or None) if tag else (owner, None)


def job_is_gone(job: str) -> bool | None:
    """True when SLURM says the job that holds a claim has ended (scancel, time limit, node
    failure), so the claim can be taken over at once instead of after the claim timeout;
    None when that cannot be asked (no squeue here)."""
    if shutil.which("squeue") is None:
        return None
    try:
        r = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        # "Invalid job id specified": purged from the controller long after it ended
        return "invalid job id" in r.stderr.lower() or None
    states = set(r.stdout.split())
    return bool(states) and not (states & LIVE_STATES)
