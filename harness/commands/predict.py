"""``vlm-pareto predict --device NAME``: encoder, prefill and TTFT predicted for a device."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from harness.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict",
        help="predict encoder, prefill and TTFT for a device profile; validate it",
        description="Predict TTFT = encoder + projector + prefill on a device you may not have, from the cost "
        "model (work per operator class, counted on the real modules on the meta device) and a device profile "
        "(spec-sheet peaks, efficiencies fitted on known latencies). Calibrated profiles carry a band from their "
        "leave-one-out error; spec-only profiles say 'uncalibrated'.",
        epilog="Examples: vlm-pareto predict --list ; vlm-pareto predict --device m1-max-ane-mlx --validate ; "
        "vlm-pareto predict --device m1-max-ane-mlx --encoder siglip-so400m --resolutions 384,768 --llm qwen2-1.5b ; "
        "vlm-pareto predict --device host-cpu --validate --held-out-family convnext",
    )
    p.add_argument(
        "--device", default=None, metavar="NAME", help="device profile name, alias or YAML path"
    )
    p.add_argument("--list", action="store_true", help="list the device profiles")
    p.add_argument(
        "--validate",
        action="store_true",
        help="leave-one-out validation of the profile's calibration (median / worst |error| per part)",
    )
    p.add_argument(
        "--held-out-family",
        default=None,
        metavar="FAMILY",
        help="validate (implies --validate) and also fit without every row of one encoder family and predict them",
    )
    p.add_argument(
        "--table4",
        action="store_true",
        help="the paper's encoder rows: predicted for the M1 Max (leave-one-out) vs the paper",
    )
    g = p.add_argument_group("grid (default: the paper_table4 preset's grid)")
    g.add_argument(
        "--preset", default=None, help="a sweep preset whose grid to predict (e.g. paper_fig4)"
    )
    g.add_argument("--encoder", action="append", default=[], help="encoder name (repeatable)")
    g.add_argument(
        "--encoder-config",
        action="append",
        default=[],
        metavar="YAML",
        help="a custom encoder YAML (repeatable)",
    )
    g.add_argument(
        "--resolutions",
        default=None,
        metavar="R,R,...",
        help="resolutions (default: the encoder's paper ones)",
    )
    g.add_argument("--llm", action="append", default=[], help="LLM name (repeatable)")
    g.add_argument(
        "--tiling",
        default=None,
        help="tiling, e.g. none, 2x2+overview (default: none, or the preset's)",
    )
    g.add_argument(
        "--prompt-tokens",
        type=int,
        default=None,
        help="text tokens after the image (default: the profile's)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def _ints(text: str | None) -> list[int]:
    if not text:
        return []
    if any(not x.strip() for x in text.split(",")):
        raise UserError(f"--resolutions has an empty entry: {text!r}")
    try:
        vals = [int(x) for x in text.split(",")]
    except ValueError as e:
        raise UserError(f"--resolutions must be comma-separated integers, got {text!r}") from e
    if not vals or any(v <= 0 for v in vals):
        raise UserError(f"--resolutions must be positive integers, got {text!r}")
    return vals


def grid(args: argparse.Namespace) -> list[tuple[str, int, str, str]]:
    """(encoder, resolution, llm, tiling) of the requested grid."""
    from harness.encoders.zoo import get_spec
    from harness.llms.zoo import get_llm_spec

    names = list(args.encoder)
    if args.encoder_config:
        from harness.encoders.custom import register_custom_encoder

        names += [register_custom_encoder(p).name for p in args.encoder_config]
    if names or args.llm:
        if not names or not args.llm:
            raise UserError("pass both --encoder (or --encoder-config) and --llm, or a --preset")
        out: list[tuple[str, int, str, str]] = []
        for n in names:
            spec = get_spec(n)
            res = _ints(args.resolutions) or list(
                spec.paper_resolutions or (spec.native_resolution,)
            )
            for llm in args.llm:
                get_llm_spec(llm)
                out.extend((spec.name, r, llm, args.tiling or "none") for r in res)
        return out
    from harness.errors import suggest
    from harness.sweep.configs import compose_sweep, presets

    name = args.preset or "paper_table4"
    known = [p for p in presets() if p != "config"]
    if name not in known:
        raise UserError(suggest(name, known, "preset"))
    from harness.sweep.engine import resolve

    cfg = compose_sweep(name, ["backend=fake"])  # the grid only: no runtime is configured
    # the sweep's own resolution: registers the preset's YAML-defined LLMs (tiny-qwen2) and
    # open VLMs (each vision tower paired with its own decoder), as the sweep measures them
    from harness.llms.zoo import LLMS

    vlm_encoders = {f"{str(v.name).lower()}-vision" for v in (cfg.vlms or {}).values()}
    plan, llm_specs = resolve(cfg)
    for llm_name, llm_spec in llm_specs.items():
        if llm_name not in LLMS:  # an LLM defined by its YAML's shape or config keys
            LLMS.register(llm_name, llm_spec)
    out2: list[tuple[str, int, str, str]] = []
    skipped = sum(pt.encoder in vlm_encoders for pt in plan.points)
    if skipped:
        import sys

        print(
            f"note: {skipped} open-VLM point(s) of {name} not predicted (the cost model covers the zoo's "
            "and custom encoders)",
            file=sys.stderr,
        )
    for pt in plan.points:
        if pt.encoder in vlm_encoders:
            continue
        key = (pt.encoder, int(pt.resolution), pt.llm, args.tiling or pt.tiling)
        if key not in out2:
            out2.append(key)
    return out2


def _check_context(
    encoder: str, resolution: int, llm: str, tiling: str, default_prompt: int, prompt: int | None
) -> None:
    """A point whose visual + prompt tokens exceed the LLM's context is a UserError, as in a sweep."""
    if not llm or llm == "none":
        return
    from harness.encoders.zoo import encoder_tokens
    from harness.llms import check_tokens
    from harness.llms.zoo import get_llm_spec

    tokens = int(encoder_tokens(encoder, int(resolution), tiling, check_memory=False))
    check_tokens(get_llm_spec(llm), tokens, default_prompt if prompt is None else prompt)


