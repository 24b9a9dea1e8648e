"""Log axes: every tick labelled with its unit, gridlines at the labelled ticks, ranges known."""

from __future__ import annotations

import math
import re

import pytest

from harness.report.axes import fmt_tick, log_axis, log_ticks

UNIT_LABEL = re.compile(r"^\d[\d,.]* (ms|s)$")


@pytest.mark.parametrize(
    "lo,hi", [(3800, 52000), (150, 1400), (3, 400), (200, 260), (0.3, 5), (1, 1e5), (4000, 12000)]
)
def test_every_tick_is_labelled_with_a_unit_and_inside_the_range(lo, hi):
    ax = log_axis([lo, hi], "ms", "TTFT")
    assert ax["type"] == "log" and ax["tickmode"] == "array" and ax["showgrid"]
    assert len(ax["tickvals"]) >= 3
    assert len(ax["ticktext"]) == len(ax["tickvals"])
    assert all(UNIT_LABEL.match(t) for t in ax["ticktext"]), ax["ticktext"]
    r0, r1 = ax["range"]
    assert r0 <= math.log10(lo) and r1 >= math.log10(hi)
    assert all(r0 <= math.log10(v) <= r1 for v in ax["tickvals"] + ax["minor"]["tickvals"])
    # no two labelled ticks more than a factor 2.5 apart: a value is readable anywhere
    vals = ax["tickvals"]
    assert all(b / a <= 2.5 for a, b in zip(vals, vals[1:], strict=False))
    assert ax["minor"]["showgrid"] and not set(vals) & set(ax["minor"]["tickvals"])


def test_labels_switch_to_seconds_and_read_as_values():
    assert [fmt_tick(v, "ms") for v in (0.5, 20, 200, 1000, 1500, 20000, 100000)] == [
        "0.5 ms",
        "20 ms",
        "200 ms",
        "1 s",
        "1.5 s",
        "20 s",
        "100 s",
    ]
    assert fmt_tick(256, "") == "256"
    ax = log_axis([3800, 52000], "ms")
    # the axis read "5 6 7 8 9 10k 2 3 4": now every label is a value with a unit
    assert ax["ticktext"] == ["4 s", "5 s", "7 s", "10 s", "15 s", "20 s", "30 s", "40 s", "50 s"]


def test_ticks_follow_1_2_5_per_decade_for_wide_ranges():
    major, minor = log_ticks(1, 1000)
    assert major == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert 3 in minor and 9 in minor and 10 not in minor


def test_report_figures_use_labelled_log_axes():
    from harness.points import load_points
    from harness.report.figures import build_figures
    from harness.report.summary import analyse, with_defaults

    res = load_points(source="paper", recipe="llava-1.5")
    df = with_defaults(res.points)
    df["_row"] = range(len(df))
    specs, _ = build_figures(df, analyse(df))
    log_axes = [
        ax
        for s in specs
        for name, ax in s.figure.layout.to_plotly_json().items()
        if name.startswith(("xaxis", "yaxis")) and ax.get("type") == "log"
    ]
    assert len(log_axes) >= 3  # accuracy vs TTFT, encoder latency, tokens
    for ax in log_axes:
        assert ax["tickmode"] == "array" and ax["ticktext"] and ax["showgrid"]
    acc = specs[0].figure.layout.xaxis
    assert all(UNIT_LABEL.match(t) for t in acc.ticktext)
