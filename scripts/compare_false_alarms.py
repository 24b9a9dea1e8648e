"""Does ``vlm-pareto compare`` cry wolf on unchanged code, and does it still catch a slowdown?

Reads stores written by ``scripts/bench_interference.py`` (or any store whose first two runs
with the given protocol are the same sweep run back to back, unchanged code). For each such
pair it compares run 2 against run 1 key by key, as ``compare`` does (canary rows, contended
keys, the run-to-run term), and counts

* **false verdicts**: a failing regression (or an improvement) where nothing changed;
* **detections**: the candidate's latencies multiplied by a synthetic slowdown (1.3x, 1.5x,
  2x, applied to every key) and called a failing regression.

under three policies: ``shipped`` (the canary divides only beyond its noise band
``harness.canary.SPEED_BAND``, plus the run-to-run term at ``--sd``), ``canary-always``
(the previous default: always divide by the canary, samples-only intervals) and ``raw``
(no canary, samples-only intervals). Pure analysis of stored samples: it times nothing.

    python scripts/compare_false_alarms.py /tmp/bench_interference_*/store.db
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from typing import Any

SLOWDOWNS = (1.0, 1.3, 1.5, 2.0)


def first_pair(
    path: str, protocol: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """Rows of the first two runs of ``path`` measured with ``protocol`` (None if fewer)."""
    from harness.store import Store

    if not os.path.isfile(path):
        what = "a directory, not a store file" if os.path.isdir(path) else "no such file"
        print(f"compare_false_alarms: {what}: {path}", file=sys.stderr)
        raise SystemExit(2)
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        runs = [
            r[0]
            for r in con.execute(
                "select distinct run_id from measurements where protocol = ? order by run_id",
                (protocol,),
            )
        ][:2]
        con.close()
    except sqlite3.DatabaseError as e:
        print(f"compare_false_alarms: {path} is not a vlm-pareto store ({e})", file=sys.stderr)
        raise SystemExit(2) from None
    if len(runs) < 2:
        return None
    st = Store("sqlite:///" + os.path.abspath(path), readonly=True)
    a, b = (st.measurements([r]).to_dict("records") for r in runs)
    return a, b


def verdicts(
    base: list[dict[str, Any]], cand: list[dict[str, Any]], policy: str, sd: float, slow: float
) -> list[str]:
    """One verdict per compared key: 'regression', 'improvement', '~' or 'contended' (a key
    that is never a failing regression: its measurement could not get clean samples)."""
    from harness.canary import normalise_pair, scale_rows, split_canary
    from harness.compare import compare_tables
    from harness.interference import contended_labels

    rows, can = split_canary(cand)
    cand = scale_rows(rows, 1.0 / slow) + can
    band = 1.0 if policy == "canary-always" else None
    if policy == "raw":
        b, c, _ = normalise_pair(base, cand, normalise=False)
    elif band is not None:
        b, c, _ = normalise_pair(base, cand, band=band)
    else:
        b, c, _ = normalise_pair(base, cand)
    unreliable = contended_labels(b) | contended_labels(c)
    cmp = compare_tables(b, c, n_boot=500, run_sd=sd if policy == "shipped" else 0.0)
    out = []
    for r in cmp.rows:
        v = r.result.verdict
        out.append("contended" if r.label in unreliable else v)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stores", nargs="+", help="store files (sqlite) with back-to-back runs")
    ap.add_argument(
        "--protocol", default="standard", help="protocol of the runs (default standard)"
    )
    ap.add_argument(
        "--sd",
        type=float,
        default=None,
        help="run-to-run sd of log median for the shipped policy (default: harness.drift.DEFAULT_SD)",
    )
    args = ap.parse_args(argv)
    from harness.drift import DEFAULT_SD

    sd = DEFAULT_SD if args.sd is None else args.sd
    if not (0.0 <= sd <= 0.5):
        print(f"compare_false_alarms: --sd must be in [0, 0.5], got {sd}", file=sys.stderr)
        return 2
    pairs = []
    for path in dict.fromkeys(os.path.realpath(p) for p in args.stores):
        pair = first_pair(path, args.protocol)
        if pair is not None:
            pairs.append(pair)
    if not pairs:
        print(
            f"compare_false_alarms: no store with two runs of protocol {args.protocol!r}",
            file=sys.stderr,
        )
        return 2
    print(f"{len(pairs)} back-to-back pair(s); shipped policy: canary band, run-to-run sd {sd:g}")
    print("regression / improvement: share of the keys that are not contended")
    print(
        f"{'policy':14s} {'slowdown':>8s} {'keys':>5s} {'contended':>10s} {'regression':>11s} "
        f"{'improvement':>12s}"
    )
    from harness.errors import UserError

    for policy in ("shipped", "canary-always", "raw"):
        for slow in SLOWDOWNS:
            try:
                vs = [v for a, b in pairs for v in verdicts(a, b, policy, sd, slow)]
            except UserError as e:  # e.g. a key with too few samples to compare
                print(f"compare_false_alarms: {e}", file=sys.stderr)
                return 2
            n, bad = len(vs), vs.count("contended")
            m = max(n - bad, 1)
            print(
                f"{policy:14s} {slow:8.1f} {n:5d} {bad:10d} {vs.count('regression') / m:11.0%} "
                f"{vs.count('improvement') / m:12.0%}"
            )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        sys.exit(0)
