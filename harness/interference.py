"""Per-sample interference evidence: was this sample slowed down by someone else?

A latency sample on a shared machine (a laptop, a CI runner, a VM) is only trustworthy if the
process had the cores it asked for while the sample ran. Wall time alone cannot tell; these
signals, read just before and just after every timed sample (outside the timed region), can:

``cpu``       the process's CPU time over the sample, all threads (``time.process_time_ns``).
              A sample whose wall time exceeds its CPU time per *used* thread by more than the
              margin lost time off-CPU. "Used threads" is the parallelism this workload reaches
              undisturbed: the 90th percentile of ``cpu / wall`` over the measurement's samples
              (warm-up included), capped at the thread count, so a workload that only keeps 1.6
              of 2 threads busy is not flagged for that. Only for CPU-bound steps (no async
              device ``synchronize``, and an undisturbed cpu/wall of at least 0.5). Linux
              credits the CPU time of the process's *other* threads at their scheduler ticks,
              so over one short sample cpu/wall is noise (0.5 to 4.9 for a 1-ms, 2-thread
              prefill on an idle machine). Samples shorter than :data:`CPU_WINDOW_NS` are
              therefore judged by this rule in **windows** of consecutive samples that add up
              to at least that long (:class:`CpuWindow`); a contended window makes each of
              its samples contended.
``runwait``   Linux schedstat: the time this process's threads sat *runnable but not running*
              (``/proc/self/task/*/schedstat``, field 2). Their sum over the sample above
              ``margin x wall`` means the scheduler gave our cores to someone else.
``runqueue``  ``procs_running`` of ``/proc/stat`` minus this process's own running threads:
              other runnable tasks. More of them than cores left free by our threads, at both
              the start and the end of the sample, is a persistent neighbour. Not used when
              /proc/stat lists more CPUs than we may run on (a container on a bigger host).
``steal``     ``/proc/stat`` steal time (a hypervisor ran another guest on our vCPUs), summed
              over the CPUs we may run on, above ``margin x wall``.

A sample is **contended** when any available signal fires. With no signal at all (a platform
without process CPU time and without /proc, or ``VLM_PARETO_INTERFERENCE=off``) every verdict is
``unknown``, never ``clean``. Pure I/O on procfs; no torch import.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Version of the ``interference`` object stored in a measurement's ``extra``.
EVIDENCE_VERSION = 1
#: Default margin: 10% of wall time lost to others makes a sample contended.
DEFAULT_MARGIN = 0.10
#: Set to ``off`` to disable every signal (verdicts become ``unknown``), or to a comma list of
#: signals to use (``cpu,runwait``), e.g. to test a platform that lacks some of them.
ENV = "VLM_PARETO_INTERFERENCE"
SIGNALS = ("cpu", "runwait", "runqueue", "steal")
#: Quantile of cpu/wall taken as the undisturbed parallelism of a workload.
USED_THREADS_QUANTILE = 0.9
#: Below this undisturbed cpu/wall the step mostly waits (a device, I/O, sleep): no CPU rule.
MIN_CPU_BOUND = 0.5
#: Samples shorter than this meet the CPU rule in windows of consecutive samples this long.
CPU_WINDOW_NS = 50_000_000


def judged_in_windows(wall_ms: float) -> bool:
    """Is a sample this long judged by the CPU rule in a window (not on its own)?"""
    return wall_ms * 1e6 < CPU_WINDOW_NS


#: Per-sample evidence arrays are stored in full up to this many samples (then only summaries).
MAX_STORED_SAMPLES = 2000
#: USER_HZ for /proc/stat ticks.
_TICK_NS = 1e9 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)

Verdict = str  # "clean" | "contended" | "unknown"


def available_cpus() -> int:
    """CPUs this process may run on (affinity mask where the OS exposes it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Files:
    """procfs files kept open and re-read with ``pread`` (a third of the cost of open+read)."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}

    def read(self, path: str, size: int = 16384) -> str | None:
        fd = self.fds.get(path)
        try:
            if fd is None:
                fd = os.open(path, os.O_RDONLY)
                self.fds[path] = fd
            return os.pread(fd, size, 0).decode("ascii", "replace")
        except OSError:
            if fd is not None:
                self.forget(path)
            return None

    def forget(self, path: str) -> None:
        fd = self.fds.pop(path, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def keep_only(self, prefix: str, paths: set[str]) -> None:
        for p in [p for p in self.fds if p.startswith(prefix) and p not in paths]:
            self.forget(p)

    def close(self) -> None:
        for p in list(self.fds):
            self.forget(p)


def _parse_stat(
    text: str | None, cpus: frozenset[int] | None = None
) -> tuple[int | None, int | None]:
    """(procs_running, steal ticks) from /proc/stat text; None where absent.

    Steal is summed over ``cpus`` (the CPUs we may run on), or over all CPUs when None."""
    if text is None:
        return None, None
    running = steal = None
    for line in text.splitlines():
        if line.startswith("cpu"):
            parts = line.split()
            if len(parts) <= 8:
                continue
            if parts[0] == "cpu":
                if cpus is None:
                    steal = int(parts[8])
            elif cpus is not None and parts[0][3:].isdigit() and int(parts[0][3:]) in cpus:
                steal = (steal or 0) + int(parts[8])
        elif line.startswith("procs_running"):
            running = int(line.split()[1])
            break
    return running, steal


def _stat_cpus(text: str | None) -> int:
    """How many CPUs /proc/stat lists (a container may see the whole host's)."""
    if text is None:
        return 0
    return sum(1 for line in text.splitlines() if line.startswith("cpu") and line[3:4].isdigit())


def _proc_stat(
    files: _Files | None = None, cpus: frozenset[int] | None = None
) -> tuple[int | None, int | None]:
    if files is None:
        try:
            with open("/proc/stat", "rb") as f:
                return _parse_stat(f.read().decode("ascii", "replace"), cpus)
        except OSError:
            return None, None
    return _parse_stat(files.read("/proc/stat", 65536), cpus)


def _affinity() -> frozenset[int] | None:
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


class _Tasks:
    """This process's threads: summed run-queue wait (ns) and how many are running now."""

    def __init__(self, files: _Files) -> None:
        self.base = f"/proc/{os.getpid()}/task"
        self.files = files

    def read(self, with_state: bool) -> tuple[int | None, int]:
        try:
            tids = os.listdir(self.base)
        except OSError:
            return None, 0
        wait = 0
        ok = False
        running = 0
        seen: set[str] = set()
        for tid in tids:
            path = f"{self.base}/{tid}/schedstat"
            seen.add(path)
            s = self.files.read(path, 256)
            if s:
                parts = s.split()
                if len(parts) >= 2:
                    wait += int(parts[1])
                    ok = True
            if with_state:
                spath = f"{self.base}/{tid}/stat"
                seen.add(spath)
                st = self.files.read(spath, 1024)
                if st:
                    # state is the first field after the parenthesised command name
                    rest = st[st.rfind(")") + 2 :]
                    if rest[:1] == "R":
                        running += 1
        self.files.keep_only(self.base, seen)  # threads that exited
        return (wait if ok else None), running


@dataclass
class Reading:
    """Counters at one instant."""

    cpu_ns: int | None
    wait_ns: int | None
    steal: int | None
    others: int | None  # other runnable tasks (procs_running minus our running threads)


@dataclass
class SampleEvidence:
    """What the signals said about one sample (times in ms)."""

    wall_ms: float
    cpu_ms: float | None = None
    wait_ms: float | None = None
    steal_ms: float | None = None
    others_start: int | None = None
    others_end: int | None = None


class Probe:
    """Reads the available signals around samples; classifies them.

    ``threads``: intra-op threads the measured step uses. ``cpu_bound``: False for steps whose
    wall time is mostly spent waiting for a device (the CPU-time rule is then not applied).
    """

    def __init__(
        self,
        threads: int,
        margin: float = DEFAULT_MARGIN,
        cpu_bound: bool = True,
        signals: Sequence[str] | None = None,
    ) -> None:
        self.threads = max(1, int(threads))
        self.margin = float(margin)
        self.ncpu = available_cpus()
        self._files = _Files()
        self._tasks = _Tasks(self._files)
        wanted = _wanted_signals() if signals is None else set(signals)
        avail: list[str] = []
        if "cpu" in wanted and cpu_bound and _has_process_time():
            avail.append("cpu")
        wait, _ = self._tasks.read(False) if sys.platform.startswith("linux") else (None, 0)
        if "runwait" in wanted and wait is not None:
            avail.append("runwait")
        linux = sys.platform.startswith("linux")
        self._cpus = _affinity() if linux else None
        running, steal = _proc_stat(self._files, self._cpus) if linux else (None, None)
        # procs_running counts every CPU /proc/stat lists: in a container pinned to some of a
        # bigger host's CPUs it would count the neighbours' tasks too, so it is not used there
        host_cpus = _stat_cpus(self._files.read("/proc/stat", 65536)) if linux else 0
        if "runqueue" in wanted and running is not None and host_cpus <= self.ncpu:
            avail.append("runqueue")
        if "steal" in wanted and steal is not None:
            avail.append("steal")
        self.signals = tuple(avail)
        self._need_tasks = "runwait" in avail or "runqueue" in avail
        self._need_stat = "runqueue" in avail or "steal" in avail

    def close(self) -> None:
        """Close the procfs files kept open between reads."""
        files = getattr(self, "_files", None)
        if files is not None:
            files.close()

    def __del__(self) -> None:
        self.close()

    @property
    def known(self) -> bool:
        return bool(self.signals)

    def free_cores(self, used_threads: float | None = None) -> int:
        """Cores our threads leave free: more other runnable tasks than this is contention.

        A step that mostly waits (undisturbed cpu/wall below 0.5) occupies one core at most."""
        busy = min(self.threads, self.ncpu)
        if used_threads is not None and used_threads < MIN_CPU_BOUND:
            busy = 1
        return max(0, self.ncpu - busy)

    def read(self) -> Reading:
        cpu = time.process_time_ns() if "cpu" in self.signals else None
        wait, own_running = (
            self._tasks.read("runqueue" in self.signals) if self._need_tasks else (None, 0)
        )
        running, steal = _proc_stat(self._files, self._cpus) if self._need_stat else (None, None)
        others = None
        if "runqueue" in self.signals and running is not None:
            others = max(0, running - max(own_running, 1))
        return Reading(cpu, wait if "runwait" in self.signals else None, steal, others)

    def evidence(self, before: Reading, after: Reading, wall_ns: int) -> SampleEvidence:
        def d(a: int | None, b: int | None, scale: float) -> float | None:
            return None if a is None or b is None else (b - a) * scale

        return SampleEvidence(
            wall_ms=wall_ns / 1e6,
            cpu_ms=d(before.cpu_ns, after.cpu_ns, 1e-6),
            wait_ms=d(before.wait_ns, after.wait_ns, 1e-6),
            steal_ms=d(before.steal, after.steal, _TICK_NS / 1e6)
            if "steal" in self.signals
            else None,
            others_start=before.others,
            others_end=after.others,
        )

    def cpu_lost(self, cpu_ms: float | None, wall_ms: float, used_threads: float | None) -> bool:
        """The CPU rule: ``wall`` exceeds ``cpu`` per used thread by more than the margin."""
        if cpu_ms is None or wall_ms <= 0 or not used_threads or used_threads < MIN_CPU_BOUND:
            return False
        return wall_ms > cpu_ms / used_threads * (1.0 + self.margin)

    def reasons(
        self, ev: SampleEvidence, used_threads: float | None, *, cpu_rule: bool | None = None
    ) -> list[str]:
        """The signals that call this sample contended (empty: clean). ``cpu_rule`` None: the
        CPU rule applies to samples of at least :data:`CPU_WINDOW_NS` only (shorter ones are
        judged in windows, :class:`CpuWindow`)."""
        out: list[str] = []
        wall = ev.wall_ms
        if wall <= 0:
            return out
        m = self.margin
        if cpu_rule is None:
            cpu_rule = not judged_in_windows(wall)
        if cpu_rule and self.cpu_lost(ev.cpu_ms, wall, used_threads):
            out.append("cpu")
        if ev.wait_ms is not None and ev.wait_ms > m * wall:
            out.append("runwait")
        if (
            ev.others_start is not None
            and ev.others_end is not None
            and min(ev.others_start, ev.others_end) > self.free_cores(used_threads)
        ):
            out.append("runqueue")
        if ev.steal_ms is not None and ev.steal_ms > m * wall:
            out.append("steal")
        return out

    def used_threads(self, evidence: Sequence[SampleEvidence]) -> float | None:
        """Undisturbed parallelism (cpu/wall) of a workload from its samples; None without cpu.
        Short samples count as windows of :data:`CPU_WINDOW_NS` (see the module docstring)."""
        u = [c / w for w, c in cpu_windows(evidence)]
        if not u:
            return None
        return float(min(self.threads, max(np.quantile(u, USED_THREADS_QUANTILE), 1e-3)))

    def quiet_now(self, window_s: float = 0.3, polls: int = 4) -> tuple[bool, int | None]:
        """Is the machine quiet (other runnable tasks within our free cores, no steal)?

        Polls ``procs_running`` a few times over ``window_s``; returns (quiet, median others).
        Unknown (no run-queue signal) counts as quiet: there is nothing to wait for.
        """
        if "runqueue" not in self.signals and "steal" not in self.signals:
            return True, None
        others: list[int] = []
        steal0 = _proc_stat(None, self._cpus)[1]
        t0 = time.perf_counter_ns()
        for _ in range(polls):
            time.sleep(window_s / polls)
            r = self.read()
            if r.others is not None:
                others.append(r.others)
        steal1 = _proc_stat(None, self._cpus)[1]
        busy = int(np.median(others)) if others else None
        stolen = (
            steal0 is not None
            and steal1 is not None
            and (steal1 - steal0) * _TICK_NS > self.margin * (time.perf_counter_ns() - t0)
        )
        return (busy is None or busy <= self.free_cores()) and not stolen, busy


def cpu_windows(evidence: Sequence[SampleEvidence]) -> list[tuple[float, float]]:
    """(wall ms, cpu ms) of each long sample and of each window of consecutive short samples
    adding up to :data:`CPU_WINDOW_NS`; a last window that never filled is merged into the one
    before it, or stands alone when it is the only one."""
    out: list[tuple[float, float]] = []
    w = c = 0.0
    short = False
    for e in evidence:
        if e.cpu_ms is None or e.wall_ms <= 0:
            continue
        if not judged_in_windows(e.wall_ms):
            out.append((e.wall_ms, e.cpu_ms))
            continue
        w, c, short = w + e.wall_ms, c + e.cpu_ms, True
        if not judged_in_windows(w):
            out.append((w, c))
            w = c = 0.0
            short = False
    if short and w > 0:
        if out:
            pw, pc = out.pop()
            out.append((pw + w, pc + c))
        else:
            out.append((w, c))
    return out


class CpuWindow:
    """The CPU rule for short samples, as they are taken: :meth:`add` each one; when the
    window reaches :data:`CPU_WINDOW_NS` it returns the window's sample indices and whether
    the window as a whole lost time off-CPU (``(indices, contended)``), else ``None``."""

    def __init__(self) -> None:
        self.indices: list[int] = []
        self.wall_ms = 0.0
        self.cpu_ms = 0.0

    def add(
        self, probe: Probe, index: int, ev: SampleEvidence, used_threads: float | None
    ) -> tuple[list[int], bool] | None:
        if ev.cpu_ms is None or ev.wall_ms <= 0 or not judged_in_windows(ev.wall_ms):
            return None
        self.indices.append(index)
        self.wall_ms += ev.wall_ms
        self.cpu_ms += ev.cpu_ms
        if judged_in_windows(self.wall_ms):
            return None
        done = (self.indices, probe.cpu_lost(self.cpu_ms, self.wall_ms, used_threads))
        self.indices, self.wall_ms, self.cpu_ms = [], 0.0, 0.0
        return done


def _has_process_time() -> bool:
    try:
        time.process_time_ns()
        return True
    except (AttributeError, OSError):
        return False


def _wanted_signals() -> set[str]:
    raw = os.environ.get(ENV, "").strip().lower()
    if raw in ("", "on", "all", "1", "true"):
        return set(SIGNALS)
    if raw in ("off", "0", "false", "none"):
        return set()
    return {s.strip() for s in raw.split(",") if s.strip() in SIGNALS}


# ---------------------------------------------------------------------------------------------
# What a measurement stores
# ---------------------------------------------------------------------------------------------


@dataclass
class Evidence:
    """Interference evidence of one measurement: every timed sample taken, kept or not."""

    signals: tuple[str, ...]
    margin: float
    threads: int
    ncpu: int
    used_threads: float | None
    samples: list[SampleEvidence] = field(default_factory=list)
    contended: list[list[str]] = field(default_factory=list)  # reasons per sample ([] = clean)
    retaken: int = 0
    waited_s: float = 0.0
    verdict: Verdict = "unknown"

    @property
    def n_contended(self) -> int:
        return sum(1 for r in self.contended if r)

    def to_dict(self) -> dict[str, Any]:
        n = len(self.samples)
        d: dict[str, Any] = {
            "version": EVIDENCE_VERSION,
            "verdict": self.verdict,
            "signals": list(self.signals),
            "margin": self.margin,
            "threads": self.threads,
            "ncpu": self.ncpu,
            "used_threads": None if self.used_threads is None else round(self.used_threads, 3),
            "n_taken": n,
            "n_contended": self.n_contended,
            "retaken": self.retaken,
            "waited_s": round(self.waited_s, 3),
            "reasons": _reason_counts(self.contended),
        }
        if n <= MAX_STORED_SAMPLES:

            def col(name: str, nd: int = 3) -> list[Any] | None:
                vals = [getattr(e, name) for e in self.samples]
                if all(v is None for v in vals):
                    return None
                return [
                    None if v is None else (round(v, nd) if isinstance(v, float) else v)
                    for v in vals
                ]

            d["samples"] = {
                k: v
                for k, v in {
                    "wall_ms": col("wall_ms"),
                    "cpu_ms": col("cpu_ms"),
                    "wait_ms": col("wait_ms"),
                    "steal_ms": col("steal_ms"),
                    "others_start": col("others_start"),
                    "others_end": col("others_end"),
                    "contended": [bool(r) for r in self.contended],
                }.items()
                if v is not None
            }
        return d


def _reason_counts(reasons: Sequence[Sequence[str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in reasons:
        for s in r:
            out[s] = out.get(s, 0) + 1
    return out


def verdict_of(extra: Any) -> Verdict:
    """``clean`` / ``contended`` / ``unknown`` from a stored measurement's ``extra`` (or its
    ``interference`` dict, or their JSON text). Rows measured before evidence existed are ``unknown``."""
    if isinstance(extra, str):
        import json

        try:
            extra = json.loads(extra)
        except ValueError:
            return "unknown"
    if not isinstance(extra, dict):
        return "unknown"
    ev = extra.get("interference", extra)
    if not isinstance(ev, dict):
        return "unknown"
    v = ev.get("verdict")
    return v if v in ("clean", "contended", "unknown") else "unknown"


def is_contended(extra: Any) -> bool:
    return verdict_of(extra) == "contended"


def merge_rounds(
    previous: dict[str, Any] | None, current: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Evidence of a measurement whose samples are pooled over interleaved rounds.

    The pooled measurement is ``contended`` if any round was, ``unknown`` if any round had no
    signal (and none was contended), else ``clean``; per-round verdicts are kept.
    """
    if current is None:
        return previous
    if previous is None:
        return {**current, "rounds": [current.get("verdict", "unknown")]}
    verdicts = list(previous.get("rounds") or [previous.get("verdict", "unknown")])
    verdicts.append(current.get("verdict", "unknown"))
    merged = {**current, "rounds": verdicts}
    merged["verdict"] = (
        "contended" if "contended" in verdicts else "unknown" if "unknown" in verdicts else "clean"
    )
    for k in ("n_taken", "n_contended", "retaken"):
        merged[k] = int(previous.get(k, 0)) + int(current.get(k, 0))
    merged["waited_s"] = float(previous.get("waited_s", 0.0)) + float(current.get("waited_s", 0.0))
    merged["reasons"] = {
        s: int(previous.get("reasons", {}).get(s, 0)) + int(current.get("reasons", {}).get(s, 0))
        for s in set(previous.get("reasons", {})) | set(current.get("reasons", {}))
    }
    merged.pop("samples", None)  # per-sample arrays of earlier rounds live in "samples_rounds"
    merged["samples_rounds"] = list(
        previous.get("samples_rounds") or ([previous["samples"]] if "samples" in previous else [])
    )
    if "samples" in current:
        merged["samples_rounds"].append(current["samples"])
    return merged


def contended_labels(rows: Any) -> set[str]:
    """``key_label``s of the ok rows (dicts or a DataFrame) whose measurement is contended."""
    from harness.compare import key_label

    recs = (
        rows.to_dict("records")
        if hasattr(rows, "to_dict") and hasattr(rows, "columns")
        else list(rows)
    )
    return {
        key_label(r)
        for r in recs
        if str(r.get("status", "ok")) == "ok" and is_contended(r.get("extra"))
    }
