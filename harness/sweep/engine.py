"""Execute a sweep plan: measure each unique task once, store it at once, resume on restart.

The public engine API, used by the sweep and by ``search``::

    plan, llm_specs = resolve(cfg)                     # config -> plan (validated)
    runners = Runners(cfg, llm_specs)                  # the two backends' runners
    measurer = Measurer(store, run_id, runners)        # owns claim / reuse / store
    for job in jobs(plan, runners.key):                # plan -> jobs
        measurer.run(job)

Workers that share a run (a resumed sweep, or several Hydra launcher jobs writing to one
database) coordinate through the store: a task is *claimed* with a ``running`` row before
it is measured, an ``ok`` row is reused, and a claim left by a dead process is taken over.
Every finished measurement is committed immediately, so a kill loses at most the task in
flight. A task that cannot run here (Core ML prediction on Linux, a model that does not fit)
is stored as ``skipped`` with its reason; one that crashes is stored as ``failed``; the sweep
goes on either way.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from harness.backends.base import Outcome
from harness.errors import UserError
from harness.fingerprint import fingerprint
from harness.progress import Progress
from harness.store import Store
from harness.sweep.configs import CONFIG_DIR_ENV, SweepConfig, import_dir, validate
from harness.sweep.plan import Job, Plan, build_plan, jobs
from harness.sweep.runners import Runners, configure_backend
from harness.tasks import MeasurementKey, Task

__all__ = ["CONFIG_DIR_ENV", "Job", "Measurer", "SweepOutcome", "jobs", "resolve", "run_sweep"]
#: a claim by another host is considered abandoned after this long
CLAIM_TIMEOUT_S = 2 * 3600
POLL_S = 0.5


@dataclass
class SweepOutcome:
    run_id: str
    plan: Plan
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    report_dir: str | None = None
    #: keys measured by this process (side results included), never counted as reused
    produced: set = field(default_factory=set)

    @property
    def nothing_measured(self) -> bool:
        """Every point of the plan was skipped (e.g. a macOS-only backend here)."""
        c = self.counts
        return bool(self.skipped) and not (c.get("measured", 0) + c.get("reused", 0))

    @property
    def exit_code(self) -> int:
        """1 when a point failed or when nothing at all could be measured; else 0."""
        return 1 if self.failures or self.nothing_measured else 0


def owner_id() -> str:
    """This worker's claim owner: ``host:pid`` (plus the SLURM job id inside a SLURM job)."""
    from harness.sweep.slurm import owner_suffix

    return f"{socket.gethostname()}:{os.getpid()}{owner_suffix()}"


def _claim_is_stale(row: dict[str, Any]) -> bool:
    from harness.sweep.slurm import job_is_gone, split_owner

    owner, slurm_job = split_owner(str(row.get("reason") or ""))
    host, _, pid = owner.rpartition(":")
    if slurm_job is not None and host != socket.gethostname() and job_is_gone(slurm_job):
        return True  # a cancelled / timed-out SLURM job on another node: take over now
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return True  # our own leftover (a previous attempt in this process)
        try:
            os.kill(int(pid), 0)
            return False
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    try:
        created = datetime.fromisoformat(row["created_at"])
        return (datetime.now(timezone.utc) - created).total_seconds() > CLAIM_TIMEOUT_S
    except (KeyError, ValueError):
        return True


