#!/usr/bin/env python
"""Trustworthy numbers on a noisy machine: the numbers of docs/noise.md, measured here.

Four studies, each printing its number against its target:

1. **interference**: sweep A runs on a quiet machine; sweep H runs the same grid while this
   script starts and stops a CPU hog (one busy process per core) at random moments (seeded,
   bounded: it never outlives the sweep). A point "escapes" when its median in H is more than
   10% from A's and H does not flag it contended. Target: 0 escapes, >= 90% of points clean.
2. **back to back**: sweep B repeats sweep A at once. Target: the 95% CIs overlap for >= 95%
   of points (any protocol); with the standard protocol >= 95% of medians agree within +-5%.
3. **layer sampling**: Qwen2-0.5B, k=4 of 24 layers at 256 visual tokens, full model vs
   sampled estimate interleaved over >= 5 rounds. Target: median error within +-5%.
4. **protocol vs torch.utils.benchmark**: the prefill benchmark's protocol/Timer median ratio,
   pairs interleaved (scripts/bench_prefill.py). Target: within 3% of 1.

These need a quiet machine (nothing else running). ``--fast`` (about 6 minutes on 2 idle cores)
uses the quick preset's grid; the default uses the nightly grid.

    python scripts/bench_interference.py --fast
    python scripts/bench_interference.py                      # nightly grid, standard protocol
    python scripts/bench_interference.py --only interference  # one study
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOG = "import time\nend = time.time() + {limit}\nwhile time.time() < end:\n    pass\n"
STUDIES = ("interference", "backtoback", "sampling", "timer")


class RandomHog:
    """Busy processes (one per core) switched on and off at random moments, in a thread."""

    def __init__(
        self, seed: int, on_s: tuple[float, float], off_s: tuple[float, float], limit_s: float
    ) -> None:
        self.rng = random.Random(seed)
        self.on_s, self.off_s, self.limit_s = on_s, off_s, limit_s
        self.stop = threading.Event()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.busy_s = 0.0
        self.switches = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _start(self, limit: float) -> None:
        n = os.cpu_count() or 1
        code = HOG.format(limit=max(1.0, limit))
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]

    def _kill(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []

    def _run(self) -> None:
        t_end = time.monotonic() + self.limit_s
        while not self.stop.is_set() and time.monotonic() < t_end:
            if self.stop.wait(self.rng.uniform(*self.off_s)):
                break
            on = self.rng.uniform(*self.on_s)
            self._start(on + 1.0)  # each hog process also ends by itself
            self.switches += 1
            t0 = time.monotonic()
            self.stop.wait(on)
            self._kill()
            self.busy_s += time.monotonic() - t0

    def __enter__(self) -> RandomHog:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._kill()


def sweep(preset: str, protocol: str, db: str, overrides: list[str]) -> tuple[str, float]:
    from harness.sweep.preset import run_preset

    t0 = time.perf_counter()
    rid = run_preset(preset, protocol=protocol, rounds=1, db=db, overrides=overrides)
    return rid, time.perf_counter() - t0


def preflight(args: argparse.Namespace, preset: str, protocols: list[str]) -> None:
    """Every input checked before anything waits or measures (UserError, one line)."""
    from harness.errors import UserError
    from harness.protocol import get_protocol
    from harness.sweep.configs import compose_sweep

    compose_sweep(preset, [])
    if not protocols:
        raise UserError("--protocols names no protocol")
    for name in protocols:
        get_protocol(name)
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0, got {args.threads}")
    if not args.settle_s >= 0:
        raise UserError(f"--settle-s must be >= 0, got {args.settle_s}")
    if args.json:
        folder = Path(args.json).resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UserError(f"--json: cannot write into {folder}")


def settle(limit_s: float, below: float = 0.3) -> float:
    """Wait (at most ``limit_s``) until the 1-minute load average is below ``below``."""
    t0 = time.perf_counter()
    if not hasattr(os, "getloadavg") or limit_s <= 0:
        return 0.0
    while os.getloadavg()[0] >= below and time.perf_counter() - t0 < limit_s:
        time.sleep(2.0)
    waited = time.perf_counter() - t0
    print(f"# settled {waited:.0f} s: load {os.getloadavg()[0]:.2f}", flush=True)
    return waited


def rows_by_key(db: str, run_id: str) -> dict[str, dict[str, Any]]:
    from harness.compare import key_label
    from harness.store import Store

    out = {}
    for r in Store(db).measurement_rows([run_id], status="ok"):
        if r["kind"] != "canary":  # projectors of one LLM differ by encoder width
            out[key_label(r)] = r  # projector labels name their width and tokens
    return out


def canary_ms(db: str, run_id: str) -> float | None:
    from harness.store import Store

    rows = Store(db).measurement_rows([run_id], kind="canary", status="ok")
    return float(rows[0]["median_ms"]) if rows else None


def study_interference(
    a: dict[str, dict], h: dict[str, dict], b: dict[str, dict] | None = None
) -> dict[str, Any]:
    """Points of the hog sweep ``h`` more than 10% from quiet sweep ``a`` and not flagged
    contended (``escapes``). With the second quiet sweep ``b`` (back to back with ``a``) also
    ``escapes_both``: more than 10% from *both* quiet sweeps, i.e. outside what two quiet runs
    already disagree by, and ``escapes_slower``: of those, the ones the hog made slower."""
    from harness.interference import verdict_of

    lines, escapes, both, slower, clean = [], 0, 0, 0, 0
    for label in sorted(set(a) & set(h)):
        ra, rh = a[label], h[label]
        ratio = rh["median_ms"] / ra["median_ms"]
        v = verdict_of(rh["extra"])
        off = abs(ratio - 1) > 0.10
        esc = off and v != "contended"
        quiet = [ra["median_ms"]] + ([b[label]["median_ms"]] if b and label in b else [])
        esc_both = v != "contended" and all(abs(rh["median_ms"] / q - 1) > 0.10 for q in quiet)
        escapes += esc
        both += esc_both
        slower += esc_both and rh["median_ms"] > max(quiet)
        clean += v == "clean"
        ev = rh["extra"].get("interference", {})
        lines.append(
            f"  {label:48s} quiet {ra['median_ms']:9.2f}"
            + (f" / {quiet[1]:9.2f}" if len(quiet) > 1 else "")
            + f"  hog {rh['median_ms']:9.2f}  ratio {ratio:6.3f}  "
            f"{v:9s} re-taken {ev.get('retaken', 0):3d}/{ev.get('n_taken', 0):3d}"
            + ("  ESCAPED" if esc else "")
            + ("  (off both quiet runs)" if esc_both else "")
        )
    n = len(set(a) & set(h))
    return {
        "points": n,
        "escapes": escapes,
        "escapes_both": both if b else None,
        "escapes_slower": slower if b else None,
        "clean": clean,
        "clean_share": clean / n if n else 0.0,
        "lines": lines,
    }


def _within(r: dict) -> tuple[float, float]:
    """The interval over rounds alone (before the run-to-run term, harness/drift.py)."""
    w = (r.get("extra") or {}).get("ci_within_ms")
    return (float(w[0]), float(w[1])) if w else (r["ci_low_ms"], r["ci_high_ms"])


def study_backtoback(a: dict[str, dict], b: dict[str, dict]) -> dict[str, Any]:
    lines, detail, overlap, overlap_within, within5 = [], [], 0, 0, 0
    for label in sorted(set(a) & set(b)):
        ra, rb = a[label], b[label]
        ov = ra["ci_low_ms"] <= rb["ci_high_ms"] and rb["ci_low_ms"] <= ra["ci_high_ms"]
        (alo, ahi), (blo, bhi) = _within(ra), _within(rb)
        ov_within = alo <= bhi and blo <= ahi
        ratio = rb["median_ms"] / ra["median_ms"]
        overlap += ov
        overlap_within += ov_within
        within5 += abs(ratio - 1) <= 0.05
        lines.append(
            f"  {label:48s} A {ra['median_ms']:9.2f} [{ra['ci_low_ms']:.2f}-{ra['ci_high_ms']:.2f}]  "
            f"B {rb['median_ms']:9.2f} [{rb['ci_low_ms']:.2f}-{rb['ci_high_ms']:.2f}]  ratio {ratio:6.3f}"
            + ("" if ov else "  NO OVERLAP")
            + ("" if ov_within or not ov else "  (not without the run-to-run term)")
        )
        detail.append(
            {
                "label": label,
                "a": [ra["median_ms"], ra["ci_low_ms"], ra["ci_high_ms"], alo, ahi],
                "b": [rb["median_ms"], rb["ci_low_ms"], rb["ci_high_ms"], blo, bhi],
                "run_to_run": [
                    (ra.get("extra") or {}).get("run_to_run"),
                    (rb.get("extra") or {}).get("run_to_run"),
                ],
            }
        )
    n = len(set(a) & set(b))
    return {
        "points": n,
        "overlap_share": overlap / n if n else 0.0,
        "overlap_within_share": overlap_within / n if n else 0.0,
        "within5_share": within5 / n if n else 0.0,
        "detail": detail,
        "lines": lines,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument(
        "--fast",
        action="store_true",
        help="quick preset's grid, fewer pairs (about 6 minutes idle)",
    )
    ap.add_argument("--preset", help="sweep preset (default: nightly; quick with --fast)")
    ap.add_argument(
        "--protocols",
        default="standard",
        help="comma-separated protocols for the back-to-back study (default: standard)",
    )
    ap.add_argument(
        "--only", action="append", choices=STUDIES, help="run only these studies (repeatable)"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the hog's on/off moments")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    ap.add_argument("--db", help="store URL (default: a temporary SQLite file)")
    ap.add_argument("--json", help="write every number here")
    ap.add_argument(
        "--settle-s",
        type=float,
        default=180.0,
        help="first wait (at most this long) until the 1-minute load average is below 0.3: "
        "the first sweep after other work measured 10-25%% slower than the next (default 180)",
    )
    args = ap.parse_args(argv)

    preset = args.preset or ("quick" if args.fast else "nightly")
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    studies = set(args.only or STUDIES)
    from harness.errors import UserError
    from harness.store import Store

    try:  # bad input fails here, in one line, before the settle wait and minutes of timing
        preflight(args, preset, protocols)
    except UserError as e:
        print(f"bench_interference: {e}", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="bench_interference_")
    db = args.db or f"sqlite:///{tmp}/store.db"
    if args.db:
        try:
            Store(db)
        except UserError as e:
            print(f"bench_interference: {e}", file=sys.stderr)
            return 2
    ov = [f"protocol.threads={args.threads}"]
    settled = settle(args.settle_s)
    result: dict[str, Any] = {
        "settled_s": settled,
        "preset": preset,
        "fast": args.fast,
        "protocols": protocols,
        "db": db,
        "load_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print(
        f"# bench_interference: preset {preset}, protocols {protocols}, {os.cpu_count()} cores, "
        f"load at start {result['load_at_start']}  (needs a quiet machine)",
        flush=True,
    )
    quiet: dict[str, tuple[str, dict]] = {}

    if studies & {"interference", "backtoback"}:
        for proto in protocols:
            rid, wall = sweep(preset, proto, db, ov)
            quiet[proto] = (rid, rows_by_key(db, rid))
            print(
                f"sweep A ({proto}, quiet): run {rid}, {wall:.0f} s, canary {canary_ms(db, rid)} ms",
                flush=True,
            )

    second: dict[str, dict[str, dict]] = {}
    if "backtoback" in studies:
        result["backtoback"] = {}
        for proto in protocols:
            rid, wall = sweep(preset, proto, db, ov)
            second[proto] = rows_by_key(db, rid)
            res = study_backtoback(quiet[proto][1], rows_by_key(db, rid))
            result["backtoback"][proto] = {k: v for k, v in res.items() if k != "lines"}
            print(f"\n## back-to-back quiet sweeps, protocol {proto} (B: run {rid}, {wall:.0f} s)")
            print("\n".join(res["lines"]))
            target = " (target >= 95%)"
            print(
                f"CI overlap: {100 * res['overlap_share']:.0f}% of {res['points']} points{target} "
                f"({100 * res['overlap_within_share']:.0f}% without the run-to-run term); "
                f"medians within +-5%: {100 * res['within5_share']:.0f}%"
                + (target if proto == "standard" else " (target only for the standard protocol)"),
                flush=True,
            )

    if "interference" in studies:
        proto = protocols[0]
        a_id, a_rows = quiet[proto]
        fast = args.fast
        limit = 900.0 if fast else 3600.0
        with RandomHog(args.seed, on_s=(1.0, 4.0), off_s=(1.0, 4.0), limit_s=limit) as hog:
            rid, wall = sweep(preset, proto, db, ov)
        res = study_interference(a_rows, rows_by_key(db, rid), second.get(proto))
        result["interference"] = {k: v for k, v in res.items() if k != "lines"}
        result["interference"].update(
            hog_busy_s=hog.busy_s,
            hog_switches=hog.switches,
            wall_s=wall,
            canary_quiet_ms=canary_ms(db, a_id),
            canary_hog_ms=canary_ms(db, rid),
        )
        print(
            f"\n## interference: sweep H ({proto}) with a random CPU hog (run {rid}, {wall:.0f} s; hog on "
            f"{hog.busy_s:.0f} s in {hog.switches} bursts of {os.cpu_count()} busy processes)"
        )
        print("\n".join(res["lines"]))
        print(
            f"escaped (>10% off quiet, not flagged contended): {res['escapes']} of {res['points']} (target 0); "
            + (
                f"off both quiet runs: {res['escapes_both']} ({res['escapes_slower']} slower); "
                if res["escapes_both"] is not None
                else ""
            )
            + f"clean points: {100 * res['clean_share']:.0f}% (target >= 90%)",
            flush=True,
        )

    if "sampling" in studies:
        from harness.backends.torch.prefill import validate_sampling
        from harness.llms import get_llm_spec
        from harness.protocol import get_protocol

        t0 = time.perf_counter()
        rounds = 5 if args.fast else 7
        check = validate_sampling(
            get_llm_spec("qwen2-0.5b"),
            256,
            4,
            protocol=get_protocol("quick", threads=args.threads),
            rounds=rounds,
        )
        lo, q1, q3, hi = check.error_spread
        result["sampling"] = {
            "median_error": check.rel_error,
            "round_errors": check.round_errors,
            "contended_rounds": check.contended_rounds,
            "wall_s": time.perf_counter() - t0,
        }
        print(
            f"\n## layer sampling: qwen2-0.5b k=4 of 24, 256+16 tokens, {rounds} interleaved rounds: median error "
            f"{100 * check.rel_error:+.1f}% (IQR {100 * q1:+.1f}% to {100 * q3:+.1f}%, range {100 * lo:+.1f}% to "
            f"{100 * hi:+.1f}%; {check.contended_rounds} round(s) contended) (target within +-5%)",
            flush=True,
        )

    if "timer" in studies:
        out = Path(tmp) / "prefill.json"
        cmd = [
            sys.executable,
            str(ROOT / "scripts" / "bench_prefill.py"),
            "--tokens",
            "256",
            "--protocol",
            "standard",
            "--pairs",
            "7" if args.fast else "9",
            "--threads",
            str(args.threads),
            "--json",
            str(out),
        ]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout + r.stderr, file=sys.stderr)
            return r.returncode
        doc = json.loads(out.read_text())
        ratios = [p["ratio"] for p in doc["points"]]
        result["timer"] = {
            "ratios": ratios,
            "pair_ratios": [p["pair_ratios"] for p in doc["points"]],
            "wall_s": time.perf_counter() - t0,
        }
        print(
            f"\n## protocol vs torch.utils.benchmark (prefill, 256 tokens, pairs interleaved): median ratio "
            f"{', '.join(f'{x:.3f}' for x in ratios)} (pairs {doc['points'][0]['pair_ratios']}) "
            "(target within 3% of 1)",
            flush=True,
        )

    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
