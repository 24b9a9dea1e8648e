"""The measurement protocol: one way to time any callable, for every runner.

Warm-up runs (a count and a minimum time), then timed runs until both a minimum count and a
minimum total time are reached, capped by a maximum time. Every raw sample is kept. The
runner supplies ``synchronize`` (CUDA/MPS sync, ``mx.eval``) which is called before every
clock read, so asynchronous backends are timed to completion. The garbage collector is run
before timing and disabled during it, so a collection never lands inside one sample.

Every timed sample also carries interference evidence (process CPU time, run-queue wait,
other runnable tasks, steal; :mod:`harness.interference`). A *contended* sample is re-taken
(at most ``retakes`` times per measurement) and left out of the statistics; a measurement
that could not collect ``min_runs`` clean samples is marked ``contended`` (docs/noise.md).
"""

from __future__ import annotations

import gc
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any
from typing import Protocol as TypingProtocol

from harness.denormal import set_flush_denormal
from harness.errors import UserError, suggest
from harness.stats import Stats, summarize


class MemoryProbe(TypingProtocol):
    """Peak memory of one step: ``reset()`` before it, ``peak()`` (bytes) after it."""

    name: str

    def reset(self) -> None: ...

    def peak(self) -> int | None: ...


class RSSProbe:
    """Peak resident set size of this process.

    On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the high-water mark (VmHWM),
    so the peak covers just the measured step. Elsewhere ``ru_maxrss`` (process lifetime
    peak) is the best available and is labelled as such.
    """

    def __init__(self) -> None:
        self._resettable = sys.platform.startswith("linux") and os.path.exists(
            "/proc/self/clear_refs"
        )
        self.name = "rss-step-peak" if self._resettable else "rss-process-peak"

    def reset(self) -> None:
        if self._resettable:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self._resettable = False
                self.name = "rss-process-peak"

    def peak(self) -> int | None:
        if sys.platform.startswith("linux"):
            try:
                with open("/proc/self/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            return int(line.split()[1]) * 1024
            except OSError:
                pass
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            # macOS reports bytes, Linux kibibytes.
            return int(peak if sys.platform == "darwin" else peak * 1024)
        except (ImportError, OSError):
            return None


@dataclass(frozen=True)
class Protocol:
    """How to time one step. All times in seconds.

    ``threads``: intra-op threads for the backend; ``0`` means "all cores"
    (``os.cpu_count()``). The resolved count is recorded with every measurement.

    Interference (docs/noise.md): ``retakes`` contended samples at most are re-taken per
    measurement; ``quiet_wait_s`` > 0 is how long a measurement may wait in all for a quiet
    machine, before timing and after a contended sample (with a message); while some of it
    is left, contended samples do not use up the re-takes; ``contention_margin`` is the share
    of wall time lost to others that makes a sample contended; ``rounds`` is the least number of interleaved rounds a sweep
    spreads each measurement over (its samples budget is split between them).
    """

    name: str = "standard"
    warmup_runs: int = 2
    warmup_min_s: float = 0.5
    min_runs: int = 10
    min_time_s: float = 2.0
    max_time_s: float = 60.0
    threads: int = 0
    flush_denormal: bool = True
    confidence: float = 0.95
    retakes: int = 0
    quiet_wait_s: float = 0.0
    contention_margin: float = 0.10
    rounds: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "name":
                if not isinstance(value, str) or not value:
                    raise UserError(f"protocol name must be a non-empty string, got {value!r}")
                continue
            if f.type in ("int", int) and (isinstance(value, bool) or not isinstance(value, int)):
                raise UserError(f"protocol setting {f.name} must be an integer, got {value!r}")
            if f.type in ("float", float) and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise UserError(f"protocol setting {f.name} must be a finite number, got {value!r}")
            if f.type in ("bool", bool) and not isinstance(value, bool):
                raise UserError(f"protocol setting {f.name} must be true or false, got {value!r}")
        if self.warmup_runs < 0 or self.min_runs < 1 or self.threads < 0:
            raise UserError("protocol needs warmup_runs >= 0, min_runs >= 1 and threads >= 0")
        if self.warmup_min_s < 0 or self.min_time_s < 0 or self.max_time_s <= 0:
            raise UserError("protocol times must be >= 0 (max_time_s > 0)")
        if not 0.5 <= self.confidence < 1.0:
            raise UserError(f"protocol confidence must be in [0.5, 1), got {self.confidence}")
        if self.retakes < 0:
            raise UserError(
                f"protocol retakes must be >= 0 (0 = never re-take a contended sample), got {self.retakes}"
            )
        if self.min_time_s > self.max_time_s:
            raise UserError(
                f"protocol min_time_s ({self.min_time_s:g}) must not exceed max_time_s "
                f"({self.max_time_s:g}): a measurement stops at max_time_s"
            )
        if self.quiet_wait_s < 0 or self.quiet_wait_s > self.max_time_s:
            raise UserError(
                f"protocol quiet_wait_s must be in [0, max_time_s={self.max_time_s:g}], "
                f"got {self.quiet_wait_s:g}"
            )
        if not 0.0 < self.contention_margin < 1.0:
            raise UserError(
                f"protocol contention_margin must be in (0, 1), got {self.contention_margin}"
            )
        if self.rounds < 1:
            raise UserError(f"protocol rounds must be >= 1, got {self.rounds}")

    @property
    def resolved_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> Protocol:
        """Return a copy with overrides; strings from a command line are converted and checked."""
        known = {f.name: f for f in fields(self)}
        converted: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in known:
                raise UserError(suggest(key, known, "protocol setting"))
            converted[key] = _convert(key, known[key].type, value)
        if "max_time_s" in converted:
            for name in AT_MOST_MAX_TIME:
                if name not in converted:
                    converted[name] = within_max_time(getattr(self, name), converted["max_time_s"])
        return replace(self, **converted)


#: Settings that a shorter ``max_time_s`` shortens when they were left at their value
#: (a preset's): the quiet wait and the minimum measuring time are "at most max_time_s".
AT_MOST_MAX_TIME = ("quiet_wait_s", "min_time_s")


def within_max_time(value: float, max_time_s: float) -> float:
    """A setting of :data:`AT_MOST_MAX_TIME` left at its preset's value is an "at most": a
    shorter ``max_time_s`` shortens it (one *set* longer than ``max_time_s`` is an error)."""
    return min(float(value), float(max_time_s)) if max_time_s > 0 else float(value)


def _convert(key: str, ftype: Any, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if ftype in ("int", int):
            return int(value)
        if ftype in ("float", float):
            return float(value)
        if ftype in ("bool", bool):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
    except ValueError as e:
        raise UserError(f"protocol setting {key} must be a number, got {value!r}") from e
    return value


PROTOCOLS: dict[str, Protocol] = {
    # Seconds-scale: tests, demos and the README's main job on a 2-core CPU.
    # One round: its intervals are widened to the single-round floor (harness.stats).
    "quick": Protocol(
        "quick",
        warmup_runs=1,
        warmup_min_s=0.0,
        min_runs=3,
        min_time_s=0.0,
        max_time_s=30.0,
        retakes=3,
    ),
    # Three interleaved rounds in a sweep, each in its own worker process: the interval
    # includes process-to-process variance. A measurement may wait 15 s in all (5 s a round)
    # for a busy machine to quieten.
    "standard": Protocol(
        "standard",
        warmup_runs=2,
        warmup_min_s=0.5,
        min_runs=10,
        min_time_s=2.0,
        max_time_s=60.0,
        retakes=10,
        quiet_wait_s=15.0,
        rounds=3,
    ),
    # Nightly regression tracking: enough samples for a rank test to have power.
    "rigorous": Protocol(
        "rigorous",
        warmup_runs=3,
        warmup_min_s=1.0,
        min_runs=30,
        min_time_s=5.0,
        max_time_s=300.0,
        retakes=30,
        quiet_wait_s=30.0,
        rounds=3,
    ),
}


def protocol_from_fields(fields: dict[str, Any]) -> Protocol:
    """A :class:`Protocol` from a config's fields (a sweep's ``protocol`` group).

    A preset's quiet wait and minimum time are "at most": left at the preset's value with a
    shorter ``max_time_s``, they are shortened to ``max_time_s`` (set explicitly longer, an error).
    """
    fields = dict(fields)
    preset = PROTOCOLS.get(str(fields.get("name")))
    most = fields.get("max_time_s")
    for name in AT_MOST_MAX_TIME:
        value = fields.get(name)
        if (
            preset is not None
            and isinstance(value, (int, float))
            and isinstance(most, (int, float))
            and value == getattr(preset, name)
        ):
            fields[name] = within_max_time(value, most)
    return Protocol(**fields)


def get_protocol(name_or_protocol: str | Protocol, **overrides: Any) -> Protocol:
    """Look up a preset by name (or pass a Protocol through) and apply overrides."""
    if isinstance(name_or_protocol, Protocol):
        base = name_or_protocol
    else:
        if name_or_protocol not in PROTOCOLS:
            raise UserError(suggest(name_or_protocol, PROTOCOLS, "protocol"))
        base = PROTOCOLS[name_or_protocol]
    return base.with_overrides(**overrides) if overrides else base


@dataclass
class Measurement:
    """Raw samples and their statistics for one measured step."""

    samples_ms: list[float]
    stats: Stats
    protocol: str
    threads: int
    warmup_ms: list[float] = field(default_factory=list)
    peak_mem_bytes: int | None = None
    memory_probe: str | None = None
    capped: bool = False
    wall_s: float = 0.0
    #: interference evidence (harness.interference.Evidence.to_dict); None: not collected
    interference: dict[str, Any] | None = None
    #: contended samples left out of ``samples_ms`` (re-taken)
    dropped_ms: list[float] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """``clean`` / ``contended`` / ``unknown`` (no interference signal on this platform)."""
        return str((self.interference or {}).get("verdict", "unknown"))

    @property
    def contended(self) -> bool:
        return self.verdict == "contended"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.to_dict()
        return d


#: A sample shorter than this that starts within this long of a contended sample is contended
#: too (reason ``near``): the per-sample signals have scheduler-tick granularity (a few ms), so
#: a sub-millisecond sample next to a contended one shared its neighbour without showing it.
NEAR_NS = 10_000_000


def _noop() -> None:
    return None


def apply_threads(threads: int) -> int:
    """Set the intra-op thread count for every backend already imported; return it."""
    if "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return threads


def measure(
    fn: Callable[[], Any],
    protocol: Protocol | str = "standard",
    synchronize: Callable[[], Any] | None = None,
    memory: MemoryProbe | None = None,
    cpu_bound: bool | None = None,
) -> Measurement:
    """Time ``fn`` under ``protocol``; ``synchronize`` is called before every clock read.

    Peak memory is read during one extra warm-up step (never during timed steps, so probing
    adds nothing to the samples). Interference evidence is read around every sample, outside
    the timed region; ``cpu_bound`` (default: no ``synchronize``, i.e. a CPU step) says whether
    the CPU-time rule applies.
    """
    from harness.interference import CpuWindow, Probe

    proto = get_protocol(protocol)
    sync = synchronize or _noop
    threads = apply_threads(proto.resolved_threads)
    clock = time.perf_counter_ns
    wall0 = time.perf_counter()
    probe = Probe(
        threads,
        proto.contention_margin,
        cpu_bound=synchronize is None if cpu_bound is None else cpu_bound,
    )
    read = probe.read

    warmup: list[float] = []
    warm_ev = []
    start = clock()
    while len(warmup) < proto.warmup_runs or (clock() - start) / 1e9 < proto.warmup_min_s:
        if (clock() - start) / 1e9 > proto.max_time_s:
            break
        sync()
        r0 = read()
        t0 = clock()
        fn()
        sync()
        dt = clock() - t0
        warm_ev.append(probe.evidence(r0, read(), dt))
        warmup.append(dt / 1e6)

    peak: int | None = None
    probe_name: str | None = None
    if memory is not None:
        memory.reset()
        sync()
        fn()
        sync()
        peak = memory.peak()
        probe_name = memory.name

    waited = _wait_for_quiet(probe, proto) if proto.quiet_wait_s > 0 else 0.0

    # Denormals slow CPU arithmetic by orders of magnitude and depend on data, not on the
    # model: flush them for every torch runner unless the protocol says otherwise.
    flushed = set_flush_denormal(True) if proto.flush_denormal else False

    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    samples_ns: list[int] = []
    evidence = []
    reasons: list[list[str]] = []
    append = samples_ns.append
    min_runs, min_ns, max_ns = proto.min_runs, proto.min_time_s * 1e9, proto.max_time_s * 1e9
    total = clean_total = clean_n = 0
    capped = False
    used = probe.used_threads(warm_ev)
    paused_ns = 0
    announced = False  # the first pause of a measurement says so on stderr
    starts: list[int] = []
    tainted_until = 0  # a short sample starting before this is "near" a contended one
    window = CpuWindow()  # short samples meet the CPU rule together (harness.interference)
    try:
        timed_start = clock()
        while True:
            sync()
            r0 = read()
            t0 = clock()
            fn()
            sync()
            t1 = clock()
            dt = t1 - t0
            ev = probe.evidence(r0, read(), dt)
            append(dt)
            starts.append(t0)
            total += dt
            evidence.append(ev)
            if used is None or len(evidence) <= 50 or len(evidence) % 50 == 0:
                used = probe.used_threads(warm_ev + evidence)
            why = probe.reasons(ev, used)
            judged = window.add(probe, len(reasons), ev, used)
            if judged is not None and judged[1]:
                # the window lost time off-CPU: every sample in it is contended
                for j in judged[0][:-1]:
                    if not reasons[j]:
                        clean_n -= 1
                        clean_total -= samples_ns[j]
                    if "cpu" not in reasons[j]:
                        reasons[j] = [*reasons[j], "cpu"]
                why = [*why, "cpu"]
            if why and probe.known:
                tainted_until = t1 + NEAR_NS
                # short clean samples just before this one shared its neighbour
                i = len(reasons) - 1
                while i >= 0 and starts[i] >= t0 - NEAR_NS:
                    if not reasons[i] and samples_ns[i] < NEAR_NS:
                        reasons[i] = ["near"]
                        clean_n -= 1
                        clean_total -= samples_ns[i]
                    i -= 1
            elif not why and dt < NEAR_NS and t0 < tainted_until:
                why = ["near"]
            reasons.append(why)
            if not why:
                clean_n += 1
                clean_total += dt
            n_bad = len(samples_ns) - clean_n
            if clean_n >= min_runs and clean_total >= min_ns:
                break
            patient = waited < proto.quiet_wait_s
            if why and patient:  # a busy machine: pause timing until it quietens (bounded)
                w = _pause_until_quiet(probe, proto.quiet_wait_s - waited, announce=not announced)
                announced = True
                waited += w
                paused_ns += int(w * 1e9)
                sync()
                fn()  # untimed: warm again after the pause
                sync()
                patient = waited < proto.quiet_wait_s
            # re-takes (and the quiet wait) used up: stop once the plain protocol's budget is reached
            if (
                n_bad > proto.retakes
                and not patient
                and len(samples_ns) >= min_runs
                and total >= min_ns
            ):
                break
            if clock() - timed_start - paused_ns >= max_ns:
                capped = True
                break
    finally:
        if gc_was_enabled:
            gc.enable()
        if flushed:
            set_flush_denormal(False)

    all_ms = [s / 1e6 for s in samples_ns]
    clean_ms = [s for s, why in zip(all_ms, reasons, strict=True) if not why]
    if not probe.known:
        verdict, kept = "unknown", all_ms
    elif len(clean_ms) >= min_runs:
        verdict, kept = "clean", clean_ms
    else:
        verdict, kept = "contended", all_ms
    info = _evidence(probe, used, evidence, reasons, verdict, waited)
    return Measurement(
        samples_ms=kept,
        stats=summarize(kept, proto.confidence),
        protocol=proto.name,
        threads=threads,
        warmup_ms=warmup,
        peak_mem_bytes=peak,
        memory_probe=probe_name,
        capped=capped,
        wall_s=time.perf_counter() - wall0,
        interference=info,
        dropped_ms=[s for s, why in zip(all_ms, reasons, strict=True) if why]
        if verdict == "clean"
        else [],
    )


def _evidence(
    probe: Any,
    used: float | None,
    evidence: list[Any],
    reasons: list[list[str]],
    verdict: str,
    waited: float,
) -> dict[str, Any]:
    from harness.interference import Evidence

    ev = Evidence(
        signals=probe.signals,
        margin=probe.margin,
        threads=probe.threads,
        ncpu=probe.ncpu,
        used_threads=used,
        samples=evidence,
        contended=reasons,
        retaken=sum(1 for r in reasons if r) if verdict == "clean" else 0,
        waited_s=waited,
        verdict=verdict,
    )
    return ev.to_dict()


def _pause_until_quiet(probe: Any, budget_s: float, *, announce: bool) -> float:
    """After a contended sample: wait (at most ``budget_s``) until the machine is quiet again.
    Says so once per measurement (``announce``) when the machine is in fact busy."""
    t0 = time.perf_counter()
    said = not announce
    while True:
        left = budget_s - (time.perf_counter() - t0)
        if left <= 0:
            break
        quiet, busy = probe.quiet_now(window_s=min(0.1, left), polls=2)
        if quiet:
            break
        if not said:
            print(
                f"vlm-pareto: machine busy ({busy} other runnable task(s), {probe.free_cores()} free core(s)); "
                f"pausing the timing until it quietens (at most {budget_s:.1f} s more for this measurement)",
                file=sys.stderr,
                flush=True,
            )
            said = True
    return time.perf_counter() - t0


def _wait_for_quiet(probe: Any, proto: Protocol) -> float:
    """Wait (at most ``quiet_wait_s``) until other runnable tasks fit in our free cores."""
    t0 = time.perf_counter()
    quiet, busy = probe.quiet_now()
    if quiet:
        return time.perf_counter() - t0
    print(
        f"vlm-pareto: machine busy ({busy} other runnable task(s), {probe.free_cores()} free core(s)); "
        f"waiting up to {proto.quiet_wait_s:g} s for it to quieten",
        file=sys.stderr,
        flush=True,
    )
    while time.perf_counter() - t0 < proto.quiet_wait_s:
        quiet, busy = probe.quiet_now()
        if quiet:
            break
    waited = time.perf_counter() - t0
    print(
        f"vlm-pareto: {'quiet' if quiet else 'still busy'} after {waited:.1f} s; timing"
        + ("" if quiet else " (contended samples will be re-taken or flagged)"),
        file=sys.stderr,
        flush=True,
    )
    return waited
