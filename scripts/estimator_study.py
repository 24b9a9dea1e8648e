"""Which location estimator do two back-to-back quiet sweeps agree on? (docs/noise.md)

Reads stores written by ``scripts/bench_interference.py --db sqlite:///F`` and, in each, the
first two standard-protocol runs (sweeps A and B, back to back, quiet). For every measurement
key of both, it computes several estimators over the rounds' clean samples and counts the
keys on which A and B agree within +-5%. Pure reading: it measures nothing.

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


def pairs(path: str) -> list[tuple[str, Groups, Groups]]:
    """(kind, rounds of A, rounds of B) per measurement key of the store's first two runs."""
    import os

    if not os.path.isfile(path):
        print(f"estimator_study: no such file: {path}", file=sys.stderr)
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
    by_key: dict[tuple, dict[str, Groups]] = {}
    for run, *key, samples, extra in rows:
        sizes = (json.loads(extra or "{}") or {}).get("round_sizes")
        if sizes and len(sizes) >= 2:
            by_key.setdefault(tuple(key), {})[run] = _rounds(json.loads(samples), sizes)
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
    all_pairs = [p for s in args.stores for p in pairs(s)]
    if not all_pairs:
        print("no store with two standard runs of the same keys", file=sys.stderr)
        return 2
    kinds = sorted({k for k, _, _ in all_pairs})
    print(f"{len(all_pairs)} keys measured back to back, from {len(args.stores)} store(s)")
    print(f"{'estimator':36s} {'within':>8s}  " + "  ".join(f"{k:>10s}" for k in kinds))
    for name, f in ESTIMATORS.items():
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
    raise SystemExit(main())
