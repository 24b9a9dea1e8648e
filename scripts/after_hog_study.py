"""Is a workload slower for a while after a busy neighbour stops? (docs/noise.md, run 8)

Times one encoder step back to back, in this process, while a CPU hog (one busy process per
core) is switched on and off at seeded random moments by a thread of this script. Samples
that overlap the hog are counted apart; the clean ones are binned by the time since the hog
last stopped and compared, as a ratio, with those more than 2 s after it. A hog's
after-effect (caches, frequency, a host that throttles a guest after a burst) would show as
ratios above 1 in the first bins. Needs a quiet machine; it measures nothing else.

    python scripts/after_hog_study.py --encoder fastvit --resolution 128 --seconds 60
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HOG = "import time\nend = time.time() + 10\nwhile time.time() < end:\n    pass\n"
BINS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 1e9))


class Hog:
    """One busy process per core, on for 1-3 s, off for 3-5 s (seeded), from a thread."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.on = False
        self.stopped_at = -1e9
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.rng.uniform(3.0, 5.0)):
            procs = [
                subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(os.cpu_count() or 1)
            ]
            self.on = True
            self.stop.wait(self.rng.uniform(1.0, 3.0))
            for p in procs:
                p.kill()
            for p in procs:
                p.wait()
            self.on = False
            self.stopped_at = time.perf_counter()

    def __enter__(self) -> Hog:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default="fastvit", help="zoo encoder (default fastvit)")
    ap.add_argument("--resolution", type=int, default=128, help="image side (default 128)")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to time (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the hog's on/off moments")
    args = ap.parse_args(argv)
    if not 10 <= args.seconds <= 3600:
        print("after_hog_study: --seconds must be in [10, 3600]", file=sys.stderr)
        return 2

    import torch

    from harness.backends.torch.encoder import build_encoder_step
    from harness.errors import UserError

    try:
        built = build_encoder_step(args.encoder, args.resolution)
    except UserError as e:
        print(f"after_hog_study: {e}", file=sys.stderr)
        return 2
    rows = []
    with torch.inference_mode(), Hog(args.seed) as hog:
        for _ in range(5):
            built.step()
        t_end = time.perf_counter() + args.seconds
        while time.perf_counter() < t_end:
            on0, since = hog.on, time.perf_counter() - hog.stopped_at
            c0, t0 = time.process_time(), time.perf_counter()
            built.step()
            t1, c1 = time.perf_counter(), time.process_time()
            rows.append((t1 - t0, c1 - c0, on0 or hog.on, since))
    a = np.array(rows, dtype=float)
    clean, during = a[a[:, 2] == 0], a[a[:, 2] == 1]
    later = clean[clean[:, 3] > 2.0]
    if len(later) == 0:
        print("after_hog_study: no clean sample more than 2 s after a hog", file=sys.stderr)
        return 1
    base = float(np.median(later[:, 0]))
    print(
        f"{args.encoder}@{args.resolution}: {len(a)} samples in {args.seconds:.0f} s; "
        f"clean samples > 2 s after a hog: median {base * 1e3:.2f} ms"
    )
    for lo, hi in BINS:
        s = clean[(clean[:, 3] >= lo) & (clean[:, 3] < hi)]
        if len(s):
            med = float(np.median(s[:, 0]))
            span = f"{lo:.2f}-{hi:.2f} s" if hi < 1e9 else f"> {lo:.2f} s"
            print(
                f"  {span:>12s} after the hog stopped: n={len(s):4d}  median {med * 1e3:8.2f} ms"
                f"  ({med / base:.2f}x)  cpu/wall {np.median(s[:, 1] / s[:, 0]):.2f}"
            )
    if len(during):
        med = float(np.median(during[:, 0]))
        print(
            f"  {'during the hog':>35s}: n={len(during):4d}  median {med * 1e3:8.2f} ms"
            f"  ({med / base:.2f}x)  cpu/wall {np.median(during[:, 1] / during[:, 0]):.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
