"""Does the cost model, calibrated on this machine's measurements of some encoder families,
predict a family it has never seen?

1. Measures a small encoder set on this machine with the ``quick`` protocol (a ``vlm-pareto
   sweep`` of the ``quick`` preset into its own store; stored measurements are reused when
   run again with the same ``--db``): FastViTHD, FastViT, ConvNeXt-L and ViT-L/14 at three
   resolutions each (``--fast``: smaller resolutions).
2. For every family, fits the ``host-cpu`` profile on the *other* families' encoder rows
   (robust NNLS, harness/predict/calibrate.py) and predicts the held-out family's rows.
3. Prints per family the median and worst absolute % error, and the median over all
   held-out predictions (target in docs/predict.md: <= 20%), plus leave-one-out over all rows.

    python scripts/predict_host_validation.py --fast          # ~3 min on 2 idle cores
    python scripts/predict_host_validation.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

FULL = {
    "fastvithd": [256, 512, 768],
    "fastvit": [256, 512, 768],
    "convnext_l": [256, 320, 384, 512],
    "vit_l_14": [224, 280, 336, 448],
}
FAST = {
    "fastvithd": [256, 384, 512],
    "fastvit": [256, 384, 512],
    "convnext_l": [192, 256, 320, 384],
    "vit_l_14": [168, 224, 280, 336],
}
NAMES = {"convnext_l": "convnext-l", "vit_l_14": "vit-l-14"}


def measure(db: str, grid: dict[str, list[int]]) -> int:
    ov = []
    for label, res in grid.items():
        if label in NAMES:
            ov.append(f"+encoder@encoders.{label}={NAMES[label]}")
        ov.append(f"encoders.{label}.resolutions=[{','.join(map(str, res))}]")
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "--db",
        db,
        "sweep",
        "--config-name",
        "quick",
        *ov,
        "report=false",
        "run_id=predict-host-validation",
    ]
    print("measuring:", " ".join(cmd[2:]), file=sys.stderr)
    return subprocess.call(cmd, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--db", default="results/predict_host.db", help="store for the measurements (reused)"
    )
    ap.add_argument("--fast", action="store_true", help="smaller resolutions (minutes on 2 cores)")
    ap.add_argument("--no-measure", action="store_true", help="only validate what the store holds")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    os.environ["VLM_PARETO_DB"] = args.db
    if not args.no_measure:
        rc = measure(args.db, FAST if args.fast else FULL)
        if rc not in (0, 1):
            print(f"the sweep failed (exit {rc})", file=sys.stderr)
            return rc

    from harness.predict.profiles import get_profile
    from harness.predict.rows import store_known_rows
    from harness.predict.validate import held_out_family, leave_one_out, summarize
    from harness.store import Store

    profile = get_profile("host-cpu")
    rows = [r for r in store_known_rows(Store(args.db)) if r.part == "encoder"]
    if not rows:
        print(f"no encoder measurements of this machine in {args.db}", file=sys.stderr)
        return 1
    fams = sorted({r.family for r in rows})
    out: dict[str, object] = {"rows": len(rows), "families": {}}
    every = []
    from harness.errors import UserError

    for fam in fams:
        try:
            held = held_out_family(rows, profile, fam)
        except UserError as e:
            print(f"cannot hold out {fam}: {e}", file=sys.stderr)
            continue
        every += held
        s = summarize(held).get("encoder", {})
        out["families"][fam] = {"summary": s, "rows": [h.to_dict() for h in held]}  # type: ignore[index]
    errs = [abs(h.rel_error) * 100 for h in every]
    out["held_out_median_abs_pct"] = float(np.median(errs)) if errs else None
    out["held_out_worst_abs_pct"] = float(max(errs)) if errs else None
    try:
        loo = summarize(leave_one_out(rows, profile)).get("encoder", {})
    except UserError:
        loo = {}
    out["leave_one_out"] = loo
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"host-cpu, encoder rows measured here: {len(rows)} ({', '.join(fams)})")
    for fam in out["families"]:  # type: ignore[attr-defined]
        s = out["families"][fam]["summary"]  # type: ignore[index]
        print(
            f"  held out {fam:10s}: median |err| {s['median_abs_pct']:5.1f}%, worst {s['worst_abs_pct']:5.1f}% ({s['worst']})"
        )
        for h in out["families"][fam]["rows"]:  # type: ignore[index]
            print(
                f"      {h['label']:32s} measured {h['known_ms']:8.1f} ms, predicted {h['predicted_ms']:8.1f} ms "
                f"({h['rel_error'] * 100:+.0f}%)"
            )
    if errs:
        print(
            f"held-out-family median |err| over all {len(errs)} predictions: {out['held_out_median_abs_pct']:.1f}% "
            f"(worst {out['held_out_worst_abs_pct']:.1f}%); target <= 20%"
        )
    if loo:
        print(
            f"leave-one-out over all rows: median |err| {loo['median_abs_pct']:.1f}%, worst {loo['worst_abs_pct']:.1f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
