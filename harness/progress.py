"""Progress of a measuring job (sweep, search, nightly) on stderr.

On a terminal: the rich bar (count, ETA, the point being measured). Anywhere else (a pipe,
a CI log, ``nohup``): one plain line per finished measurement, so a long job is never silent::

    sweep [ 3/26] fastvithd @ 512 none: 516.5 ms (95% CI 509.2-522.0); 23 left, eta 3m10s

``enabled=False`` (``progress=false`` for the sweep, ``--quiet`` for search and nightly)
silences both. The estimate of the time left is the mean wall time of the measurements
taken so far (reused ones cost nothing and are not counted) times the number left.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO


def fmt_ms(ms: float) -> str:
    """A latency with a sensible number of digits: 0.42 ms, 12.3 ms, 516.5 ms, 4.01 s."""
    if ms >= 10_000:
        return f"{ms / 1000:.1f} s"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def fmt_duration(s: float) -> str:
    """Seconds as 42s, 3m10s or 1h05m."""
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _ms_pair(lo: float, hi: float) -> str:
    """A CI with the unit and digits of its upper end: 14.9-20.0 s, 0.07-6.65 ms."""
    if hi >= 1000:
        lo, hi, unit = lo / 1000, hi / 1000, "s"
        digits = 1 if hi >= 10 else 2
    else:
        unit, digits = "ms", (2 if hi < 10 else 1)
    return f"{lo:.{digits}f}-{hi:.{digits}f} {unit}"


def describe_row(row: Mapping[str, Any] | None) -> str:
    """What a stored measurement row says, in a few words: median and CI, or why not."""
    if row is None:
        return "not stored"
    status = row.get("status")
    if status != "ok":
        reason = str(row.get("reason") or "").splitlines()[0:1]
        return f"{status}" + (f": {reason[0][:120]}" if reason else "")
    med, lo, hi = row.get("median_ms"), row.get("ci_low_ms"), row.get("ci_high_ms")
    if med is None:
        return "ok"
    text = fmt_ms(float(med))
    if lo is not None and hi is not None:
        text += f" (95% CI {_ms_pair(float(lo), float(hi))})"
    if row.get("estimated"):
        text += ", estimated"
    return text


class Progress:
    """Progress over ``total`` measurements: a rich bar on a terminal, lines elsewhere.

    Call :meth:`step` with what is about to be measured, :meth:`advance` with the stored row
    once it is done, :meth:`close` at the end. ``counts`` (the caller's measured/reused
    counters) lets a line say whether the row was measured now or reused.
    """

    def __init__(
        self,
        total: int,
        enabled: bool = True,
        *,
        title: str = "sweep",
        counts: Mapping[str, int] | None = None,
        stream: TextIO | None = None,
        unit: str = "",
    ):
        self.total, self.title, self.counts, self.unit = int(total), title, counts, unit
        self.stream = stream if stream is not None else sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.mode = "off" if not enabled else ("bar" if tty else "lines")
        self.done = 0
        self.busy_s = 0.0  # wall time of the measurements taken (not reused)
        self.taken = 0
        self.label = ""
        self._t0 = self._t_step = time.perf_counter()
        self._before: dict[str, int] = dict(counts or {})
        self.bar: Any = None
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn(f"[bold]{title}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                transient=False,
                console=Console(file=self.stream),
            )
            self.bar.start()
            self.task = self.bar.add_task("", total=self.total)

    def step(self, description: str) -> None:
        """``description`` is about to be measured."""
        self.label = description
        self._t_step = time.perf_counter()
        self._before = dict(self.counts or {})
        if self.bar is not None:
            self.bar.update(self.task, description=description)

    def advance(
        self, row: Mapping[str, Any] | None = None, label: str | None = None, *, line: bool = True
    ) -> None:
        """One measurement finished; ``row`` is its stored row (median, CI, status).

        ``line=False``: count it (bar, estimate) without printing its line (the caller logs it).
        """
        self.done += 1
        elapsed = time.perf_counter() - self._t_step
        how = self._how()
        if how not in ("reused", "side"):
            self.busy_s += elapsed
            self.taken += 1
        if self.bar is not None:
            self.bar.advance(self.task)
        elif self.mode == "lines" and line:
            self.stream.write(self.line(label or self.label, row, how) + "\n")
            self.stream.flush()

    def _how(self) -> str:
        if not self.counts:
            return ""
        diff = {k: int(v) - int(self._before.get(k, 0)) for k, v in self.counts.items()}
        for k in ("failed", "skipped", "measured", "reused"):
            if diff.get(k, 0) > 0:
                return k
        return "side"  # nothing changed: stored as a side result of an earlier task

    def eta_s(self) -> float | None:
        """Seconds left, from the mean wall time of the measurements taken so far."""
        left = self.total - self.done
        if left <= 0:
            return 0.0
        if not self.taken:
            return None
        return left * self.busy_s / self.taken

    def line(self, label: str, row: Mapping[str, Any] | None, how: str = "") -> str:
        """The plain line for one finished measurement (pure apart from the counters)."""
        width = len(str(self.total))
        what = describe_row(row)
        if how == "reused":
            what += ", reused"
        left = self.total - self.done
        eta = self.eta_s()
        tail = f"{left} left" + (
            "" if not left else f", eta {'?' if eta is None else fmt_duration(eta)}"
        )
        return f"{self.title} [{self.done:>{width}}/{self.total}] {label}: {what}; {tail}"

    def measured(self, label: str, row: Mapping[str, Any] | None) -> None:
        """A measurement inside the current unit (a search trial) finished: one line, off a terminal.

        Reused rows print nothing (the unit's own line says what it cost). The count and the
        estimate are in units: ``search [trial 3/50] ...; 47 trials left, eta 5m10s``.
        """
        how = self._how()
        self._before = dict(self.counts or {})
        if self.mode != "lines" or how in ("reused", "side"):
            return
        left = self.total - self.done
        done_s = time.perf_counter() - self._t0
        eta = None if not self.done else left * done_s / self.done
        unit = self.unit or "unit"
        tail = f"{left} {unit}s left, eta {'?' if eta is None else fmt_duration(eta)}"
        self.stream.write(
            f"{self.title} [{unit} {self.done + 1}/{self.total}] {label}: {describe_row(row)}; {tail}\n"
        )
        self.stream.flush()

    def log(self, msg: str) -> None:
        """A message on the progress stream (above the bar on a terminal)."""
        if self.bar is not None:
            self.bar.console.print(msg, markup=False, highlight=False)
        else:
            self.stream.write(msg + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