def _list(as_json: bool = False) -> int:
    import sys

    from harness.predict.profiles import all_profiles

    problems: list[str] = []
    profiles = list(all_profiles(problems).values())
    for msg in problems:  # listed after the good ones; the exit code still says 2
        print(f"vlm-pareto: error: skipped a broken profile: {msg}", file=sys.stderr)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": p.name,
                        "aliases": list(p.aliases),
                        "calibrate_from": p.calibrate_from,
                        "description": p.description,
                    }
                    for p in profiles
                ],
                indent=2,
            )
        )
        return 2 if problems else 0
    for p in profiles:
        cal = {
            "paper": "calibrated on the paper's rows",
            "store": "calibrated on this machine's stored runs",
            "none": "uncalibrated (spec-only)",
        }[p.calibrate_from]
        print(f"{p.name:20s} {cal:42s} {p.description}")
    return 2 if problems else 0


def _validate(args: argparse.Namespace, pred: Any) -> int:
    from harness.predict.validate import format_summary, held_out_family, summarize

    rows = pred.known_rows()
    if not pred.calibrated:
        if pred.profile.calibrate_from == "none":
            raise UserError(
                f"{pred.profile.name} is uncalibrated (spec-only): there is nothing to validate"
            )
        raise UserError(
            f"{pred.profile.name} has no calibration rows yet (run 'vlm-pareto sweep' on this machine)"
        )
    loo = pred.validation()
    s = summarize(loo)
    fam = None
    if args.held_out_family:
        fams = sorted({r.family for r in rows if r.part == "encoder"})
        if args.held_out_family not in fams:
            from harness.errors import suggest

            raise UserError(suggest(args.held_out_family, fams, "encoder family"))
        fam = held_out_family(rows, pred.profile, args.held_out_family)
    fit = pred.fit
    if args.json:
        doc = {
            "device": pred.profile.name,
            "rows": len(rows),
            "coefficients": fit.efficiencies(),
            "outliers": [{"label": lbl, "rel_error": e} for lbl, e in fit.outliers],
            "not_modelled": list(pred.not_modelled),
            "leave_one_out": {"summary": s, "rows": [h.to_dict() for h in loo]},
        }
        if fam is not None:
            doc["held_out_family"] = {
                "family": args.held_out_family,
                "summary": summarize(fam),
                "rows": [h.to_dict() for h in fam],
            }
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"{pred.profile.name}: calibrated on {len(rows)} known latencies ({pred.profile.calibrate_from})"
    )
    print("fitted: " + ", ".join(f"{k} {v:.3g}" for k, v in fit.efficiencies().items()))
    for lbl, e in fit.outliers:
        print(f"distrusted row: {lbl} (fit is {e * 100:+.0f}% off; kept at low weight, not fitted)")
    if pred.not_modelled:
        print(
            f"not modelled ({len(pred.not_modelled)} paper row(s): encoder or LLM outside the zoo): "
            + "; ".join(pred.not_modelled)
        )
    print("leave-one-out (each row predicted by a fit without it):")
    print("\n".join(format_summary(s, "LOO")))
    for part in ("encoder", "prefill", "ttft"):
        if part not in s:
            print(
                f"  LOO {part:8s} n=  0  no {part}-only known rows (validated only inside TTFT rows)"
                if part != "ttft"
                else "  LOO ttft     n=  0  no TTFT rows known"
            )
    for h in loo:
        print(
            f"    {h.label:55s} known {h.known_ms:9.1f}  predicted {h.predicted_ms:9.1f}  {h.rel_error * 100:+6.0f}%"
        )
    if fam is not None:
        print(f"held-out family {args.held_out_family!r} (fit on the other families only):")
        print("\n".join(format_summary(summarize(fam), "held-out")))
        for h in fam:
            print(
                f"    {h.label:55s} known {h.known_ms:9.1f}  predicted {h.predicted_ms:9.1f}  {h.rel_error * 100:+6.0f}%"
            )
    return 0