def resolve(cfg: SweepConfig) -> tuple[Plan, dict[str, Any]]:
    """Validate the config, register custom encoders, resolve names and build the plan.

    Raises UserError before anything is measured (bad names, resolutions, empty grid).
    """
    if cfg.vlms:
        from harness.vlm.sweep import expand_vlms

        expand_vlms(cfg)  # each VLM -> one encoder axis + one LLM axis (registered in the zoos)
    validate(cfg)
    configure_backend(cfg.backend)  # backend names and settings, before anything is built
    from harness.encoders.zoo import encoder_out_dim, encoder_tokens, get_spec

    for enc in cfg.encoders.values():
        if enc.model is not None:
            from harness.encoders.custom import register_custom_encoder

            # weights (if any) are loaded by the runner, not at registration
            meta = {
                k: getattr(enc, k)
                for k in (
                    "aliases",
                    "probe_resolution",
                    "native_resolution",
                    "min_resolution",
                    "max_resolution",
                    "params_m_paper",
                    "token_reduction",
                )
                if getattr(enc, k) not in (None, [])
            }
            meta["import_path"] = import_dir(enc.import_path, "encoder")
            custom = register_custom_encoder({"name": enc.name, "model": enc.model, **meta})
            enc.name = custom.name
        else:
            enc.name = get_spec(enc.name).name
    from harness.llms.zoo import get_llm_spec, spec_from_config_dict

    llm_specs: dict[str, Any] = {}
    llm_names: dict[str, str] = {}
    for label, llm in cfg.llms.items():
        if isinstance(llm.config, dict):
            spec = spec_from_config_dict(
                dict(llm.config), name=llm.name, source=f"sweep config llms.{label}"
            )
        elif llm.config:
            spec = get_llm_spec(str(llm.config))
        elif llm.hidden is not None:
            spec = _spec_from_axis(llm, label)
        else:
            spec = get_llm_spec(llm.name)
        llm_specs[spec.name] = spec
        llm_names[label] = spec.name

    def encoder_info(name: str, resolution: int, tiling: str) -> tuple[int, int]:
        return encoder_tokens(name, resolution, tiling), encoder_out_dim(name)

    plan = build_plan(cfg, encoder_info, llm_names)
    for task in plan.prefill_tasks:
        spec = llm_specs[task.llm]
        if task.tokens + task.prompt_tokens > spec.max_positions:
            raise UserError(
                f"{task.llm} takes at most {spec.max_positions} tokens; the grid needs "
                f"{task.tokens} visual + {task.prompt_tokens} prompt tokens"
            )
    return plan, llm_specs


def _spec_from_axis(llm: Any, label: str) -> Any:
    """An LLMSpec from a config-group file that spells out the shape."""
    from harness.llms.zoo import LLMS, LLMSpec

    fields = {f: getattr(llm, f) for f in llm.SHAPE_FIELDS}
    missing = [f for f, v in fields.items() if v is None and f not in llm.OPTIONAL_FIELDS]
    if missing:
        raise UserError(
            f"llms.{label} ({llm.name}): missing {', '.join(missing)} (or give only a zoo name)"
        )
    for f in llm.OPTIONAL_FIELDS:
        if fields[f] is None:
            fields.pop(f)
    spec = LLMSpec(name=llm.name, source=f"sweep config llms.{label}", **fields)
    if llm.name in LLMS:
        zoo = LLMS.get(llm.name)
        differ = [f for f in llm.SHAPE_FIELDS if getattr(zoo, f) != getattr(spec, f)]
        if differ:
            raise UserError(
                f"llms.{label}: {llm.name!r} is a zoo LLM but its {', '.join(differ)} differ from the zoo; "
                "rename it to define a new LLM"
            )
        return zoo
    return spec


class TaskRunner(Protocol):
    """What the measurer needs from runners (:class:`harness.sweep.runners.Runners`)."""

    round: int

    def measure(self, task: Task, in_dim: int = 0) -> Outcome: ...


