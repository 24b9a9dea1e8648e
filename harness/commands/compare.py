"""``vlm-pareto compare``: is the candidate slower than the baseline, per measurement key?

Baseline and candidate are run ids in the store or files: a measurements export (CSV,
Parquet, JSON; ``Store.export`` writes them) or a pytest-benchmark JSON file saved with
``--benchmark-save-data`` (auto-detected, or forced with ``--benchmark-json``). Several
``--baseline`` values are pooled into one window baseline. Exit 1 on a regression, 0
otherwise, 2 on bad input. Statistics: :mod:`harness.compare`. Never imports torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any, cast

from harness.compare import (
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
    MIN_SAMPLES,
    TableComparison,
    compare_tables,
)
from harness.compare.tables import parse_samples
from harness.errors import UserError
from harness.schema import check_file_version

FILE_SUFFIXES = (".csv", ".parquet", ".pq", ".json")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare",
        help="compare two runs (or benchmark files) for regressions",
        description=(
            "Per measurement key: ratio of medians (candidate/baseline) with a 95% bootstrap CI "
            "widened by the machine's run-to-run variance, a two-sided Mann-Whitney U test on the "
            "raw samples, and a verdict. 'regression' needs p < alpha AND ratio >= 1 + threshold "
            "AND the widened CI above 1; '~' means no change shown. "
            "Exit 1 on a regression, 0 otherwise, 2 on bad input."
        ),
    )
    p.add_argument(
        "--baseline",
        nargs="+",
        action="extend",
        required=True,
        metavar="RUN|FILE",
        help="baseline run id(s) or file(s); several are pooled (a window of runs)",
    )
    p.add_argument(
        "--candidate", required=True, metavar="RUN|FILE", help="candidate run id or file"
    )
    p.add_argument(
        "--benchmark-json",
        action="store_true",
        help="read the files as pytest-benchmark JSON (auto-detected for .json files)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"minimum slowdown to call a regression, as a fraction (default {DEFAULT_THRESHOLD})",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help=f"significance level of the Mann-Whitney U test (default {DEFAULT_ALPHA})",
    )
    p.add_argument(
        "--min-samples",
        type=int,
        default=MIN_SAMPLES,
        help=f"refuse keys with fewer samples per side (default {MIN_SAMPLES})",
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="compare latencies as measured; by default, when both sides carry a machine-speed "
        "canary whose ratio is beyond its own noise band (1.3x either way), the candidate is "
        "divided by the canary ratio (docs/noise.md)",
    )
    p.add_argument(
        "--run-to-run",
        default="auto",
        metavar="auto|off|SD",
        help="run-to-run variance added to each ratio's interval: auto (default: for a store "
        "run, the machine's history in the store, candidate left out; else the sd the "
        "candidate's rows were measured with; else 0.08), off (samples only), or a standard "
        "deviation of log median per run, e.g. 0.03 (docs/noise.md)",
    )
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    return p


def _stored_sd(cand_rows: list[dict[str, Any]], source: str) -> float | None:
    """The median run-to-run sd the candidate's rows were measured with (None: none stored).
    A stored value outside [0, MAX_SD] is a UserError naming the source."""
    from harness import drift

    stored = []
    for r in cand_rows:
        extra = r.get("extra")
        if isinstance(extra, str):  # an export's JSON text
            try:
                extra = json.loads(extra)
            except ValueError:
                extra = None
        t = extra.get("run_to_run") if isinstance(extra, dict) else None
        if not isinstance(t, dict) or t.get("sd") is None:
            continue
        sd = t["sd"]
        if (
            isinstance(sd, bool)
            or not isinstance(sd, (int, float))
            or not (math.isfinite(sd) and 0.0 <= sd <= drift.MAX_SD)
        ):
            raise UserError(
                f"{source}: extra.run_to_run.sd of {r.get('kind', '?')} {r.get('name', '?')} must be "
                f"a standard deviation in [0, {drift.MAX_SD}], got {sd!r}"
            )
        stored.append(float(sd))
    if not stored:
        return None
    import statistics

    return float(statistics.median(stored))


def run_to_run_term(
    setting: Any,
    cand_rows: list[dict[str, Any]],
    candidate: str,
    is_run: bool,
    db: str | None,
    source: str = "the candidate",
) -> Any:
    """The run-to-run term for ``--run-to-run`` (a :class:`harness.drift.RunToRun`, or None).

    ``auto``: a store run gets the machine's history in the store (the candidate left out);
    without usable history (and for files) the sd the candidate's rows were measured with;
    else :data:`harness.drift.DEFAULT_SD`. Synthetic (fake) latencies get none.
    """
    from harness import drift

    s = drift.parse_setting(setting, "--run-to-run")
    if s == "off":
        return None
    if isinstance(s, float):
        return drift.RunToRun(s, "setting") if s > 0 else None
    if cand_rows and all(str(r.get("backend")) in drift.SYNTHETIC_BACKENDS for r in cand_rows):
        return None  # synthetic latencies: no machine in them
    stored = _stored_sd(cand_rows, source)
    if is_run:
        from harness.store import Store

        machine = str(cand_rows[0].get("machine_id", "")) if cand_rows else ""
        term = drift.estimate(Store(db, readonly=True), machine, exclude_run=candidate)
        if term.source == "history":
            return term
    if stored is not None:
        return drift.RunToRun(stored, "rows")
    return drift.RunToRun(drift.DEFAULT_SD, "default")


def run_to_run_text(term: Any) -> str:
    if term is None:
        return "run-to-run variance: not included (--run-to-run off, or synthetic latencies)"
    where = {
        "history": f"from {term.keys} key(s) measured in {term.runs} other run(s) of this machine",
        "default": "the default, from this project's shared 2-core VM: no history to read; "
        "state yours with --run-to-run SD",
        "setting": "--run-to-run",
        "rows": "the sd the candidate's rows were measured with",
    }.get(term.source, term.source)
    return (
        f"run-to-run variance: sd {term.sd:.1%} of log median per run ({where}), added to each "
        "ratio's interval; a verdict needs that interval to exclude 1 (--run-to-run off: samples only)"
    )


# ---------------------------------------------------------------------------------------------
# Loading one side
# ---------------------------------------------------------------------------------------------


def _is_run(spec: str, db: str | None) -> bool:
    from harness.store import Store, StoreCorrupt

    try:
        return Store(db, readonly=True).get_run(spec) is not None
    except StoreCorrupt:
        raise
    except UserError:
        return False


def read_measurements_file(path: str | Path, benchmark_json: bool = False) -> list[dict[str, Any]]:
    """Rows from a measurements export (CSV/Parquet/JSON) or a pytest-benchmark JSON file."""
    from harness.benchjson import looks_like_benchmark_json, rows_from_benchmark_json

    p = Path(path)
    if not p.exists():
        raise UserError(f"no such file: {p}")
    if p.is_dir():
        raise UserError(
            f"{p} is a directory; pass a measurements export or pytest-benchmark JSON file"
        )
    suffix = p.suffix.lower()
    try:
        if suffix == ".json" or benchmark_json:
            doc = json.loads(p.read_text())
            if benchmark_json or looks_like_benchmark_json(doc):
                return rows_from_benchmark_json(doc, str(p))
            if isinstance(doc, dict) and isinstance(doc.get("measurements"), list):
                doc = doc["measurements"]
            if not isinstance(doc, list):
                raise UserError(
                    f"{p} is neither a measurements export (a JSON list of rows) nor pytest-benchmark JSON"
                )
            check_file_version(doc, str(p))
            return [dict(r) for r in doc]
        import pandas as pd

        if suffix == ".csv":
            df = pd.read_csv(p)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            raise UserError(
                f"cannot read {p.name}: use a .csv, .parquet or .json measurements export"
            )
    except UserError:
        raise
    except (OSError, ValueError, ImportError, RecursionError) as e:
        raise UserError(
            f"cannot read {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e
    rows = cast("list[dict[str, Any]]", df.to_dict("records"))  # the file's column names
    check_file_version(rows, str(p))
    for i, r in enumerate(rows, start=2):  # line 1 is the header
        s = r.get("samples_ms")
        try:
            r["samples_ms"] = parse_samples(s)
        except ValueError:
            raise UserError(
                f"{p}, row {i}: samples_ms is not a JSON list of numbers ({str(s)[:40]!r})"
            ) from None
    if "samples_ms" not in df.columns:
        raise UserError(f"{p} has no samples_ms column; export measurements with raw samples")
    return rows


def load_side(
    specs: list[str], db: str | None, benchmark_json: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of run ids and/or files, and a short description of each source."""
    rows: list[dict[str, Any]] = []
    store = None
    sources = []
    seen: set[str] = set()
    for spec in specs:
        same = os.path.realpath(spec) if os.path.exists(spec) else spec
        if same in seen:  # pooled twice, a run would count double and look twice as sure
            sources.append(f"{spec} again (counted once)")
            continue
        seen.add(same)
        is_file = benchmark_json or spec.lower().endswith(FILE_SUFFIXES) or os.sep in spec
        if not is_file and os.path.exists(spec):
            # a bare name that exists on disk: a run id of that name in the store wins
            is_file = not _is_run(spec, db)
        if is_file:
            rows.extend(read_measurements_file(spec, benchmark_json))
            sources.append(f"file {spec}")
            continue
        if store is None:
            from harness.store import Store

            store = Store(db, readonly=True)
        run = store.require_run(spec)  # raises the store's "no run ... (latest: ...)" message
        df = store.measurements([spec])
        if df.empty:
            raise UserError(f"run {spec} has no measurements")
        rows.extend(cast("list[dict[str, Any]]", df.to_dict("records")))
        sources.append(
            f"run {spec} ({run['created_at'][:19]}, commit {str(run.get('git_commit') or '?')[:10]})"
        )
    return rows, sources


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _fmt_p(p: float) -> str:
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def render_table(cmp: TableComparison) -> str:
    """A fixed-width table: key, medians, ratio with CI, p-value, verdict."""
    head = ("key", "baseline ms", "candidate ms", "ratio [95% CI]", "p", "verdict")
    body = []
    for r in cmp.rows:
        x = r.result
        ci = "" if math.isnan(x.ratio_ci_low) else f" [{x.ratio_ci_low:.3f}, {x.ratio_ci_high:.3f}]"
        body.append(
            (
                r.label,
                f"{x.baseline_median_ms:.3f} (n={x.n_baseline})",
                f"{x.candidate_median_ms:.3f} (n={x.n_candidate})",
                f"{x.ratio:.3f}{ci}",
                _fmt_p(x.p_value),
                x.verdict,
            )
        )
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
    line = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(head), line(tuple("-" * w for w in widths)), *map(line, body)]
    out.append("")
    ci_rule = " AND CI above 1" if cmp.run_sd > 0 else ""
    out.append(
        f"regression = p < {cmp.alpha:g} (Mann-Whitney U, two-sided) AND ratio >= {1 + cmp.threshold:.3f}{ci_rule}; "
        f"improvement = p < {cmp.alpha:g} AND ratio <= {1 / (1 + cmp.threshold):.3f}{ci_rule.replace('above', 'below')}; "
        "'~' = no change shown"
    )
    out.append(
        f"{len(cmp.regressions)} regression(s), {len(cmp.improvements)} improvement(s), "
        f"{len(cmp.rows) - len(cmp.regressions) - len(cmp.improvements)} unchanged"
    )
    if cmp.only_baseline:
        out.append(f"only in baseline (not compared): {', '.join(cmp.only_baseline)}")
    if cmp.only_candidate:
        out.append(f"only in candidate (not compared): {', '.join(cmp.only_candidate)}")
    if cmp.skipped:
        out.append(f"skipped/failed rows ignored: {', '.join(cmp.skipped)}")
    if cmp.other_context:
        out.append(
            "rows with another backend/device/dtype/protocol than the other side, not compared: "
            + ", ".join(cmp.other_context)
        )
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    db = getattr(args, "db", None) or os.environ.get("VLM_PARETO_DB")
    from harness import drift

    drift.parse_setting(getattr(args, "run_to_run", "auto"), "--run-to-run")  # before reading
    base_rows, base_src = load_side(list(args.baseline), db, args.benchmark_json)
    cand_rows, cand_src = load_side([args.candidate], db, args.benchmark_json)
    # noise hooks (docs/noise.md): canary normalisation; contended keys are never regressions
    from harness.canary import normalise_pair
    from harness.interference import contended_labels

    base_rows, cand_rows, speed = normalise_pair(
        base_rows, cand_rows, normalise=not getattr(args, "raw", False)
    )
    unreliable = contended_labels(base_rows) | contended_labels(cand_rows)
    term = run_to_run_term(
        getattr(args, "run_to_run", "auto"),
        cand_rows,
        args.candidate,
        cand_src[0].startswith("run "),
        db,
        cand_src[0],
    )
    cmp = compare_tables(
        base_rows,
        cand_rows,
        args.threshold,
        args.alpha,
        min_samples=args.min_samples,
        run_sd=term.sd if term is not None else 0.0,
    )
    failing = [r for r in cmp.regressions if r.label not in unreliable]
    if args.json:
        print(
            json.dumps(
                {
                    "baseline": base_src,
                    "candidate": cand_src,
                    **cmp.to_dict(),
                    "machine_speed": speed.to_dict(),
                    "run_to_run": term.to_dict() if term is not None else None,
                    "contended": sorted(unreliable),
                },
                indent=2,
                default=_json_default,
            )
        )
    else:
        print(f"baseline:  {'; '.join(base_src)}")
        print(f"candidate: {'; '.join(cand_src)}")
        print(speed.text())
        print(run_to_run_text(term))
        print()
        print(render_table(cmp))
        if unreliable:
            print(
                f"contended (unreliable, never a failing regression): {', '.join(sorted(unreliable))}"
            )
    return 1 if failing else 0


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)
