"""``vlm-pareto zoo``: the encoders and LLMs the harness knows, with params and token counts.

Encoder parameter counts are *measured* by building each model on the meta device (no memory,
no compute) and say what they include (the CLIP projection head or not); token counts come
from the zoo's token rule, which the test-suite checks against real output shapes.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from harness.errors import UserError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "zoo",
        help="list encoders and LLMs with params, strides and token counts",
        description="List the encoder and LLM zoo: measured parameter counts, strides, "
        "output channels and visual tokens per resolution.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--encoder-config",
        action="append",
        default=[],
        metavar="YAML",
        help="also register a custom encoder from a Hydra YAML (repeatable)",
    )
    p.add_argument(
        "--resolutions",
        default=None,
        metavar="R,R,...",
        help="resolutions to list tokens for (default: each encoder's paper resolutions and its "
        "native one)",
    )
    return p


def _resolutions(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None  # per encoder: its paper resolutions and its native one
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise UserError(f"--resolutions must be comma-separated integers, got {text!r}") from e
    if not values or any(v <= 0 for v in values):
        raise UserError(f"--resolutions must be positive integers, got {text!r}")
    return values


def encoder_rows(resolutions: tuple[int, ...] | None = None) -> list[dict[str, Any]]:
    """One JSON-ready dict per zoo encoder; ``tokens`` at ``resolutions`` or, by default, at the
    encoder's paper resolutions and its native one."""
    from harness.encoders.zoo import (
        ZOO_NOTES,
        count_params,
        encoder_tokens,
        list_encoders,
        listed_resolutions,
    )

    rows = []
    for spec in list_encoders():
        row: dict[str, Any] = {
            "name": spec.name,
            "family": spec.family,
            "aliases": list(spec.aliases),
            "params_m": None,
            "params_m_encoder": None,
            "params_include_head": spec.params_include_head,
            "params_m_paper": spec.params_m_paper,
            "stride": spec.stride,
            "out_dim": spec.out_dim,
            "native_resolution": spec.native_resolution,
            "paper_resolutions": list(spec.paper_resolutions),
            "tokens": {},
        }
        if spec.name in ZOO_NOTES:
            row["note"] = ZOO_NOTES[spec.name]
        try:
            row["params_m"] = round(count_params(spec.name, True) / 1e6, 2)
            row["params_m_encoder"] = round(count_params(spec.name, False) / 1e6, 2)
        except Exception as e:  # an encoder module that is missing or broken: list it anyway
            row["error"] = f"cannot build: {type(e).__name__}: {e}"
        for r in resolutions or listed_resolutions(spec):
            try:
                row["tokens"][str(r)] = encoder_tokens(spec.name, r)
            except UserError:
                continue  # not a valid resolution for this encoder
        rows.append(row)
    return rows


def llm_rows() -> tuple[list[dict[str, Any]], str | None]:
    """LLM zoo rows from ``harness.llms.zoo`` (and a note if that module is unavailable)."""
    try:
        from harness.llms.zoo import LLMS, list_llms
    except ImportError as e:
        return [], f"LLM zoo unavailable: {e}"
    rows = []
    for name in list_llms():
        spec = LLMS.get(name)
        d = spec.to_dict() if hasattr(spec, "to_dict") else dict(vars(spec))
        rows.append(
            {
                k: d.get(k)
                for k in (
                    "name",
                    "arch",
                    "hidden",
                    "layers",
                    "heads",
                    "kv_heads",
                    "intermediate",
                    "vocab",
                    "tied",
                    "params_b",
                    "max_positions",
                )
            }
        )
    return rows, None


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def run(args: argparse.Namespace) -> int:
    from harness.encoders.custom import register_custom_encoder

    for path in args.encoder_config:
        register_custom_encoder(path)
    resolutions = _resolutions(args.resolutions)
    encoders = encoder_rows(resolutions)
    llms, note = llm_rows()
    if args.json:
        from harness.predict.costmodel import zoo_costs

        llm_costs = zoo_costs(encoders, resolutions, [r["name"] for r in llms])
        out: dict[str, Any] = {"encoders": encoders, "llms": llms, "llm_costs": llm_costs}
        if note:
            out["note"] = note
        print(json.dumps(out, indent=2))
        return 0
    enc_rows = []
    for e in encoders:
        params = "?" if e["params_m"] is None else f"{e['params_m']:.2f}M"
        marks = {
            r: ("p" if r in e["paper_resolutions"] else "")
            + ("n" if r == e["native_resolution"] else "")
            for r in map(int, e["tokens"])
        }
        toks = " ".join(
            f"{r}{'' if resolutions or not marks[int(r)] else '(' + marks[int(r)] + ')'}:{n}"
            for r, n in e["tokens"].items()
        )
        enc_rows.append(
            [e["name"], params, e["params_include_head"], str(e["stride"]), str(e["out_dim"]), toks]
        )
    print("Encoders (params measured on the meta device; visual tokens per resolution, no tiling)")
    head = (
        "tokens at resolution"
        if resolutions
        else "tokens at resolution (p: paper or config resolutions, n: native)"
    )
    print(_table(["name", "params", "count covers", "stride", "out_dim", head], enc_rows))
    for e in encoders:
        if e.get("note"):
            print(f"note: {e['name']}: {e['note']}")
    if not resolutions:
        print("(other resolutions: --resolutions R,R,...)")
    print()
    if note:
        print(note)
    else:
        print("LLMs")
        print(
            _table(
                ["name", "arch", "params", "hidden", "layers", "heads/kv", "vocab"],
                [
                    [
                        m["name"],
                        str(m["arch"]),
                        f"{m['params_b']:.2f}B" if m["params_b"] else "?",
                        str(m["hidden"]),
                        str(m["layers"]),
                        f"{m['heads']}/{m['kv_heads']}",
                        str(m["vocab"]),
                    ]
                    for m in llms
                ],
            )
        )
    return 0
