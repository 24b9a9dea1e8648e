"""Validation of a calibration: leave-one-out and held-out-family errors (pure functions)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.predict.calibrate import Fit, KnownRow, fit_rows
from harness.predict.profiles import Profile

PART_NAMES = ("encoder", "prefill", "ttft")


@dataclass(frozen=True)
class Held:
    """One held-out prediction."""

    label: str
    part: str
    known_ms: float
    predicted_ms: float
    family: str = ""

    @property
    def rel_error(self) -> float:
        return self.predicted_ms / self.known_ms - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "part": self.part,
            "known_ms": self.known_ms,
            "predicted_ms": self.predicted_ms,
            "rel_error": self.rel_error,
            "family": self.family,
        }


def summarize(held: Sequence[Held]) -> dict[str, dict[str, Any]]:
    """Per part: rows, median and worst absolute % error (with the worst row's label)."""
    out: dict[str, dict[str, Any]] = {}
    for part in PART_NAMES:
        hs = [h for h in held if h.part == part]
        if not hs:
            continue
        errs = np.array([abs(h.rel_error) for h in hs])
        worst = hs[int(np.argmax(errs))]
        out[part] = {
            "n": len(hs),
            "median_abs_pct": float(np.median(errs) * 100),
            "p90_abs_pct": float(np.percentile(errs, 90) * 100),
            "worst_abs_pct": float(errs.max() * 100),
            "worst": worst.label,
        }
    return out


def leave_one_out(
    rows: Sequence[KnownRow],
    profile: Profile,
    fit: Callable[[Sequence[KnownRow], Profile], Fit] = fit_rows,
) -> list[Held]:
    """Refit without each row and predict it (a row's own number never predicts it)."""
    rows = list(rows)
    out = []
    for i, r in enumerate(rows):
        f = fit(rows[:i] + rows[i + 1 :], profile)
        out.append(Held(r.label, r.part, r.known_ms, f.predict_row(r, profile), r.family))
    return out


def held_out_family(rows: Sequence[KnownRow], profile: Profile, family: str) -> list[Held]:
    """Fit without every row of ``family`` (encoder rows and TTFT rows using it), predict them."""
    train = [r for r in rows if r.family != family]
    test = [r for r in rows if r.family == family]
    f = fit_rows(train, profile)
    return [Held(r.label, r.part, r.known_ms, f.predict_row(r, profile), r.family) for r in test]


def format_summary(summary: dict[str, dict[str, Any]], what: str) -> list[str]:
    lines = []
    for part, s in summary.items():
        lines.append(
            f"  {what} {part:8s} n={s['n']:3d}  median |err| {s['median_abs_pct']:5.1f}%  "
            f"p90 {s['p90_abs_pct']:5.1f}%  worst {s['worst_abs_pct']:6.1f}% ({s['worst']})"
        )
    return lines
