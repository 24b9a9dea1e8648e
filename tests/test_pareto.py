"""Pareto analysis on small fixtures with answers checked by hand or by brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.errors import UserError
from harness.pareto import (
    compare_frontiers,
    fronts_by_group,
    hypervolume_2d,
    pareto_front,
    staircase,
)


def brute_force(a: np.ndarray) -> np.ndarray:
    """Non-dominated mask of a minimisation array by definition (O(n^2))."""
    n = len(a)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if np.all(a[j] <= a[i]) and np.any(a[j] < a[i]):
                keep[i] = False
                break
    return keep


def test_default_objectives_on_a_dataframe():
    df = pd.DataFrame(
        {
            "avg5": [60.0, 62.0, 61.0, 65.0, 58.0],
            "ttft_ms": [100.0, 150.0, 200.0, 400.0, 90.0],
        }
    )
    res = pareto_front(df)
    # (61, 200) is beaten by (62, 150); the rest trade accuracy for time.
    assert res.front.tolist() == [0, 1, 3, 4]
    assert res.mask.tolist() == [True, True, False, True, True]
    assert res.excluded_nan == 0


def test_duplicates_are_all_kept_and_ties_resolved():
    pts = np.array(
        [
            [60.0, 100.0],
            [60.0, 100.0],  # exact duplicate of a front point: kept too
            [60.0, 120.0],  # same accuracy, slower: dominated
            [59.0, 100.0],  # same TTFT, less accurate: dominated
            [70.0, 300.0],
            [70.0, 300.0],
        ]
    )
    res = pareto_front(pts, (("acc", "max"), ("ttft", "min")))
    assert res.front.tolist() == [0, 1, 4, 5]


def test_nan_rows_are_excluded_and_counted():
    df = pd.DataFrame({"avg5": [np.nan, 60.0, np.nan, 50.0], "ttft_ms": [1.0, 100.0, 50.0, np.nan]})
    res = pareto_front(df)
    assert res.front.tolist() == [1]
    assert res.excluded_nan == 3


@pytest.mark.parametrize("k", [2, 3, 4])
def test_matches_brute_force_on_random_integer_grids(k):
    rng = np.random.default_rng(k)
    for _ in range(150):
        n = int(rng.integers(0, 35))
        a = rng.integers(0, 5, size=(n, k)).astype(float)
        res = pareto_front(a, [(f"c{j}", "min") for j in range(k)])
        assert res.mask.tolist() == brute_force(a).tolist()


def test_mixed_directions_three_objectives():
    df = pd.DataFrame(
        {
            "avg5": [60, 60, 62, 59],
            "ttft_ms": [100, 100, 150, 100],
            "tokens": [64, 256, 64, 16],
        }
    )
    res = pareto_front(df, [("avg5", "max"), ("ttft_ms", "min"), ("tokens", "min")])
    # Row 1 is row 0 with more tokens; row 3 is less accurate but uses fewest tokens.
    assert res.front.tolist() == [0, 2, 3]


def test_bad_objectives_are_user_errors():
    df = pd.DataFrame({"avg5": [1.0], "ttft_ms": [1.0]})
    with pytest.raises(UserError, match="did you mean 'ttft_ms'"):
        pareto_front(df, [("avg5", "max"), ("ttft", "min")])
    with pytest.raises(UserError, match="direction"):
        pareto_front(df, [("avg5", "up"), ("ttft_ms", "min")])
    with pytest.raises(UserError, match="at least two"):
        pareto_front(df, [("avg5", "max")])


def test_fronts_by_group_and_overall():
    df = pd.DataFrame(
        {
            "encoder": ["a", "a", "a", "b", "b"],
            "avg5": [60, 64, 62, 61, 66],
            "ttft_ms": [100, 200, 300, 90, 500],
        }
    )
    gf = fronts_by_group(df)
    assert gf.groups["a"].front.tolist() == [0, 1]
    assert gf.groups["b"].front.tolist() == [3, 4]
    assert gf.overall.front.tolist() == [1, 3, 4]  # (60, 100) loses to b's (61, 90)


def test_staircase_lookup():
    s = staircase(np.array([60.0, 65.0, 62.0, 50.0]), np.array([100.0, 400.0, 200.0, 300.0]))
    assert s.ttft.tolist() == [100.0, 200.0, 400.0]
    assert s.best_accuracy([50.0, 100.0, 250.0, 1000.0]).tolist()[1:] == [60.0, 62.0, 65.0]
    assert np.isnan(s.best_accuracy(50.0))
    assert s.ttft_needed([59.0, 61.0, 65.0]).tolist() == [100.0, 200.0, 400.0]
    assert np.isnan(s.ttft_needed(66.0))


def test_hypervolume_2d_exact():
    pts = np.array([[3.0, 1.0], [2.0, 0.5], [1.0, 0.2], [0.5, 0.9]])  # (acc max, ttft min)
    ref = (0.0, 2.0)
    # Slabs over accuracy: [0,1]x(2-0.2) + [1,2]x(2-0.5) + [2,3]x(2-1)
    assert hypervolume_2d(pts, ref) == pytest.approx(1.8 + 1.5 + 1.0)
    assert hypervolume_2d(np.array([[-1.0, 3.0]]), ref) == 0.0


def test_compare_frontiers_known_speedup_and_gain():
    # B (baseline) is A shifted 3x slower and 2 points less accurate at each step.
    a = pd.DataFrame({"avg5": [60.0, 62.0, 64.0], "ttft_ms": [100.0, 200.0, 400.0]})
    b = pd.DataFrame({"avg5": [60.0, 62.0, 64.0], "ttft_ms": [300.0, 600.0, 1200.0]})
    c = compare_frontiers(a, b)
    assert c.speedup_best == pytest.approx(3.0)
    assert c.speedup_median == pytest.approx(3.0)
    assert c.accuracy_overlap == (60.0, 64.0)
    assert c.ttft_overlap_ms == (300.0, 400.0)
    # Between 300 and 400 ms, A offers 62 and B offers 60: gain 2 everywhere in the overlap
    # except at exactly 400 ms where A reaches 64.
    assert c.gain_median == pytest.approx(2.0)
    assert c.gain_best == pytest.approx(4.0)
    assert c.hypervolume_a > c.hypervolume_b > 0
    assert c.reference == (60.0, 1200.0)
    swapped = compare_frontiers(b, a)
    assert swapped.speedup_best == pytest.approx(1 / 3)
    assert swapped.hypervolume_a == pytest.approx(c.hypervolume_b)


def test_compare_frontiers_without_overlap():
    a = np.array([[70.0, 10.0], [71.0, 20.0]])
    b = np.array([[50.0, 1000.0], [55.0, 2000.0]])
    c = compare_frontiers(a, b)
    assert c.speedup_best is None and c.gain_best is None
    assert len(c.notes) == 2
    with pytest.raises(UserError):
        compare_frontiers(a, np.array([[np.nan, 1.0]]))


def test_one_point_frontiers_at_the_same_ttft_compare_without_crashing():
    """10 ** log10(t) < t for this t: the TTFT grid must not fall off a one-point staircase
    (`vlm-pareto search --report` crashed with "All-NaN slice" on such a pair)."""
    import math

    t = 100.7250362518126
    assert 10 ** math.log10(t) < t
    res = compare_frontiers(np.array([[60.0, t]]), np.array([[59.0, t]]))
    assert res.gain_best == pytest.approx(1.0)
