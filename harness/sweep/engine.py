"""Execute a sweep plan: measure each unique task once, store it at once, resume on restart.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.fingerprint import fingerprint
from harness.store import MeasurementKey, Store
from harness.sweep.configs import SweepConfig, validate
from harness.sweep.plan import Plan, build_plan, encoder_key, prefill_key, projector_key
from harness.sweep.runners import Outcome, Runners

#: the user's --config-dir, exported by the sweep app for custom encoders' import paths
CONFIG_DIR_ENV = "VLM_PARETO_CONFIG_DIR"
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
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _claim_is_stale(row: dict[str, Any]) -> bool:
    host, _, pid = str(row.get("reason") or "").rpartition(":")
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
    from harness.encoders.zoo import encoder_out_dim, encoder_tokens, get_spec

    for enc in cfg.encoders.values():
        if enc.model is not None:
            from harness.encoders.custom import register_custom_encoder

            # weights (if any) are loaded by the runner, not at registration
            meta = {k: getattr(enc, k) for k in ("aliases", "probe_resolution", "native_resolution",
                                                 "min_resolution", "max_resolution", "params_m_paper",
                                                 "token_reduction")
                    if getattr(enc, k) not in (None, [])}
            meta["import_path"] = _import_dir(enc.import_path)
            spec = register_custom_encoder({"name": enc.name, "model": enc.model, **meta})
            enc.name = spec.name
        else:
            enc.name = get_spec(enc.name).name
    from harness.llms.zoo import get_llm_spec, spec_from_config_dict

    llm_specs: dict[str, Any] = {}
    llm_names: dict[str, str] = {}
    for label, llm in cfg.llms.items():
        if isinstance(llm.config, dict):
            spec = spec_from_config_dict(dict(llm.config), name=llm.name, source=f"sweep config llms.{label}")
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


def _import_dir(import_path: str | None) -> str:
    """Absolute folder for a custom encoder's factory module (see EncoderAxis.import_path)."""
    if import_path is None:
        return str(Path.cwd())
    p = Path(import_path).expanduser()
    if p.is_absolute():
        return str(p)
    # The YAML came from the --config-dir's encoder/ folder (when one was given): relative
    # paths mean "relative to that file" first, as in `vlm-pareto zoo --encoder-config`.
    candidates = []
    extra = os.environ.get(CONFIG_DIR_ENV)
    if extra:
        candidates += [Path(extra) / "encoder" / p, Path(extra) / p]
    candidates.append(Path.cwd() / p)
    for c in candidates:
        if c.is_dir():
            return str(c.resolve())
    raise UserError(f"custom encoder import_path {import_path!r}: no such folder (tried {', '.join(map(str, candidates))})")


def _spec_from_axis(llm: Any, label: str) -> Any:
    """An LLMSpec from a config-group file that spells out the shape."""
    from harness.llms.zoo import LLMS, LLMSpec

    fields = {f: getattr(llm, f) for f in llm.SHAPE_FIELDS}
    missing = [f for f, v in fields.items() if v is None and f not in llm.OPTIONAL_FIELDS]
    if missing:
        raise UserError(f"llms.{label} ({llm.name}): missing {', '.join(missing)} (or give only a zoo name)")
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


class _Progress:
    """A bar over measurements with the current grid point and ETA; silent off a terminal."""

    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("eta"),
                TimeRemainingColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("", total=total)

    def step(self, description: str) -> None:
        if self.bar:
            self.bar.update(self.task, description=description)

    def advance(self) -> None:
        if self.bar:
            self.bar.advance(self.task)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


