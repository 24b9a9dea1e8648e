"""Regression statistics: is a candidate slower than its baseline, for real?

Pure functions (arrays and tables in, dataclasses out, no I/O), shared by
``vlm-pareto compare``, ``vlm-pareto nightly`` and ``scripts/noise_study.py``, split by concern:

- :mod:`.samples` -- two samples: Mann-Whitney U + ratio of medians with its bootstrap CI,
  the verdict rule, and the like-with-like check;
- :mod:`.tables` -- tables of measurements (store rows, exports) compared key by key;
- :mod:`.history` -- the nightly case: each run against a window of previous runs, with a
  2-night confirmation, and the nightly job's result types;
- :mod:`.steps` -- where a level shift began (change points of per-run medians);
- :mod:`.noise` -- the A/A noise study (does it cry wolf?).

See :mod:`.samples` for the statistics and their defaults.
"""

from __future__ import annotations

from harness.compare.history import (  # noqa: F401
    HistoryStep,
    KeyHistory,
    NightlyResult,
    RunInfo,
    history_verdicts,
    night_to_night_margin,
)
from harness.compare.noise import (  # noqa: F401
    NoiseStudy,
    RateEstimate,
    noise_study,
    wilson_interval,
)
from harness.compare.samples import (  # noqa: F401
    CONFIRM_RUNS,
    CONTEXT_FIELDS,
    DEFAULT_ALPHA,
    DEFAULT_NOISE_QUANTILE,
    DEFAULT_THRESHOLD,
    DEFAULT_WINDOW,
    KEY_FIELDS,
    MIN_SAMPLES,
    SampleComparison,
    Status,
    Verdict,
    check_comparable,
    check_sample_sizes,
    classify,
    compare_samples,
    differing_fields,
    mann_whitney_p,
    ratio_of_medians_ci,
)
from harness.compare.steps import (  # noqa: F401
    change_points,
    last_shift,
)
from harness.compare.tables import (  # noqa: F401
    KeyComparison,
    TableComparison,
    compare_tables,
    group_rows,
    key_label,
)

__all__ = [
    "CONFIRM_RUNS",
    "CONTEXT_FIELDS",
    "DEFAULT_ALPHA",
    "DEFAULT_NOISE_QUANTILE",
    "DEFAULT_THRESHOLD",
    "DEFAULT_WINDOW",
    "HistoryStep",
    "KEY_FIELDS",
    "KeyComparison",
    "KeyHistory",
    "MIN_SAMPLES",
    "NightlyResult",
    "NoiseStudy",
    "RateEstimate",
    "RunInfo",
    "SampleComparison",
    "Status",
    "TableComparison",
    "Verdict",
    "change_points",
    "check_comparable",
    "check_sample_sizes",
    "classify",
    "compare_samples",
    "compare_tables",
    "differing_fields",
    "group_rows",
    "history_verdicts",
    "key_label",
    "last_shift",
    "mann_whitney_p",
    "night_to_night_margin",
    "noise_study",
    "ratio_of_medians_ci",
    "wilson_interval",
]