class Measurer:
    """Measures jobs into one run of the store: claim, reuse, measure, store, record failures.

    Workers that share a run coordinate through claims (see the module docstring). Counts of
    what happened are kept in ``counts`` (measured / reused / skipped / failed) with one line
    per skipped or failed point in ``skipped`` / ``failures``.
    """

    def __init__(
        self,
        store: Store,
        run_id: str,
        runners: TaskRunner,
        owner: str | None = None,
        run_to_run: Any = None,
        confidence: float = 0.95,
    ):
        self.store, self.run_id, self.runners = store, run_id, runners
        #: the sweep's run-to-run term (harness/drift.py), or None
        self.run_to_run = run_to_run
        #: the protocol's confidence level, for the interval over rounds and the run-to-run term
        self.confidence = confidence
        self.owner = owner or owner_id()
        self.counts: dict[str, int] = {"measured": 0, "reused": 0, "skipped": 0, "failed": 0}
        self.failures: list[str] = []
        self.skipped: list[str] = []
        self.round = 0
        #: keys measured by this process this round (side results included), never counted as reused
        self.produced: set[MeasurementKey] = set()

    def start_round(self, rnd: int) -> None:
        """Begin interleaved round ``rnd`` (0-based): later rounds append samples."""
        self.round = rnd
        self.runners.round = rnd
        self.produced = set()

    def run_all(self, job_list: Iterable[Job]) -> None:
        for job in job_list:
            self.run(job)

    def row(self, key: MeasurementKey) -> dict[str, Any] | None:
        """The stored row of ``key`` in this run (None if absent)."""
        return self.store.get_measurement(self.run_id, key)

    def run(self, job: Job) -> None:
        """Measure ``job`` unless the run already has it (or another live worker is on it)."""
        store, run_id, key, rnd = self.store, self.run_id, job.key, self.round
        if key in self.produced:
            return  # stored already this round as a by-product of another task
        existing = store.get_measurement(run_id, key)
        if rnd == 0 and existing is not None and existing["status"] == "ok":
            self.counts["reused"] += 1
            return
        if (
            rnd > 0
            and existing is not None
            and existing["status"] == "ok"
            and int(existing["extra"].get("rounds", 1)) > rnd
        ):
            self.counts["reused"] += 1  # a resumed run: this round of this key is already stored
            return
        if rnd == 0 and not self._claim(job):
            return
        try:
            outcome = self.runners.measure(job.task, job.in_dim)
        except BaseException as e:
            if not isinstance(e, Exception):  # Ctrl-C, SystemExit: free the key for a resume
                if rnd == 0:
                    store.release(run_id, key, self.owner)
                raise
            self._record_failure(key, job.label, e)
            return
        self._store(key, outcome)
        if outcome.projector is not None and job.projector_key is not None:
            skey = job.projector_key
            prev = store.get_measurement(run_id, skey)
            if skey not in self.produced and not (
                prev is not None
                and prev["status"] == "ok"
                and int(prev["extra"].get("rounds", 1)) > rnd
            ):
                self._store(skey, outcome.projector)

    def _claim(self, job: Job) -> bool:
        """Reserve ``job.key``; False when another worker stored it meanwhile (reused)."""
        waited = False
        while True:
            row = self.store.claim(self.run_id, job.key, self.owner)
            if row["status"] == "ok":
                self.counts["reused"] += 1
                return False
            if row["status"] == "running" and row["reason"] == self.owner:
                return True
            if _claim_is_stale(row):
                self.store.release(self.run_id, job.key, row["reason"])
                continue
            if not waited:
                print(
                    f"waiting for {row['reason']} to finish {job.label} (claimed {row['created_at'][:19]}; "
                    f"taken over after {CLAIM_TIMEOUT_S // 3600} h if that worker is gone)",
                    file=sys.stderr,
                )
                waited = True
            time.sleep(POLL_S)  # another live worker is measuring it: wait and reuse

    def _record_failure(self, key: MeasurementKey, label: str, e: Exception) -> None:
        """Store why a point did not measure: UserError/MemoryError -> skipped, anything else -> failed."""
        store, run_id = self.store, self.run_id
        if isinstance(e, UserError):
            store.add_measurement(run_id, key, status="skipped", reason=str(e))
            self.counts["skipped"] += 1
            self.skipped.append(f"{label}: {e}")
        elif isinstance(e, MemoryError):
            store.add_measurement(run_id, key, status="skipped", reason=f"out of memory: {e}")
            self.counts["skipped"] += 1
            self.skipped.append(f"{label}: out of memory")
        else:  # a crash of one point must not stop the sweep
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=8))
            store.add_measurement(
                run_id,
                key,
                status="failed",
                reason=f"{type(e).__name__}: {e}",
                extra={"traceback": tb},
            )
            self.counts["failed"] += 1
            self.failures.append(f"{label}: {type(e).__name__}: {e}")

    def _store(self, key: MeasurementKey, outcome: Outcome) -> None:
        from harness.rounds import pool_round

        rnd = self.round
        # Interleaved rounds: this round's samples are appended to the stored ones, the interval
        # is over rounds and the interference verdict the worst round's (harness/rounds.py).
        prev = self.store.get_measurement(self.run_id, key) if rnd > 0 else None
        m, extra = pool_round(
            outcome.measurement,
            outcome.extra_dict(),
            prev,
            rnd,
            confidence=self.confidence,
            run_to_run=self.run_to_run,
        )
        self.store.add_measurement(
            self.run_id,
            key,
            m,
            extra=extra,
            build_s=outcome.build_s,
            estimated=outcome.estimated,
            replace=rnd > 0,
        )
        self.counts["measured"] += 1
        self.produced.add(key)


