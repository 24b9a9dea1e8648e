#!/usr/bin/env python
"""Probe vlm-pareto with malformed inputs, races and damaged stores (issue 12).

Three parts, each printing its counts:

1. ``bad inputs``: >= 100 malformed inputs across ingest, sweep configs, the store and the
   command line. Each runs ``python -m harness ...`` in a fresh subprocess against a fresh
   copy of a small real store; a case passes when it exits 2 with exactly one line on stderr
   (``vlm-pareto: error: ...``, no traceback) and leaves the store byte-identical (a path
   that did not exist still does not exist).
2. ``fresh stores``: P processes x S fresh stores, all processes opening each new store at the
   same instant (a multiprocessing barrier); counts failures.
3. ``concurrent ingests``: N ``vlm-pareto ingest`` processes started together on overlapping
   CSV files; counts failed processes and lost scores.

    python scripts/probe_bad_inputs.py              # everything (a few minutes on 2 cores)
    python scripts/probe_bad_inputs.py --fast       # 1/3 of the bad inputs, 4x5 stores, 10 ingests
    python scripts/probe_bad_inputs.py --list       # the cases, without running them
    python scripts/probe_bad_inputs.py --show-failures

Exit code 0 when every case passed. Run from the repository root.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

FIXTURES = ROOT / "tests" / "fixtures" / "lmms_eval"
GOOD_RESULTS = next((FIXTURES / "run_a").rglob("*_results.json"))
KEY = [
    "--encoder",
    "fastvithd",
    "--resolution",
    "256",
    "--llm",
    "qwen2-0.5b",
    "--recipe",
    "llava-1.5",
]
CSV_HEAD = "encoder,resolution,llm,tiling,recipe,benchmark,score\n"
CSV_ROW = "fastvithd,256,qwen2-0.5b,none,llava-1.5,gqa,60.5\n"
FP = {"machine_id": "probe-m", "machine": "probe machine", "git": {"commit": "abc"}}


@dataclass
class Case:
    area: str  # ingest | config | store | cli
    name: str
    argv: list[str]  # may contain {db} {tmp} {file}
    store: str = "base"  # base | missing | empty | foreign | garbage | dir | newer | damaged-data | damaged-index
    file: str | None = None  # content of {file}
    file_name: str = "input.json"


def _results_doc(**changes: object) -> str:
    doc = json.loads(GOOD_RESULTS.read_text())
    doc.update(changes)
    return json.dumps(doc)


def cases() -> list[Case]:
    c: list[Case] = []

    def ingest(
        name: str,
        content: str | bytes | None,
        extra: list[str] | None = None,
        *,
        key: bool = True,
        file_name: str = "x_results.json",
        argv: list[str] | None = None,
    ) -> None:
        args = (
            argv
            if argv is not None
            else ["ingest", "{file}", *(KEY if key else []), *(extra or [])]
        )
        c.append(
            Case(
                "ingest",
                name,
                args,
                file=content
                if isinstance(content, str) or content is None
                else content.decode("latin-1"),
                file_name=file_name,
            )
        )

    good = GOOD_RESULTS.read_text()
    ingest("empty file", "")
    ingest("not JSON", "hello")
    ingest("truncated JSON", good[: len(good) // 2])
    ingest("JSON list", "[1, 2, 3]")
    ingest("JSON string", '"results"')
    ingest("no results key", '{"date": 1}')
    ingest("results is a list", '{"results": [1]}')
    ingest("results empty", '{"results": {}}')
    ingest("deeply nested array", "[" * 100000 + "]" * 100000)
    ingest("deeply nested object", '{"a":' * 50000 + "1" + "}" * 50000)
    ingest("date 1e20", _results_doc(date=1e20))
    ingest("date -1e20", _results_doc(date=-1e20))
    ingest("date 1e308", _results_doc(date=1e308))
    ingest("score is a string", '{"results": {"gqa": {"exact_match,none": "high"}}}')
    ingest("score NaN", '{"results": {"gqa": {"exact_match,none": NaN}}}')
    ingest("score Infinity", '{"results": {"gqa": {"exact_match,none": Infinity}}}')
    ingest("score > 100", '{"results": {"gqa": {"exact_match,none": 250}}}')
    ingest("score negative", '{"results": {"gqa": {"exact_match,none": -0.5}}}')
    ingest("score huge int", '{"results": {"gqa": {"exact_match,none": ' + "9" * 5000 + "}}}")
    ingest("task is not a dict", '{"results": {"gqa": 0.6}}')
    ingest("unknown task", '{"results": {"my_secret_task": {"exact_match,none": 0.5}}}')
    ingest("latin-1 bytes", b'{"results": {"gqa\xe9": 1}}\xff\xfe')
    ingest("NUL bytes", "\x00" * 64)
    ingest("missing key flags", good, key=False)
    ingest(
        "resolution abc", good, argv=["ingest", "{file}", *KEY[:2], "--resolution", "abc", *KEY[4:]]
    )
    ingest(
        "resolution -5", good, argv=["ingest", "{file}", *KEY[:2], "--resolution", "-5", *KEY[4:]]
    )
    ingest("resolution 0", good, argv=["ingest", "{file}", *KEY[:2], "--resolution", "0", *KEY[4:]])
    ingest("unknown encoder", good, argv=["ingest", "{file}", "--encoder", "fastvitxx", *KEY[2:]])
    ingest(
        "unknown llm", good, argv=["ingest", "{file}", *KEY[:4], "--llm", "qwen9-900b", *KEY[6:]]
    )
    ingest("bad tiling", good, ["--tiling", "3y3"])
    ingest("bad recipe", good, argv=["ingest", "{file}", *KEY[:6], "--recipe", "whatever!"])
    ingest("--pope-metric bogus", good, ["--pope-metric", "bogus"])
    ingest("--prefer bogus", good, ["--prefer", "bogus"])
    ingest("no such file", None, argv=["ingest", "{tmp}/nope_results.json", *KEY])
    ingest("nothing to ingest", None, argv=["ingest"])
    ingest(
        "manifest and flags",
        "defaults: {}\nentries: []\n",
        argv=["ingest", "--manifest", "{file}", *KEY],
        file_name="m.yaml",
    )
    ingest("manifest missing", None, argv=["ingest", "--manifest", "{tmp}/none.yaml"])
    ingest(
        "manifest invalid YAML",
        "entries: [unclosed\n",
        argv=["ingest", "--manifest", "{file}"],
        file_name="m.yaml",
    )
    ingest(
        "manifest deep nesting",
        "[" * 50000 + "]" * 50000,
        argv=["ingest", "--manifest", "{file}"],
        file_name="m.yaml",
    )
    ingest(
        "manifest is a list",
        "- 1\n- 2\n",
        argv=["ingest", "--manifest", "{file}"],
        file_name="m.yaml",
    )
    ingest(
        "manifest glob matches nothing",
        "entries:\n  - files: nothing/*.json\n    encoder: fastvithd\n    resolution: 256\n"
        "    llm: qwen2-0.5b\n    recipe: llava-1.5\n",
        argv=["ingest", "--manifest", "{file}"],
        file_name="m.yaml",
    )
    ingest(
        "manifest python tag",
        "!!python/object/apply:os.system ['echo pwned']\n",
        argv=["ingest", "--manifest", "{file}"],
        file_name="m.yaml",
    )
    for name, body in [
        ("CSV missing columns", "encoder,score\nfastvithd,1\n"),
        ("CSV unknown column", CSV_HEAD.strip() + ",color\n" + CSV_ROW.strip() + ",red\n"),
        ("CSV NUL byte", CSV_HEAD + CSV_ROW.replace("60.5", "6\x000.5")),
        ("CSV huge field", CSV_HEAD + "a" * 200_000 + ",1,2,3,4,5,6\n"),
        ("CSV score not a number", CSV_HEAD + CSV_ROW.replace("60.5", "sixty")),
        ("CSV score inf", CSV_HEAD + CSV_ROW.replace("60.5", "inf")),
        ("CSV score > 100", CSV_HEAD + CSV_ROW.replace("60.5", "160.5")),
        ("CSV resolution not int", CSV_HEAD + CSV_ROW.replace(",256,", ",2x6,")),
        ("CSV too many fields", CSV_HEAD + CSV_ROW.strip() + ",extra,more\n"),
        ("CSV empty", ""),
        ("CSV conflicting scores", CSV_HEAD + CSV_ROW + CSV_ROW.replace("60.5", "70.5")),
        ("CSV unknown benchmark", CSV_HEAD + CSV_ROW.replace(",gqa,", ",not_a_bench,")),
        ("CSV unknown encoder", CSV_HEAD + CSV_ROW.replace("fastvithd", "fastvitzz")),
    ]:
        ingest(name, body, argv=["ingest", "{file}"], file_name="acc.csv")

    def config(name: str, *overrides: str) -> None:
        c.append(
            Case(
                "config",
                name,
                ["sweep", "--config-name", "quick", "backend=fake", "report=false", *overrides],
            )
        )

    for ov in [
        "protocol.min_runs=-1",
        "protocol.max_time_s=-5",
        "protocol.confidence=2",
        "protocol.warmup_runs=-3",
        "protocol.threads=-2",
        "protocol.min_time_s=-1",
        "protocol.warmup_min_s=nan",
        "protocol.confidence=0.1",
        "protocol.min_runs=abc",
        "protocol.max_time_s=inf",
        "backend.prefill_step_size=0",
        "backend.mlx_quantize_bits=5",
        "backend.compute_units=GPU",
        "auto_sample_k=0",
        "max_measurements=0",
        "seed=-1",
        "rounds=0",
        "prompt_tokens=-1",
        "sample_layers=0",
        "encoders.fastvithd.resolutions=[-64]",
        "encoders.fastvithd.resolutions=[]",
        "backend=bogus",
        "protocol=bogus",
        "no_such_key=1",
        "protocol.min_runs=[",
        "protocol.min_runs=1,2",
        "tiling.spec=3y3",
        "max_measurements=1",
        "backend.dtype=float8",
        "encoders.fastvithd.name=nonexistent",
    ]:
        config(ov, ov)
    c.append(Case("config", "unknown preset", ["sweep", "--config-name", "qiuck"]))
    c.append(
        Case(
            "config",
            "missing --config-dir",
            ["sweep", "--config-dir", "{tmp}/no_dir", "backend=fake"],
        )
    )

    def store(name: str, kind: str, *argv: str) -> None:
        c.append(Case("store", name, list(argv), store=kind))

    readers = {
        "runs": ["runs"],
        "report": ["report", "--out", "{tmp}/rep", "--no-static"],
        "choose": ["choose", "--budget-ms", "1000"],
        "compare": ["compare", "--baseline", "probe-run", "--candidate", "probe-run"],
    }
    writers = {
        "ingest": ["ingest", "{tmp}/ok.csv"],
        "sweep": ["sweep", "--config-name", "quick", "backend=fake", "report=false"],
    }
    for kind in ("missing", "empty", "foreign", "garbage", "dir", "newer", "damaged-data"):
        for cmd, argv in readers.items():
            store(f"{cmd} on {kind} store", kind, *argv)
    for kind in ("foreign", "garbage", "dir", "newer", "damaged-data", "damaged-index"):
        for cmd, argv in writers.items():
            store(f"{cmd} on {kind} store", kind, *argv)
    store("db recover over an existing file", "base", "db", "recover", "{db}", "{db}")
    store("db recover of a non-store", "foreign", "db", "recover", "{db}", "{tmp}/new.db")
    store("bad URL scheme", "base", "--db", "nosuchdialect://x/y", "runs")

    def cli(name: str, *argv: str) -> None:
        c.append(Case("cli", name, list(argv)))

    cli("unknown command", "bogus")
    cli("typo command", "reprot")
    cli("unknown command after --db", "--db", "{db}", "bogus")
    cli("unknown flag", "runs", "--no-such-flag")
    cli("--db without value", "--db")
    cli("choose without --budget-ms", "choose")
    cli("choose --budget-ms abc", "choose", "--budget-ms", "abc")
    cli("choose --budget-ms -5", "choose", "--budget-ms", "-5")
    cli("choose --by bogus", "choose", "--budget-ms", "100", "--by", "bogus")
    cli("choose --max-tokens abc", "choose", "--budget-ms", "100", "--max-tokens", "abc")
    cli("choose --alternatives -1", "choose", "--budget-ms", "100", "--alternatives", "-1")
    cli("runs --run nope", "runs", "--run", "nope")
    cli("runs --export x.xlsx", "runs", "--export", "{tmp}/x.xlsx")
    cli("compare missing candidate", "compare", "--baseline", "probe-run")
    cli("compare unknown runs", "compare", "--baseline", "nope1", "--candidate", "nope2")
    cli(
        "compare --threshold abc",
        "compare",
        "--baseline",
        "probe-run",
        "--candidate",
        "probe-run",
        "--threshold",
        "x",
    )
    cli("report --source bogus", "report", "--source", "bogus")
    cli("report --run nope", "report", "--run", "nope", "--out", "{tmp}/r")
    cli("zoo --resolutions abc", "zoo", "--resolutions", "abc")
    cli("zoo --resolutions -5", "zoo", "--resolutions", "-5")
    cli("db without action", "db")
    cli("db bogus action", "db", "bogus")
    cli("db recover without args", "db", "recover")
    cli("--json on a command without it", "--json", "db", "migrate")
    cli("search --trials abc", "search", "--trials", "abc")
    cli("nightly --bogus", "nightly", "--bogus")
    return c


# -- stores ------------------------------------------------------------------------------------


def make_base(path: Path) -> None:
    from harness.protocol import Measurement
    from harness.stats import summarize
    from harness.store import MeasurementKey, Store

    s = Store(str(path))
    run = s.create_run("probe", {"name": "probe"}, FP, run_id="probe-run")
    for i in range(150):
        vals = [1.0 + (i % 9) + j * 0.01 for j in range(20)]
        kind = "encoder" if i % 2 else "prefill"
        s.add_measurement(
            run,
            MeasurementKey(kind, f"m{i % 7}", resolution=64 + i, tokens=i),
            Measurement(vals, summarize(vals), "quick", 2),
        )
    s.add_accuracy(
        [
            {
                "encoder": "fastvithd",
                "resolution": 256,
                "llm": "qwen2-0.5b",
                "tiling": "none",
                "recipe": "llava-1.5",
                "source": "csv",
                "scores": {"gqa": 60.5},
            }
        ]
    )
    s.set_run_status(run, "done")
    s.engine.dispose()
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def prepare_store(kind: str, base: Path, dest: Path) -> None:
    from sqlite_pages import btree_pages, damage_page, root_pages

    if kind == "missing":
        return
    if kind == "empty":
        dest.write_bytes(b"")
    elif kind == "garbage":
        dest.write_bytes(b"not a database at all\n" * 300)
    elif kind == "dir":
        dest.mkdir()
    elif kind == "foreign":
        con = sqlite3.connect(dest)
        con.execute("create table people (name text, age int)")
        con.executemany("insert into people values (?, ?)", [("a", 1), ("b", 2)])
        con.commit()
        con.close()
    else:
        shutil.copyfile(base, dest)
        if kind == "newer":
            con = sqlite3.connect(dest)
            con.execute("update meta set value='99' where key='schema_version'")
            con.commit()
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.close()
        elif kind in ("damaged-data", "damaged-index"):
            roots = root_pages(dest)
            name = (
                "measurements"
                if kind == "damaged-data"
                else next(n for n in roots if n.startswith("sqlite_autoindex_measurements"))
            )
            _, leaves = btree_pages(dest, roots[name])
            damage_page(dest, leaves[len(leaves) // 2], offset=8)


def fingerprint(path: Path) -> str:
    if not path.exists():
        return "missing"
    if path.is_dir():
        return "dir:" + ",".join(sorted(p.name for p in path.iterdir()))
    h = hashlib.sha256(path.read_bytes()).hexdigest()
    wal = Path(f"{path}-wal")
    return h + (f"+wal{wal.stat().st_size}" if wal.exists() and wal.stat().st_size else "")


@dataclass
class Outcome:
    case: Case
    rc: int
    stderr: str
    unchanged: bool

    @property
    def one_line(self) -> bool:
        e = self.stderr
        return e.startswith("vlm-pareto: error:") and e.count("\n") == 1 and "Traceback" not in e

    @property
    def ok(self) -> bool:
        return self.rc == 2 and self.one_line and self.unchanged


def run_case(case: Case, base: Path, work: Path, timeout: float) -> Outcome:
    tmp = Path(tempfile.mkdtemp(dir=work))
    db = tmp / "store.db"
    prepare_store(case.store, base, db)
    (tmp / "ok.csv").write_text(CSV_HEAD + CSV_ROW.replace("gqa", "pope"))
    file = tmp / case.file_name
    if case.file is not None:
        file.write_bytes(
            case.file.encode("latin-1")
            if case.name == "latin-1 bytes"
            else case.file.encode("utf-8")
        )
    before = fingerprint(db)
    argv = [a.format(db=db, tmp=tmp, file=file) for a in case.argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLM_PARETO_DB": str(db)}
    env.pop("VLM_PARETO_DEBUG", None)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "harness", *argv],
            capture_output=True,
            text=True,
            cwd=tmp,
            env=env,
            timeout=timeout,
        )
        rc, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired:
        rc, err = -1, "timeout\n"
    after = fingerprint(db)
    shutil.rmtree(tmp, ignore_errors=True)
    return Outcome(case, rc, err, before == after)


# -- races -------------------------------------------------------------------------------------


def _open_fresh(paths: list[str], barrier, worker: int, results) -> None:  # child process
    from harness.protocol import Measurement
    from harness.stats import summarize
    from harness.store import MeasurementKey, Store

    for p in paths:
        barrier.wait()
        try:
            s = Store(p)
            run = s.create_run("race", {}, {**FP, "machine_id": f"m{worker}"})
            s.add_measurement(
                run,
                MeasurementKey("encoder", f"w{worker}"),
                Measurement([1.0], summarize([1.0]), "q", 1),
            )
            results.put("ok")
        except BaseException as e:  # noqa: BLE001 - counted and shown
            results.put(f"{type(e).__name__}: {str(e)[:200]}")


def fresh_stores(work: Path, procs: int, stores: int) -> tuple[int, int, int, list[str]]:
    """(opens, failed opens, stores not complete afterwards, errors)"""
    from harness.store import Store

    paths = [str(work / f"fresh{i}" / "s.db") for i in range(stores)]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    ps = [ctx.Process(target=_open_fresh, args=(paths, barrier, w, results)) for w in range(procs)]
    for p in ps:
        p.start()
    got = [results.get(timeout=600) for _ in range(procs * stores)]
    for p in ps:
        p.join(timeout=60)
    bad = [g for g in got if g != "ok"]
    incomplete = 0
    for p in paths:  # and every store ends complete: one run per process
        try:
            n_runs = len(Store(p, readonly=True).list_runs())
        except Exception as e:  # noqa: BLE001 - counted and shown
            n_runs, bad = -1, [*bad, f"{p}: {e}"]
        if n_runs != procs:
            incomplete += 1
    return len(got), len(got) - len([g for g in got if g == "ok"]), incomplete, bad


def concurrent_ingests(work: Path, n: int) -> tuple[int, int, int, list[str]]:
    """(processes failed, scores expected, scores lost, errors)"""
    from harness.store import Store

    db = work / "ingest.db"
    benches = [
        "gqa",
        "textvqa",
        "pope",
        "docvqa",
        "seedbench",
        "sqa",
        "vqav2",
        "mmvet",
        "mmmu",
        "llava_bench",
    ]
    keys = [("fastvithd", 256), ("fastvithd", 512), ("fastvit", 256), ("convnext-l", 512)]
    expected: dict[tuple[str, int], dict[str, float]] = {}
    files = []
    for i in range(n):
        lines = [CSV_HEAD.strip()]
        for j in range(3):  # three (key, benchmark) cells, overlapping with the neighbours' files
            k = keys[(i + j) % len(keys)]
            b = benches[(i * 2 + j) % len(benches)]
            score = 10 + (hash((k, b)) % 800) / 10
            expected.setdefault(k, {})[b] = score
            lines.append(f"{k[0]},{k[1]},qwen2-0.5b,none,llava-1.5,{b},{score}")
        f = work / f"ingest{i}.csv"
        f.write_text("\n".join(lines) + "\n")
        files.append(f)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ps = [
        subprocess.Popen(
            [sys.executable, "-m", "harness", "--db", str(db), "ingest", str(f)],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for f in files
    ]
    errs = [p.communicate(timeout=600)[1] for p in ps]
    failed = [e.strip() for p, e in zip(ps, errs, strict=True) if p.returncode != 0]
    acc = Store(str(db), readonly=True).accuracy()
    stored = {(r["encoder"], int(r["resolution"])): r["scores"] for _, r in acc.iterrows()}
    total = sum(len(v) for v in expected.values())
    lost = sum(
        1
        for k, bs in expected.items()
        for b, v in bs.items()
        if abs(stored.get(k, {}).get(b, -1) - v) > 1e-9
    )
    return len(failed), total, lost, failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--fast",
        action="store_true",
        help="a third of the bad inputs, 4x5 fresh stores, 10 ingests",
    )
    ap.add_argument(
        "--jobs", type=int, default=3, help="bad-input cases run in parallel (default 3)"
    )
    ap.add_argument("--timeout", type=float, default=240, help="seconds per case")
    ap.add_argument("--only", choices=["inputs", "fresh", "ingest"], help="run one part")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--show-failures", action="store_true", help="print each failing case's stderr")
    args = ap.parse_args()
    all_cases = cases()
    if args.list:
        for cs in all_cases:
            print(f"{cs.area:7} {cs.store:13} {cs.name}")
        print(f"{len(all_cases)} cases")
        return 0
    chosen = all_cases[::3] if args.fast else all_cases
    work = Path(tempfile.mkdtemp(prefix="vlmp-probe-"))
    code = 0
    try:
        if args.only in (None, "inputs"):
            base = work / "base.db"
            make_base(base)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.jobs) as pool:
                outs = list(pool.map(lambda cs: run_case(cs, base, work, args.timeout), chosen))
            print(
                f"bad inputs: {sum(o.ok for o in outs)}/{len(outs)} gave one line, exit 2 and an unchanged store "
                f"({time.perf_counter() - t0:.0f} s)"
            )
            for area in ("ingest", "config", "store", "cli"):
                sub = [o for o in outs if o.case.area == area]
                print(
                    f"  {area:7} {sum(o.ok for o in sub)}/{len(sub)}  (one line {sum(o.one_line for o in sub)}, "
                    f"exit 2 {sum(o.rc == 2 for o in sub)}, unchanged {sum(o.unchanged for o in sub)})"
                )
            for o in outs:
                if not o.ok:
                    code = 1
                    print(
                        f"  FAIL {o.case.area}/{o.case.name}: rc={o.rc} unchanged={o.unchanged} "
                        f"stderr lines={o.stderr.count(chr(10))}"
                    )
                    if args.show_failures:
                        print("    " + o.stderr.strip().replace("\n", "\n    ")[-1500:])
        if args.only in (None, "fresh"):
            procs, stores = (4, 5) if args.fast else (4, 15)
            t0 = time.perf_counter()
            n, bad, incomplete, errors = fresh_stores(work, procs, stores)
            print(
                f"fresh stores: {procs} processes x {stores} stores opened at once: {n - bad}/{n} opens ok, "
                f"{bad} failed; {stores - incomplete}/{stores} stores complete ({time.perf_counter() - t0:.0f} s)"
            )
            for e in errors[:5]:
                print(f"  {e}")
            code |= int(bad > 0 or incomplete > 0)
        if args.only in (None, "ingest"):
            n = 10 if args.fast else 20
            t0 = time.perf_counter()
            failed, total, lost, errors = concurrent_ingests(work, n)
            print(
                f"concurrent ingests: {n} processes, {failed} failed; {total - lost}/{total} scores stored, "
                f"{lost} lost ({time.perf_counter() - t0:.0f} s)"
            )
            for e in errors[:5]:
                print(f"  {e}")
            code |= int(failed > 0 or lost > 0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