def _given(args: argparse.Namespace, *, table4: bool) -> list[str]:
    """The flags that ``--list`` (``table4=True``: ``--table4`` too) would silently ignore."""
    flags = [
        ("--device", args.device),
        ("--validate", args.validate),
        ("--held-out-family", args.held_out_family),
        ("--table4", args.table4 and table4),
        ("--preset", args.preset),
        ("--encoder", args.encoder),
        ("--encoder-config", args.encoder_config),
        ("--resolutions", args.resolutions),
        ("--llm", args.llm),
        ("--tiling", args.tiling),
        ("--prompt-tokens", args.prompt_tokens is not None),
    ]
    return [flag for flag, on in flags if on]


def run(args: argparse.Namespace) -> int:
    if args.list:
        other = _given(args, table4=True)
        if other:
            raise UserError(
                f"--list only lists the profiles; drop {', '.join(other)} "
                "(validate one with --device NAME --validate)"
            )
        return _list(args.json)
    if args.table4:
        other = _given(args, table4=False)
        if other:
            raise UserError(
                f"--table4 prints the paper's Table 4 encoders for m1-max-ane-mlx; drop "
                f"{', '.join(other)}"
            )
        from harness.predict.table4 import three_way_rows, three_way_table

        if args.json:
            print(json.dumps(three_way_rows(), indent=2))
        else:
            print(three_way_table())
        return 0
    if not args.device:
        raise UserError("pass --device NAME (see vlm-pareto predict --list)")
    if args.prompt_tokens is not None and args.prompt_tokens < 0:
        raise UserError(f"--prompt-tokens must be >= 0, got {args.prompt_tokens}")
    from harness.predict.apply import predictor_for

    db = getattr(args, "db", None) or os.environ.get("VLM_PARETO_DB")
    pred = predictor_for(args.device, db)
    if args.validate or args.held_out_family:
        return _validate(args, pred)
    points = []
    for enc, res, llm, tiling in grid(args):
        _check_context(enc, res, llm, tiling, pred.profile.prompt_tokens, args.prompt_tokens)
        p = pred.predict(enc, res, llm, tiling, prompt_tokens=args.prompt_tokens)
        points.append(
            {"encoder": enc, "resolution": res, "llm": llm, "tiling": tiling, **p.to_dict()}
        )
    if args.json:
        print(
            json.dumps(
                {"device": pred.profile.name, "calibrated": pred.calibrated, "points": points},
                indent=2,
            )
        )
        return 0
    head = f"{'encoder':>14} {'res':>5} {'tiling':>13} {'llm':>11} {'encoder_ms':>10} {'prefill_ms':>10} {'ttft_ms':>9}  band"
    status = (
        "calibrated, band = 90th pct of leave-one-out |error|"
        if pred.calibrated
        else "uncalibrated: no error band"
    )
    print(f"predicted for {pred.profile.name} ({status})")
    print(head)
    for d in sorted(points, key=lambda d: d["ttft_ms"]):
        band = (
            f"{d['ttft_low_ms']:.0f}-{d['ttft_high_ms']:.0f}" if d["calibrated"] else "uncalibrated"
        )
        print(
            f"{d['encoder']:>14} {d['resolution']:>5} {d['tiling']:>13} {d['llm']:>11} {d['encoder_ms']:>10.1f} "
            f"{d['prefill_ms']:>10.1f} {d['ttft_ms']:>9.1f}  {band}"
        )
    return 0
