"""The machine-speed canary: a short fixed workload timed at the start, between the rounds and
at the end of every sweep, stored with the run.

Two runs on the same machine can then be compared as ratios to their canaries: if the
canary is 1.5x slower in the candidate run, the *machine* was slower that day (a neighbour,
thermal throttling, a different CPU frequency), and ``compare`` / ``nightly`` divide that out
before judging whether an encoder got slower. The report prints a run's canary against the
machine's history.

The workload (``canary-mm-dw-v1``): a 384x384 fp32 matmul chain and a 3x3 depthwise conv on a
1x96x56x56 map (the two kernel shapes a FastViT-style encoder and an LLM prefill spend their
time in), about 10-30 ms a call on a laptop core. Changing it changes its name, so old and new
canaries are never compared. The stored row is a measurement of kind ``canary`` whose
``extra["canary"]`` lists the checkpoints; its samples are those of every clean checkpoint.

Comparison helpers here are pure (rows in, rows out); only :func:`run_canary` imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CANARY_KIND = "canary"
CANARY_NAME = "canary-mm-dw-v1"
CANARY_PROTOCOL_NAME = "canary"
#: Version of ``extra["canary"]``.
CANARY_VERSION = 1
#: The canary's own run-to-run noise band: a canary ratio (candidate / baseline) inside
#: ``[1 / SPEED_BAND, SPEED_BAND]`` is not evidence that the machine changed speed, and
#: dividing by it only adds the canary's noise to every key. On the 2-core VM eight quiet
#: back-to-back sweep pairs had canary ratios of 0.885-1.263, uncorrelated with the encoders,
#: and dividing by them doubled ``compare``'s false regressions on unchanged code (49% of 104
#: keys, against 22% as measured; ``scripts/compare_false_alarms.py``, docs/noise.md).
SPEED_BAND = 1.3


def canary_protocol(threads: int = 0) -> Any:
    from harness.protocol import Protocol

    # about 0.3 s on a quiet laptop; bounded at 3 s on a busy machine
    return Protocol(
        CANARY_PROTOCOL_NAME,
        warmup_runs=2,
        warmup_min_s=0.05,
        min_runs=10,
        min_time_s=0.2,
        max_time_s=3.0,
        threads=threads,
        retakes=5,
    )


def canary_workload() -> Callable[[], Any]:
    """The fixed reference step (torch, CPU, fp32, fixed seed)."""
    import torch

    g = torch.Generator().manual_seed(1234)
    a = torch.randn(384, 384, generator=g)
    b = torch.randn(384, 384, generator=g)
    x = torch.randn(1, 96, 56, 56, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(96, 1, 3, 3, generator=g)
    conv = torch.nn.functional.conv2d

    def step() -> None:
        with torch.inference_mode():
            y = a
            for _ in range(4):
                y = torch.tanh(y @ b)
            for _ in range(4):
                conv(x, w, padding=1, groups=96)

    return step


def run_canary(threads: int = 0) -> Any:
    """Time the canary once under its own protocol; returns a :class:`~harness.protocol.Measurement`."""
    from harness.protocol import measure

    return measure(canary_workload(), canary_protocol(threads))


def canary_key(threads: int) -> Any:
    from harness.store import MeasurementKey

    # threads go in in_dim so a 1-thread and an all-core canary never pool
    return MeasurementKey(
        CANARY_KIND,
        CANARY_NAME,
        in_dim=int(threads),
        backend="torch",
        device="cpu",
        dtype="float32",
        protocol=CANARY_PROTOCOL_NAME,
    )


class SweepCanary:
    """Canary checkpoints of one sweep run, appended to one stored row."""

    def __init__(
        self, store: Any, run_id: str, threads: int, log: Callable[[str], None] | None = None
    ) -> None:
        self.store, self.run_id, self.threads, self.log = store, run_id, int(threads), log
        self.checkpoints: list[dict[str, Any]] = []
        self.samples: list[float] = []
        prev = store.get_measurement(run_id, canary_key(self.threads))
        if prev is not None and prev["status"] == "ok":  # a resumed run: keep its checkpoints
            self.checkpoints = list(
                (prev.get("extra") or {}).get("canary", {}).get("checkpoints", [])
            )
            self.samples = [float(x) for x in prev["samples_ms"]] if self.checkpoints else []

    def checkpoint(self, at: str) -> float | None:
        """Run the canary now, store it with the run; return its median (ms), None on failure."""
        from datetime import datetime, timezone

        from harness.protocol import Measurement
        from harness.stats import summarize

        try:
            m = run_canary(self.threads)
        except Exception as e:  # the canary must never sink a sweep
            if self.log:
                self.log(f"canary ({at}) failed: {type(e).__name__}: {e}")
            return None
        self.checkpoints.append(
            {
                "at": at,
                "median_ms": m.stats.median_ms,
                "ci_low_ms": m.stats.ci_low_ms,
                "ci_high_ms": m.stats.ci_high_ms,
                "n": m.stats.n,
                "verdict": m.verdict,
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
        )
        if m.verdict != "contended":
            self.samples += m.samples_ms
        pooled = self.samples or m.samples_ms
        row = Measurement(
            samples_ms=list(pooled),
            stats=summarize(pooled),
            protocol=CANARY_PROTOCOL_NAME,
            threads=m.threads,
        )
        verdicts = [c["verdict"] for c in self.checkpoints]
        extra = {
            "canary": {
                "version": CANARY_VERSION,
                "workload": CANARY_NAME,
                "checkpoints": self.checkpoints,
            },
            "interference": {
                "version": 1,
                "verdict": "contended"
                if not self.samples
                else ("unknown" if "unknown" in verdicts else "clean"),
                "rounds": verdicts,
            },
        }
        self.store.add_measurement(
            self.run_id, canary_key(self.threads), row, extra=extra, replace=True
        )
        if self.log:
            self.log(f"canary ({at}): {m.stats.median_ms:.2f} ms [{m.verdict}]")
        return m.stats.median_ms


# ---------------------------------------------------------------------------------------------
# Pure helpers on measurement rows
# ---------------------------------------------------------------------------------------------


def is_canary(row: Mapping[str, Any]) -> bool:
    return str(row.get("kind", "")) == CANARY_KIND


def split_canary(
    rows: Iterable[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(measurement rows, canary rows)."""
    rows = _records(rows)
    return [r for r in rows if not is_canary(r)], [r for r in rows if is_canary(r)]


