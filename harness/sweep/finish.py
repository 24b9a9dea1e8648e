"""End of a sweep: print the TTFT table, write the sweep's report, choose the exit code."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.sweep.configs import SweepConfig
from harness.sweep.engine import SweepOutcome


def summary_table(points) -> str:
    """Plain-text TTFT table of a sweep's points (fastest first)."""
    if points is None or len(points) == 0:
        return "(no TTFT rows: every point was skipped or failed)"
    df = points.sort_values("ttft_ms")
    # name columns as wide as their longest entry (user encoders can have long names)
    wide = {
        c: max([len(str(v)) for v in df[c]] + [len(c), 6]) for c in ("encoder", "tiling", "llm")
    }
    cols = [
        ("encoder", wide["encoder"]),
        ("resolution", 6),
        ("tiling", wide["tiling"]),
        ("llm", wide["llm"]),
        ("tokens", 6),
        ("encoder_ms", 10),
        ("projector_ms", 9),
        ("prefill_ms", 10),
        ("ttft_ms", 10),
        ("avg5", 6),
    ]
    heads = {"resolution": "res", "projector_ms": "proj_ms"}
    lines = [" ".join(f"{heads.get(c, c):>{w}}" for c, w in cols)]
    for _, r in df.iterrows():
        cells = []
        for c, w in cols:
            v = r.get(c)
            if isinstance(v, float):
                cells.append(f"{v:>{w}.1f}" if v == v else f"{'-':>{w}}")
            else:
                cells.append(f"{str(v)[:w]:>{w}}")
        est = "  (estimated: layer-sampled prefill)" if bool(r.get("estimated", False)) else ""
        lines.append(" ".join(cells) + est)
    return "\n".join(lines)


def finish(cfg: SweepConfig, out: SweepOutcome) -> int:
    from harness.points import load_points

    c = out.counts
    if cfg.json:
        return _finish_json(cfg, out)
    print(
        f"run {out.run_id}: {out.plan.summary()}; measured {c['measured']}, reused {c['reused']}, "
        f"skipped {c['skipped']}, failed {c['failed']} in {out.wall_s:.0f} s"
    )
    for s in out.skipped:
        print(f"  skipped: {s}")
    for f in out.failures:
        print(f"  FAILED: {f}")
    if out.nothing_measured:
        print(
            f"vlm-pareto: nothing measured: all {c['skipped']} point(s) were skipped on this "
            "machine (reasons above); exit 1",
            file=sys.stderr,
        )
        return out.exit_code
    try:
        result = load_points(db=cfg.db, run_ids=[out.run_id], recipe=cfg.recipe)
    except Exception as e:  # the measurements are stored; a report problem must not hide that
        print(f"(could not compose TTFT rows: {e})", file=sys.stderr)
        return out.exit_code
    print(summary_table(result.points))
    for (
        note
    ) in result.notes:  # the run's machine-speed canary vs the machine's history (docs/noise.md)
        if "machine-speed canary" in note:
            print(note)
    if "contended" in result.points and result.points["contended"].any():
        print(
            f"{int(result.points['contended'].sum())} point(s) contended (machine busy): unreliable, see docs/noise.md"
        )
    _print_paper_three_way(result.points)
    if cfg.claim:
        from harness.vlm.claim import claim_line

        print(claim_line(result.points, cfg.claim))
    if cfg.report:
        from harness.report.html import write_report

        out_dir = Path(cfg.report_dir or Path("reports") / cfg.name)
        paths = write_report(result, out_dir, title=f"vlm-pareto sweep '{cfg.name}' ({cfg.cite})")
        out.report_dir = str(out_dir)
        print(f"report: {paths.index_html}")
        for (
            n
        ) in paths.notes:  # e.g. no browser for the PNG/SVG figures: what to install, in one line
            if n.startswith("static images"):
                print(f"note: {n}", file=sys.stderr)
    return out.exit_code


def _print_paper_three_way(points) -> None:
    """The paper's encoders measured here, predicted for the M1 Max (leave-one-out), and the
    paper's number, side by side (harness/predict/table4.py); only encoders measured here."""
    try:
        from harness.predict.table4 import three_way_table

        text = three_way_table(points, only_measured=True)
    except Exception as e:  # noqa: BLE001 - the measurements are stored; this is a summary extra
        text = f"(no paper comparison: {type(e).__name__}: {e})"
    if text:
        print(text)


def _finish_json(cfg: SweepConfig, out: SweepOutcome) -> int:
    """``json=true``: one JSON document on stdout (the report is still written)."""
    import json

    from harness.points import load_points

    doc = {
        "run_id": out.run_id,
        "grid_points": len(out.plan.points),
        "measurements": out.plan.n_measurements,
        "counts": out.counts,
        "skipped": out.skipped,
        "failures": out.failures,
        "wall_s": out.wall_s,
        "points": [],
        "report": None,
    }
    try:
        result = load_points(db=cfg.db, run_ids=[out.run_id], recipe=cfg.recipe)
        doc["points"] = json.loads(result.points.to_json(orient="records"))
        if cfg.report:
            from harness.report.html import write_report

            out_dir = Path(cfg.report_dir or Path("reports") / cfg.name)
            doc["report"] = str(
                write_report(
                    result, out_dir, title=f"vlm-pareto sweep '{cfg.name}' ({cfg.cite})"
                ).index_html
            )
    except Exception as e:  # measurements are stored; say why there are no points
        doc["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(doc, indent=2))
    return out.exit_code
