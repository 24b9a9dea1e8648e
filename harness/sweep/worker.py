"""Rounds in worker processes: each round of a multi-round sweep runs in a fresh interpreter.

The samples of one process agree with each other far better than with the next process
(memory placement of the weights, thread placement, allocator state; docs/noise.md), so a
measurement whose rounds all ran in one process has an interval that cannot contain the next
run's value. pyperf's answer is worker processes; this is ours. With ``isolation`` ``auto``
(the default) or ``process``, the sweep engine runs round ``r`` as::

    python -m harness.sweep.worker_main JOB RESULT

where ``JOB`` is a pickle of ``{cfg, url, run_id, round, progress}``. The worker resolves the
config again (plug-ins named by ``import_path`` are imported again), builds its own runners,
measures its round through the same :class:`~harness.sweep.engine.Measurer` into the same
store, and pickles its counts, failures, skips and the keys it produced into ``RESULT``. The
parent keeps the canary checkpoints between rounds and the run's status.

``auto`` runs rounds in-process when there is one round, when neither backend times anything
here (fake backends), when the store is in memory, or when the config does not resolve in a
fresh interpreter (a backend or encoder registered at run time by code the config does not
name): the sweep then says so in one line and goes on in-process.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError

ISOLATIONS = ("auto", "process", "inline")
#: exit status of a worker whose config did not resolve in a fresh interpreter
NOT_REPRODUCIBLE = 3
#: seconds a worker gets to release its claims after Ctrl-C
INTERRUPT_GRACE_S = 20.0


class NotReproducible(UserError):
    """The config does not resolve in a fresh interpreter (run-time registrations)."""


@dataclass
class RoundResult:
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    produced: set = field(default_factory=set)
    progress: dict[str, float] = field(default_factory=dict)


def validate_isolation(value: str) -> str:
    if value not in ISOLATIONS:
        raise UserError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {value!r}")
    return value


def wants_processes(isolation: str, n_rounds: int, timed_here: bool, url: str) -> bool:
    """Whether the sweep's rounds run in worker processes (before trying one)."""
    from harness.store import sqlite_path

    if isolation == "inline" or n_rounds < 2:
        return False
    in_memory = url.startswith("sqlite") and sqlite_path(url) is None
    if in_memory:
        if isolation == "process":
            raise UserError(
                "isolation=process needs a store on disk or a server, not an in-memory SQLite"
            )
        return False
    return isolation == "process" or timed_here


def _child_env() -> dict[str, str]:
    """The parent's environment, with its import path (a checkout run without install)."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def run_round(
    cfg: Any,
    url: str,
    run_id: str,
    rnd: int,
    progress: dict[str, float],
    run_to_run: Any = None,
) -> RoundResult:
    """Run round ``rnd`` of the sweep in a fresh interpreter and return what it did.

    Raises :class:`NotReproducible` when the worker could not resolve the config, UserError
    with the worker's own line when it refused (a damaged store), RuntimeError when it died.
    """
    with tempfile.TemporaryDirectory(prefix="vlm-pareto-round-") as tmp:
        job, result = Path(tmp, "job.pkl"), Path(tmp, "result.pkl")
        job.write_bytes(
            pickle.dumps(
                {
                    "cfg": cfg,
                    "url": url,
                    "run_id": run_id,
                    "round": rnd,
                    "progress": progress,
                    "run_to_run": run_to_run,  # the parent's, so every round uses the same
                }
            )
        )
        cmd = [sys.executable, "-m", "harness.sweep.worker_main", str(job), str(result)]
        proc = subprocess.Popen(cmd, env=_child_env())  # stdout/stderr: the sweep's own
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # the worker got the same SIGINT: let it release its claims
            try:
                proc.wait(timeout=INTERRUPT_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        out = pickle.loads(result.read_bytes()) if result.exists() else None
    if rc == NOT_REPRODUCIBLE and out is not None:
        raise NotReproducible(out["error"])
    if out is not None and out.get("error"):
        raise UserError(out["error"])
    if rc != 0 or out is None:
        raise RuntimeError(
            f"round {rnd + 1} worker process exited with status {rc} (its messages are above)"
        )
    return out["result"]