def _records(rows: Any) -> list[dict[str, Any]]:
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        return list(rows.to_dict("records"))
    return [dict(r) for r in rows]


def _samples(r: Mapping[str, Any]) -> list[float]:
    s = r.get("samples_ms")
    if isinstance(s, str):
        import json

        s = json.loads(s)
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return []
    return [float(v) for v in s]


def canary_median(rows: Iterable[Mapping[str, Any]]) -> float | None:
    """Median of the pooled canary samples of ``rows`` (status ok), None without any."""
    s = [
        x for r in rows if is_canary(r) and str(r.get("status", "ok")) == "ok" for x in _samples(r)
    ]
    return float(np.median(s)) if s else None


@dataclass(frozen=True)
class SpeedNote:
    """How much slower the candidate's machine state was (canary ratio), and what was done."""

    baseline_ms: float | None
    candidate_ms: float | None
    normalised: bool
    #: The noise band the ratio was checked against (None: not checked, e.g. ``--raw``).
    band: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline_ms and self.candidate_ms:
            return self.candidate_ms / self.baseline_ms
        return None

    def text(self) -> str:
        r = self.ratio
        if r is None:
            side = (
                "either side"
                if not self.baseline_ms and not self.candidate_ms
                else ("the baseline" if not self.baseline_ms else "the candidate")
            )
            return f"machine-speed canary: none in {side}; latencies compared as measured"
        if self.normalised:
            what = f"candidate latencies divided by {r:.3f} (the machine, not the code)"
        elif self.band is not None:
            what = (
                f"within the canary's own run-to-run noise (1/{self.band:g}-{self.band:g}x), "
                "so latencies compared as measured"
            )
        else:
            what = "latencies compared as measured (--raw)"
        return (
            f"machine-speed canary: baseline {self.baseline_ms:.2f} ms, candidate {self.candidate_ms:.2f} ms "
            f"-> machine {r:.2f}x {'slower' if r >= 1 else 'faster'} for the candidate; {what}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline_canary_ms": self.baseline_ms,
            "candidate_canary_ms": self.candidate_ms,
            "machine_ratio": self.ratio,
            "normalised": self.normalised,
            "band": self.band,
        }


def scale_rows(rows: Sequence[Mapping[str, Any]], factor: float) -> list[dict[str, Any]]:
    """Rows with every latency divided by ``factor`` (samples and summary columns)."""
    out = []
    for r in rows:
        d = dict(r)
        s = _samples(d)
        if s:
            d["samples_ms"] = [x / factor for x in s]
        for c in ("median_ms", "mean_ms", "min_ms", "p90_ms", "iqr_ms", "ci_low_ms", "ci_high_ms"):
            v = d.get(c)
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                d[c] = v / factor
        out.append(d)
    return out


def beyond_band(ratio: float, band: float = SPEED_BAND) -> bool:
    """Is a canary ratio outside the canary's own noise band (the machine changed speed)?"""
    return ratio > band or ratio < 1.0 / band