def run_sweep(
    cfg: SweepConfig,
    *,
    command: str,
    config_dict: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """Measure ``cfg``'s grid into the store and return what happened."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    t0 = time.perf_counter()
    plan, llm_specs = resolve(cfg)
    store = Store(cfg.db)
    fp = fingerprint(threads=cfg.protocol.threads or os.cpu_count())
    run_id = store.create_run(command, config_dict or asdict(cfg), fp, run_id=cfg.run_id)
    out = SweepOutcome(run_id=run_id, plan=plan)
    log(f"run {run_id}: {plan.summary()} on {fp['machine']}")
    runners = Runners(cfg, llm_specs)
    # noise hooks (docs/noise.md): rounds from the protocol, machine-speed canary
    from harness.rounds import plan_rounds

    n_rounds, runners.protocol = plan_rounds(runners.protocol, cfg.rounds)
    canary = _sweep_canary(cfg, store, run_id, log)
    run_to_run = sweep_run_to_run(cfg, store, fp["machine_id"], run_id, log)
    measurer = Measurer(
        store, run_id, runners, run_to_run=run_to_run, confidence=runners.protocol.confidence
    )
    out.counts = measurer.counts
    out.failures, out.skipped = measurer.failures, measurer.skipped
    job_list = jobs(plan, runners.key)

    progress = Progress(len(job_list) * n_rounds, cfg.progress, counts=out.counts)
    workers = _round_workers(cfg, store, n_rounds, log)
    completed = False
    stop: BaseException | None = None
    try:
        for rnd in range(n_rounds):
            measurer.start_round(rnd)
            if canary is not None:
                canary.checkpoint("start" if rnd == 0 else f"before round {rnd + 1}")
            if workers and _round_in_worker(
                cfg, store, run_id, rnd, measurer, progress, log, run_to_run
            ):
                continue
            workers = False
            for job in job_list:
                progress.step(
                    job.label + (f" (round {rnd + 1}/{n_rounds})" if n_rounds > 1 else "")
                )
                measurer.run(job)
                progress.advance(measurer.row(job.key))
        if canary is not None:
            canary.checkpoint("end")
        completed = True
    except BaseException as e:
        stop = e
        raise
    finally:
        progress.close()
        out.produced = set(measurer.produced)
        out.wall_s = time.perf_counter() - t0
        status, reason = final_status(completed, stop, out)
        if store.corrupt is None:  # nothing is written into a store found damaged
            try:
                store.set_run_status(run_id, status, reason)
            except UserError:
                if stop is None:
                    raise
    return out


def _round_workers(
    cfg: SweepConfig, store: Store, n_rounds: int, log: Callable[[str], None]
) -> bool:
    """Whether rounds run in worker processes (harness/sweep/worker.py)."""
    from harness.sweep.worker import wants_processes

    timed = timed_here(cfg)
    on = wants_processes(cfg.isolation, n_rounds, timed, store.url)
    if on:
        log(
            f"{n_rounds} rounds, each in a fresh worker process (isolation={cfg.isolation}; docs/noise.md)"
        )
    return on


def _round_in_worker(
    cfg: SweepConfig,
    store: Store,
    run_id: str,
    rnd: int,
    measurer: Measurer,
    progress: Progress,
    log: Callable[[str], None],
    run_to_run: Any = None,
) -> bool:
    """Run round ``rnd`` in a worker process and fold its counts into ``measurer``; False when
    the config does not resolve in a fresh process (the round then runs here)."""
    from harness.sweep.worker import NotReproducible, run_round

    state = {
        "total": progress.total,
        "done": progress.done,
        "busy_s": progress.busy_s,
        "taken": progress.taken,
    }
    if progress.bar is not None:
        progress.bar.stop()  # the worker draws its own bar on this terminal
    try:
        res = run_round(cfg, store.url, run_id, rnd, state, run_to_run=run_to_run)
    except NotReproducible as e:
        if cfg.isolation == "process":
            raise UserError(f"isolation=process: {e}") from e
        log(f"rounds run in this process: {e}")
        return False
    else:
        for k, v in res.counts.items():
            measurer.counts[k] = measurer.counts.get(k, 0) + int(v)
        measurer.failures.extend(res.failures)
        measurer.skipped.extend(res.skipped)
        measurer.produced = set(res.produced)
        progress.done = int(res.progress.get("done", progress.done))
        progress.busy_s = float(res.progress.get("busy_s", progress.busy_s))
        progress.taken = int(res.progress.get("taken", progress.taken))
    finally:
        if progress.bar is not None:
            progress.bar.update(progress.task, completed=progress.done)
            progress.bar.start()
    return True


def final_status(
    completed: bool, stop: BaseException | None, out: SweepOutcome
) -> tuple[str, str | None]:
    """(status, reason) of a run: ``done`` only when its whole plan ran."""
    if isinstance(stop, KeyboardInterrupt):
        return "interrupted", "interrupted (Ctrl-C); resume with run_id=" + out.run_id
    if not completed:
        what = f"{type(stop).__name__}: {stop}" if stop is not None else "unknown"
        return "partial", " ".join(f"stopped before its plan completed: {what}".split())[:1000]
    if out.failures:
        # "partial": some points failed but the rest of the run is good data
        status = "failed" if not out.counts["measured"] + out.counts["reused"] else "partial"
        return status, f"{len(out.failures)} point(s) failed: {out.failures[0]}"[:1000]
    return "done", None


def _sweep_canary(cfg: SweepConfig, store: Store, run_id: str, log: Callable[[str], None]) -> Any:
    """The run's machine-speed canary (harness/canary.py); None when the sweep turns it off
    (``canary: false``, or ``null`` when no side's backend times anything here, e.g. fake
    backends only, which never import torch)."""

    on = getattr(cfg, "canary", None)
    if on is None:
        on = timed_here(cfg)
    if not on:
        return None
    from harness.canary import SweepCanary

    return SweepCanary(store, run_id, cfg.protocol.threads or os.cpu_count() or 1, log)


def sweep_run_to_run(
    cfg: SweepConfig, store: Store, machine_id: str, run_id: str, log: Callable[[str], None]
) -> Any:
    """The run-to-run term of this sweep's intervals (harness/drift.py), said in one line;
    None when off (``run_to_run: off``, or ``auto`` with fake backends only)."""
    from harness.drift import resolve as resolve_run_to_run

    timed = timed_here(cfg)
    term = resolve_run_to_run(getattr(cfg, "run_to_run", "auto"), store, machine_id, run_id, timed)
    if term is not None:
        log(term.describe(cfg.protocol.confidence))
    return term


def timed_here(cfg: SweepConfig) -> bool:
    """Whether a backend of either side times anything on this machine (not fake)."""
    from harness.backends import get_backend

    return any(
        get_backend(name).timed_here
        for name in {cfg.backend.encoder_backend, cfg.backend.llm_backend}
    )
