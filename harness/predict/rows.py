"""Known latencies to calibrate on: the paper's M1 Max rows, or this machine's stored runs."""

from __future__ import annotations

import math
from typing import Any

from harness.predict.calibrate import KnownRow
from harness.predict.costmodel import (
    Cost,
    encoder_cost,
    encoder_out_dim,
    llm_hidden,
    prefill_cost,
    projector_cost,
)

_PLAIN_VARIANTS = ("", "frozen-encoder", "chat")


def family_of(encoder: str) -> str:
    from harness.accuracy.paper import paper_rows  # noqa: F401  (keeps import order cheap)

    fam = {
        "fastvithd": "fastvit",
        "fastvit": "fastvit",
        "vit-l-14": "clip-vit",
        "siglip-so400m": "siglip",
        "convnext-l": "convnext",
        "convnext-xxl": "convnext",
    }
    if encoder in fam:
        return fam[encoder]
    try:
        from harness.encoders.zoo import get_spec

        return get_spec(encoder).family
    except Exception:  # noqa: BLE001 - unknown encoders are their own family
        return encoder


def part_costs(
    encoder: str,
    resolution: int,
    tiling: str,
    llm: str,
    tokens: int,
    prompt_tokens: int,
    *,
    compute: bool = True,
) -> tuple[Cost | None, Cost | None]:
    """(encoder cost, projector + prefill cost) of one configuration; None where unknown."""
    enc = encoder_cost(encoder, resolution, tiling, compute=compute) if encoder else None
    pre = None
    if llm and llm != "none":
        p = prefill_cost(llm, tokens + prompt_tokens, compute=compute)
        if p is not None:
            hidden = llm_hidden(llm)
            dim = encoder_out_dim(encoder) if encoder else hidden
            pre = p + projector_cost(tokens, int(dim or hidden or 0), int(hidden or 0))
    return enc, pre


def paper_known_rows(prompt_tokens: int = 16, skipped: list[str] | None = None) -> list[KnownRow]:
    """The paper's M1 Max latencies this tool can model: Tables 1/3/4 encoder latencies and
    Table 6 TTFTs of zoo encoders with zoo LLMs (one row per architecture). The labels of
    latency rows it cannot model (an encoder or LLM outside the zoo) go to ``skipped``."""
    from harness.accuracy.paper import paper_rows

    df = paper_rows()
    out: list[KnownRow] = []
    seen: set[tuple[Any, ...]] = set()
    for _, r in df.iterrows():
        if r["variant"] not in _PLAIN_VARIANTS:
            continue
        enc_ms, ttft_ms = r["encoder_ms"], r["ttft_ms"]
        res, tiling, llm = int(r["resolution"]), r["tiling"], r["llm"]
        if not math.isnan(enc_ms):
            key = ("encoder", r["encoder"], res, tiling)
            if key in seen:
                continue
            enc, _ = part_costs(r["encoder"], res, tiling, "", 0, 0, compute=False)
            if enc is None:
                if skipped is not None:
                    skipped.append(f"{r['label']} {r['encoder_label']}@{res} encoder")
                continue
            seen.add(key)
            out.append(
                KnownRow(
                    label=f"{r['label']} {r['encoder']}@{res} encoder",
                    part="encoder",
                    known_ms=float(enc_ms),
                    encoder=enc,
                    family=family_of(r["encoder"]),
                    source=r["source"],
                    key={
                        "encoder": r["encoder"],
                        "resolution": res,
                        "tiling": tiling,
                        "llm": "none",
                    },
                )
            )
        if not math.isnan(ttft_ms):
            key = ("ttft", r["encoder"], res, tiling + "|" + llm)
            if key in seen:
                continue
            tokens = int(r["tokens"])
            try:
                enc, pre = part_costs(
                    r["encoder"], res, tiling, llm, tokens, prompt_tokens, compute=False
                )
            except Exception:  # noqa: BLE001 - an LLM or encoder outside the zoo
                enc = pre = None
            if enc is None or pre is None:
                if skipped is not None:
                    skipped.append(
                        f"{r['label']} {r['encoder_label']}@{res} + {r['llm_label']} TTFT"
                    )
                continue
            seen.add(key)
            out.append(
                KnownRow(
                    label=f"{r['label']} {r['encoder']}@{res}{'' if tiling == 'none' else ' ' + tiling} + {llm} TTFT",
                    part="ttft",
                    known_ms=float(ttft_ms),
                    encoder=enc,
                    prefill=pre,
                    family=family_of(r["encoder"]),
                    source=r["source"],
                    key={"encoder": r["encoder"], "resolution": res, "tiling": tiling, "llm": llm},
                )
            )
    return out


def store_known_rows(
    store: Any,
    *,
    machine_id: str | None = None,
    backend: str = "torch",
    device: str = "cpu",
    dtype: str = "float32",
) -> list[KnownRow]:
    """This machine's ok measurements (encoder, prefill, projector) as known rows; the median
    of repeated measurements of one key."""
    from harness.fingerprint import fingerprint
    from harness.fingerprint import machine_id as this_machine

    mid = machine_id or this_machine(fingerprint())
    df = store.measurements(status="ok")
    if df is None or len(df) == 0:
        return []
    df = df[
        (df["machine_id"] == mid)
        & (df["backend"] == backend)
        & (df["device"] == device)
        & (df["dtype"] == dtype)
    ]
    out: list[KnownRow] = []
    for (kind, name, res, tiling, tokens, prompt, in_dim), g in df.groupby(
        ["kind", "name", "resolution", "tiling", "tokens", "prompt_tokens", "in_dim"]
    ):
        ms = float(g["median_ms"].median())
        if not ms > 0:
            continue
        try:
            if kind == "encoder":
                enc = encoder_cost(name, int(res), tiling)
                if enc is None:
                    continue
                out.append(
                    KnownRow(
                        label=f"{name}@{int(res)}{'' if tiling == 'none' else ' ' + tiling} encoder",
                        part="encoder",
                        known_ms=ms,
                        encoder=enc,
                        family=family_of(name),
                        source="store",
                        key={"encoder": name, "resolution": int(res), "tiling": tiling},
                    )
                )
            elif kind == "prefill":
                pre = prefill_cost(name, int(tokens) + int(prompt))
                if pre is None:
                    continue
                out.append(
                    KnownRow(
                        label=f"{name} prefill {int(tokens)}+{int(prompt)} tokens",
                        part="prefill",
                        known_ms=ms,
                        prefill=pre,
                        family="llm:" + name,
                        source="store",
                        key={"llm": name, "tokens": int(tokens), "prompt_tokens": int(prompt)},
                    )
                )
            elif kind == "projector":
                hidden = llm_hidden(name)
                pre = projector_cost(int(tokens), int(in_dim), int(hidden or 0))
                out.append(
                    KnownRow(
                        label=f"{name} projector {int(tokens)}x{int(in_dim)}",
                        part="prefill",
                        known_ms=ms,
                        prefill=pre,
                        family="projector",
                        source="store",
                        key={"llm": name, "tokens": int(tokens), "in_dim": int(in_dim)},
                    )
                )
        except Exception:  # noqa: BLE001 - a stored name no longer in the zoo
            continue
    return out