def run_sweep(cfg: SweepConfig, *, command: str, config_dict: dict[str, Any] | None = None,
              log: Callable[[str], None] | None = None) -> SweepOutcome:
    """Measure ``cfg``'s grid into the store and return what happened."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    t0 = time.perf_counter()
    plan, llm_specs = resolve(cfg)
    store = Store(cfg.db)
    fp = fingerprint(threads=cfg.protocol.threads or os.cpu_count())
    run_id = store.create_run(command, config_dict or asdict(cfg), fp, run_id=cfg.run_id)
    out = SweepOutcome(run_id=run_id, plan=plan, counts={"measured": 0, "reused": 0, "skipped": 0, "failed": 0})
    log(f"run {run_id}: {plan.summary()} on {fp['machine']}")
    runners = Runners(cfg, llm_specs)
    owner = _owner()

    # in_dim the prefill of (llm, tokens) measures its projector with: the first one planned
    first_in_dim = {}
    for pt in plan.projector_tasks:
        first_in_dim.setdefault((pt.llm, pt.tokens), pt.in_dim)

    jobs: list[tuple[MeasurementKey, str, Callable[[], Outcome]]] = []
    for et in plan.encoder_tasks:
        jobs.append((encoder_key(et, cfg), f"{et.name} @ {et.resolution} {et.tiling}", lambda et=et: runners.encoder(et)))
    proj_keys = {(p.llm, p.tokens, p.in_dim): projector_key(p, cfg) for p in plan.projector_tasks}
    for pt in plan.prefill_tasks:
        in_dim = first_in_dim[(pt.llm, pt.tokens)]
        jobs.append((prefill_key(pt, cfg), f"{pt.llm} prefill {pt.tokens}+{pt.prompt_tokens} tok",
                     lambda pt=pt, d=in_dim: runners.prefill(pt, d)))
    for pj in plan.projector_tasks:
        jobs.append((proj_keys[(pj.llm, pj.tokens, pj.in_dim)], f"projector {pj.in_dim}->{pj.llm} {pj.tokens} tok",
                     lambda pj=pj: runners.projector(pj)))

    progress = _Progress(len(jobs) * cfg.rounds, cfg.progress)
    status = "done"
    try:
        for rnd in range(cfg.rounds):
            runners.round = rnd
            out.produced = set()
            for key, label, fn in jobs:
                progress.step(label + (f" (round {rnd + 1}/{cfg.rounds})" if cfg.rounds > 1 else ""))
                _run_job(store, run_id, key, label, fn, rnd, owner, out, proj_keys)
                progress.advance()
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        progress.close()
        if status != "interrupted":
            # "partial": some points failed but the rest of the run is good data
            status = ("failed" if not out.counts["measured"] + out.counts["reused"] else "partial") if out.failures else "done"
        store.set_run_status(run_id, status)
        out.wall_s = time.perf_counter() - t0
    return out


def _run_job(store: Store, run_id: str, key: MeasurementKey, label: str, fn: Callable[[], Outcome], rnd: int,
             owner: str, out: SweepOutcome, proj_keys: dict[tuple, MeasurementKey]) -> None:
    if key in out.produced:
        return  # stored already this round as a by-product of another task
    existing = store.get_measurement(run_id, key)
    if rnd == 0 and existing is not None and existing["status"] == "ok":
        out.counts["reused"] += 1
        return
    if rnd > 0 and existing is not None and existing["status"] == "ok" and int(existing["extra"].get("rounds", 1)) > rnd:
        out.counts["reused"] += 1  # a resumed run: this round of this key is already stored
        return
    waited = False
    if rnd == 0:
        while True:
            row = store.claim(run_id, key, owner)
            if row["status"] == "ok":
                out.counts["reused"] += 1
                return
            if row["status"] == "running" and row["reason"] == owner:
                break
            if _claim_is_stale(row):
                store.release(run_id, key, row["reason"])
                continue
            if not waited:
                print(f"waiting for {row['reason']} to finish {label} (claimed {row['created_at'][:19]}; "
                      f"taken over after {CLAIM_TIMEOUT_S // 3600} h if that worker is gone)", file=sys.stderr)
                waited = True
            time.sleep(POLL_S)  # another live worker is measuring it: wait and reuse
    try:
        outcome = fn()
    except BaseException as e:
        if not isinstance(e, Exception):  # Ctrl-C, SystemExit: free the key for a resume
            if rnd == 0:
                store.release(run_id, key, owner)
            raise
        _record_failure(store, run_id, key, label, e, out)
        return
    _store_outcome(store, run_id, key, outcome, rnd)
    out.counts["measured"] += 1
    out.produced.add(key)
    for side_id, side in outcome.side.items():
        _, llm, tokens, in_dim = side_id
        skey = proj_keys.get((llm, tokens, in_dim))
        if skey is None:
            continue
        prev = store.get_measurement(run_id, skey)
        if skey in out.produced or (prev is not None and prev["status"] == "ok"
                                    and int(prev["extra"].get("rounds", 1)) > rnd):
            continue
        _store_outcome(store, run_id, skey, side, rnd)
        out.counts["measured"] += 1
        out.produced.add(skey)


def _record_failure(store: Store, run_id: str, key: MeasurementKey, label: str, e: Exception,
                    out: SweepOutcome) -> None:
    """Store why a point did not measure: UserError/MemoryError -> skipped, anything else -> failed."""
    if isinstance(e, UserError):
        store.add_measurement(run_id, key, status="skipped", reason=str(e))
        out.counts["skipped"] += 1
        out.skipped.append(f"{label}: {e}")
    elif isinstance(e, MemoryError):
        store.add_measurement(run_id, key, status="skipped", reason=f"out of memory: {e}")
        out.counts["skipped"] += 1
        out.skipped.append(f"{label}: out of memory")
    else:  # a crash of one point must not stop the sweep
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=8))
        store.add_measurement(run_id, key, status="failed", reason=f"{type(e).__name__}: {e}", extra={"traceback": tb})
        out.counts["failed"] += 1
        out.failures.append(f"{label}: {type(e).__name__}: {e}")


def _store_outcome(store: Store, run_id: str, key: MeasurementKey, outcome: Outcome, rnd: int) -> None:
    m = outcome.measurement
    extra = dict(outcome.extra)
    if rnd > 0:
        # Interleaved rounds: append this round's samples to the stored ones.
        prev = store.get_measurement(run_id, key)
        if prev is not None and prev["status"] == "ok":
            from harness.protocol import Measurement
            from harness.stats import summarize

            samples = list(prev["samples_ms"]) + list(m.samples_ms)
            m = Measurement(samples_ms=samples, stats=summarize(samples), protocol=m.protocol, threads=m.threads,
                            warmup_ms=m.warmup_ms, peak_mem_bytes=m.peak_mem_bytes, memory_probe=m.memory_probe,
                            capped=m.capped, wall_s=m.wall_s)
            extra["rounds"] = int(prev["extra"].get("rounds", 1)) + 1
    else:
        extra["rounds"] = 1
    store.add_measurement(run_id, key, m, extra=extra, build_s=outcome.build_s, estimated=outcome.estimated,
                          replace=rnd > 0)