def normalise_pair(
    baseline: Any, candidate: Any, normalise: bool = True, band: float = SPEED_BAND
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], SpeedNote]:
    """Drop canary rows from both sides; divide the candidate by the canary ratio if asked
    and the ratio is beyond ``band`` (:data:`SPEED_BAND`; ``band=1`` always divides).

    ``candidate / (cand_canary / base_canary)`` puts the candidate on the baseline's machine
    speed. Without a canary on either side nothing is scaled.
    """
    b_rows, b_can = split_canary(baseline)
    c_rows, c_can = split_canary(candidate)
    note = SpeedNote(canary_median(b_can), canary_median(c_can), False)
    if normalise and note.ratio is not None:
        if beyond_band(note.ratio, band):
            c_rows = scale_rows(c_rows, note.ratio)
            note = SpeedNote(note.baseline_ms, note.candidate_ms, True, band)
        else:
            note = SpeedNote(note.baseline_ms, note.candidate_ms, False, band)
    return b_rows, c_rows, note


def normalise_history(
    runs: Sequence[Mapping[str, Any]], rows: Any, band: float = SPEED_BAND
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Nightly: scale the runs of a history to the last run's machine speed.

    Returns (non-canary rows, scaled where both that run and the last run have a canary and
    their ratio is beyond ``band``; ``{run_id: canary ms}``). Run ``i``'s latencies are then
    multiplied by ``canary_last / canary_i``.
    """
    recs, can = split_canary(rows)
    per_run = {}
    for r in runs:
        m = canary_median([c for c in can if c.get("run_id") == r["id"]])
        if m is not None:
            per_run[str(r["id"])] = m
    last = per_run.get(str(runs[-1]["id"])) if runs else None
    if last is None:
        return recs, per_run
    out = []
    for r in recs:
        m = per_run.get(str(r.get("run_id")))
        out.extend(
            scale_rows([r], m / last)
            if m is not None
            and str(r.get("run_id")) != str(runs[-1]["id"])
            and beyond_band(last / m, band)
            else [r]
        )
    return out, per_run


def history_text(run_ms: float | None, history_ms: Sequence[float], what: str = "this run") -> str:
    """One line: a run's canary against the machine's earlier runs."""
    if run_ms is None:
        return "machine-speed canary: not measured in this run"
    if not history_ms:
        return f"machine-speed canary: {what} {run_ms:.2f} ms (no earlier run on this machine to compare with)"
    h = np.asarray(history_ms, dtype=float)
    med = float(np.median(h))
    r = run_ms / med
    state = (
        "about as fast as usual"
        if abs(r - 1) < 0.05
        else (f"{r:.2f}x slower than usual" if r > 1 else f"{1 / r:.2f}x faster than usual")
    )
    return (
        f"machine-speed canary: {what} {run_ms:.2f} ms vs machine history median {med:.2f} ms "
        f"(range {h.min():.2f}-{h.max():.2f}, {h.size} run(s)): machine {state}"
    )


def run_canary_text(store: Any, run_id: str) -> str | None:
    """The report line for ``run_id``: its canary (with checkpoints) vs the machine's history."""
    run = store.get_run(run_id)
    if run is None:
        return None
    rows = store.measurement_rows([run_id], kind=CANARY_KIND, status="ok")
    if not rows:
        return None
    key = (rows[0]["name"], rows[0]["in_dim"])
    earlier = [
        r
        for r in store.list_runs(machine_id=run["machine_id"])
        if r["id"] != run_id and str(r["created_at"]) < str(run["created_at"])
    ]
    hist = []
    if earlier:
        for r in store.measurement_rows([e["id"] for e in earlier], kind=CANARY_KIND, status="ok"):
            if (r["name"], r["in_dim"]) == key and r.get("median_ms"):
                hist.append(float(r["median_ms"]))
    text = history_text(rows[0].get("median_ms"), hist)
    cps = (rows[0].get("extra") or {}).get("canary", {}).get("checkpoints", [])
    if cps:
        text += "; checkpoints " + ", ".join(
            f"{c['at']} {c['median_ms']:.2f}" + ("*" if c.get("verdict") == "contended" else "")
            for c in cps
        )
        if any(c.get("verdict") == "contended" for c in cps):
            text += " (* contended)"
    return text


def canary_history_line(
    runs: Sequence[Mapping[str, Any]], canary_ms: Mapping[str, float]
) -> str | None:
    """Nightly: the last run's canary vs the earlier runs', and whether history was scaled."""
    if not runs:
        return None
    last = canary_ms.get(str(runs[-1]["id"]))
    hist = [canary_ms[str(r["id"])] for r in runs[:-1] if str(r["id"]) in canary_ms]
    line = history_text(last, hist)
    if last is not None and hist:
        line += "; earlier runs scaled to this run's machine speed before comparing"
    return line
