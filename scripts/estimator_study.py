"""Which location estimator do two back-to-back quiet sweeps agree on? (docs/noise.md)

Reads stores written by ``scripts/bench_interference.py --db sqlite:///F`` and, in each, the
first two standard-protocol runs (sweeps A and B, back to back, quiet). For every measurement
key of both, it computes several estimators over the rounds' clean samples and counts the
keys on which A and B agree within +-5%. It also tries the machine-speed canary as a
normaliser: each round's samples divided by the canary checkpoint taken just before that round,
and the pooled median divided by the run's median canary. Pure reading: it measures nothing.

    python scripts/estimator_study.py /tmp/bench_interference_*/store.db
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Callable

import numpy as np

Groups = list[np.ndarray]
#: One run's rounds three ways: as stored, each round over the canary checkpoint before it, and
#: all over the run's median canary.
Views = tuple[Groups, Groups, Groups]

ESTIMATORS: dict[str, Callable[[Groups], float]] = {
    "median of pooled samples (stored)": lambda g: float(np.median(np.concatenate(g))),
    "median of round medians": lambda g: float(np.median([np.median(x) for x in g])),
    "mean of round medians": lambda g: float(np.mean([np.median(x) for x in g])),
    "lowest round median": lambda g: float(min(np.median(x) for x in g)),
    "25th percentile": lambda g: float(np.percentile(np.concatenate(g), 25)),
    "5th percentile": lambda g: float(np.percentile(np.concatenate(g), 5)),
    "minimum": lambda g: float(np.min(np.concatenate(g))),
}


def _rounds(samples: list[float], sizes: list[int]) -> Groups:
    out, i = [], 0
    for n in sizes:
        out.append(np.asarray(samples[i : i + n], dtype=float))
        i += n
    return out


def pairs(path: str) -> list[tuple[str, Views, Views]]:
    """(kind, rounds of A, rounds of B) per measurement key of the store's first two runs."""
    import os

    if not os.path.isfile(path):
        what = "a directory, not a store file" if os.path.isdir(path) else "no such file"
        print(f"estimator_study: {what}: {path}", file=sys.stderr)
        raise SystemExit(2)
    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "select run_id, kind, name, resolution, tokens, prompt_tokens, in_dim, samples_ms, extra "
            "from measurements where protocol = 'standard' and status = 'ok' and kind != 'canary'"
        ).fetchall()
    except sqlite3.DatabaseError as e:
        print(f"estimator_study: {path} is not a vlm-pareto store ({e})", file=sys.stderr)
        raise SystemExit(2) from None
    canary: dict[str, list[float]] = {}
    for run, extra in con.execute("select run_id, extra from measurements where kind = 'canary'"):
        points = (json.loads(extra or "{}").get("canary") or {}).get("checkpoints") or []
        canary[run] = [float(c["median_ms"]) for c in points]
    by_key: dict[tuple, dict[str, Views]] = {}
    for run, *key, samples, extra in rows:
        ex = json.loads(extra or "{}") or {}
        sizes = ex.get("round_sizes")
        if sizes and len(sizes) >= 2:
            groups = _rounds(json.loads(samples), sizes)
            index = ex.get("round_index") or list(range(len(groups)))
            c = canary.get(run) or [1.0]
            # checkpoint i is taken before round i (0: the start), so it is each round's own
            scaled = [g / c[min(i, len(c) - 1)] for g, i in zip(groups, index, strict=False)]
            run_scaled = [g / float(np.median(c)) for g in groups]
            by_key.setdefault(tuple(key), {})[run] = (groups, scaled, run_scaled)
    runs = sorted({r for v in by_key.values() for r in v})[:2]
    if len(runs) < 2:
        return []
    a, b = runs
    return [(k[0], v[a], v[b]) for k, v in by_key.items() if a in v and b in v]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stores", nargs="+", help="SQLite files written by bench_interference.py")
    ap.add_argument("--within", type=float, default=0.05, help="agreement band (default 0.05)")
    args = ap.parse_args(argv)
    if not 0.0 < args.within < 1.0:  # NaN too
        print(f"estimator_study: --within must be in (0, 1), got {args.within}", file=sys.stderr)
        return 2
    import os

    stores = list(dict.fromkeys(os.path.realpath(s) for s in args.stores))  # each once
    all_pairs = [p for s in stores for p in pairs(s)]
    if not all_pairs:
        print("no store with two standard runs of the same keys", file=sys.stderr)
        return 2
    kinds = sorted({k for k, _, _ in all_pairs})
    print(f"{len(all_pairs)} keys measured back to back, from {len(stores)} store(s)")
    print(f"{'estimator':36s} {'within':>8s}  " + "  ".join(f"{k:>10s}" for k in kinds))
    median = ESTIMATORS["median of pooled samples (stored)"]

    def stored(f: Callable[[Groups], float]) -> Callable[[Views], float]:
        return lambda v: f(v[0])

    rows: list[tuple[str, Callable[[Views], float]]] = [
        (name, stored(f)) for name, f in ESTIMATORS.items()
    ]
    rows += [
        ("median, rounds / their canary", lambda v: median(v[1])),
        ("median / the run's canary", lambda v: median(v[2])),
    ]
    for name, f in rows:
        ok = {k: [0, 0] for k in kinds}
        for kind, a, b in all_pairs:
            ok[kind][0] += abs(f(b) / f(a) - 1.0) <= args.within
            ok[kind][1] += 1
        hit = sum(v[0] for v in ok.values())
        print(
            f"{name:36s} {hit / len(all_pairs):8.0%}  "
            + "  ".join(f"{ok[k][0]:>5d}/{ok[k][1]:<4d}" for k in kinds)
        )
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BrokenPipeError:  # | head
        sys.stderr.close()
        raise SystemExit(0) from None
