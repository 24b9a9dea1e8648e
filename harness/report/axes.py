"""Log axes a reader can read off a static PNG: every tick labelled with its unit.

Plotly's default log axis labels the decades and writes the ticks between them as bare
digits (``5 6 7 8 9 10k 2 3 4``, where "2" means 20,000 ms). :func:`log_axis` instead puts
explicit ticks at 1-2-5 (or denser, for a narrow range) steps of each decade, each labelled
with its value and unit (``50 ms``, ``200 ms``, ``1 s``, ``2 s``), draws a gridline at every
labelled tick and a fainter one at every integer multiple of the decade in between, and fixes
the range so the labelled ticks are known in advance. Pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

#: mantissas of the labelled ticks, densest first, by the decades the range spans
_STEPS = ((1.3, (1, 1.5, 2, 3, 4, 5, 7)), (2.5, (1, 2, 3, 5)), (math.inf, (1, 2, 5)))
GRID = "#d0d0d0"
MINOR_GRID = "#efefef"


def fmt_tick(v: float, unit: str) -> str:
    """``v`` (in ``unit``) as a tick label: ``0.5 ms``, ``200 ms``, ``1 s``, ``1.5 s``; tokens plain."""
    if unit == "ms" and v >= 1000:
        v, unit = v / 1000, "s"
    text = f"{v:.3g}" if v < 1000 else f"{v:,.0f}"
    if "e" in text:  # 3 significant digits of a number >= 1000 after the s conversion
        text = f"{v:,.0f}"
    return f"{text} {unit}".strip()


def _finite_positive(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f) and f > 0:
            out.append(f)
    return out


def log_ticks(lo: float, hi: float) -> tuple[list[float], list[float]]:
    """Labelled ticks (1-2-5 per decade, denser for a narrow range) and minor ticks (1..9) in [lo, hi]."""
    decades = math.log10(hi / lo)
    mantissas = next(m for limit, m in _STEPS if decades <= limit)
    major, minor = [], []
    for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        base = 10.0**e
        major += [round(m * base, 12) for m in mantissas if lo <= m * base <= hi]
        minor += [round(m * base, 12) for m in range(1, 10) if lo <= m * base <= hi]
    return major, [v for v in minor if v not in major]


def _linear_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    raw = (hi - lo) / n
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step) + 1)]


def log_axis(
    values: Iterable[Any], unit: str = "ms", title: str | None = None, pad: float = 1.12
) -> dict[str, Any]:
    """A plotly axis dict (``type: log``) over ``values`` with every tick labelled in ``unit``.

    ``unit``: ``"ms"`` (labels switch to ``s`` from 1000 ms) or ``""`` (plain numbers, e.g.
    tokens). ``pad`` widens the range by that factor on each side (room for markers and labels).
    """
    vals = _finite_positive(values)
    axis: dict[str, Any] = {"type": "log", "showgrid": True, "gridcolor": GRID, "gridwidth": 1}
    if title is not None:
        axis["title"] = {"text": title}
    if not vals:
        return axis
    lo, hi = min(vals) / pad, max(vals) * pad
    major, minor = log_ticks(lo, hi)
    if (
        len(major) < 3
    ):  # a narrow range (less than ~a third of a decade): evenly spaced round values
        major = _linear_ticks(lo, hi)
        minor = []
    axis.update(
        range=[math.log10(lo), math.log10(hi)],
        tickmode="array",
        tickvals=major,
        ticktext=[fmt_tick(v, unit) for v in major],
        minor={
            "tickmode": "array",
            "tickvals": minor,
            "showgrid": True,
            "gridcolor": MINOR_GRID,
            "ticks": "",
        },
    )
    return axis
