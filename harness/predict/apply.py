"""Replace the latency of joined points by predictions for a device (``--device NAME``)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.errors import UserError
from harness.predict.predictor import Predictor


def predictor_for(device: str, db: str | None = None) -> Predictor:
    """A predictor for ``device``; a ``store``-calibrated profile reads the store at ``db``."""
    from harness.predict.profiles import get_profile

    profile = get_profile(device)
    store = None
    if profile.calibrate_from == "store":
        from harness.store import Store, StoreMissing

        try:
            store = Store(db, readonly=True)  # a reader: never makes an empty store
        except StoreMissing:
            store = None  # no runs yet: the profile is used uncalibrated, and says so
    return Predictor(profile, store=store)


def predict_frame(points: pd.DataFrame, pred: Predictor) -> pd.DataFrame:
    """Points with ``encoder_ms/projector_ms/prefill_ms/ttft_ms`` and the TTFT band predicted.

    ``ttft_ci_low_ms/ttft_ci_high_ms`` carry the validation band (empty when uncalibrated),
    ``latency_source='predicted'``, ``machine='predicted for NAME'`` (+ ``(uncalibrated)``).
    Points whose configuration the cost model cannot describe keep no latency.
    """
    out = points.copy()
    cols: dict[str, list[Any]] = {
        c: []
        for c in (
            "encoder_ms",
            "projector_ms",
            "prefill_ms",
            "ttft_ms",
            "ttft_ci_low_ms",
            "ttft_ci_high_ms",
            "ttft_p90_ms",
        )
    }
    label = ""
    why: list[str] = []  # the first point that could not be predicted, and why
    for _, r in out.iterrows():
        try:
            tokens = r.get("tokens")
            tok = (
                None
                if tokens is None or (isinstance(tokens, float) and math.isnan(tokens))
                else int(tokens)
            )
            p = pred.predict(
                str(r["encoder"]),
                int(r["resolution"]),
                str(r["llm"]),
                str(r.get("tiling") or "none"),
                tokens=tok,
                compute=False,
            )
        except (UserError, KeyError, ValueError, TypeError, LookupError) as e:
            if not why:
                why.append(f"{r.get('encoder')}@{r.get('resolution')} + {r.get('llm')}: {e}")
            for c in cols:
                cols[c].append(math.nan)
            continue
        label = p.label
        cols["encoder_ms"].append(p.encoder_ms)
        cols["projector_ms"].append(0.0)
        cols["prefill_ms"].append(p.prefill_ms)
        cols["ttft_ms"].append(p.ttft_ms)
        cols["ttft_ci_low_ms"].append(math.nan if p.low_ms is None else p.low_ms)
        cols["ttft_ci_high_ms"].append(math.nan if p.high_ms is None else p.high_ms)
        cols["ttft_p90_ms"].append(math.nan)
    for c, v in cols.items():
        out[c] = v
    out["latency_source"] = "predicted"
    out["machine"] = label or f"predicted for {pred.profile.name}"
    out["backend"] = f"{pred.profile.parts['encoder'].unit} + {pred.profile.parts['prefill'].unit}"
    out["estimated"] = (
        False  # "estimated" means layer-sampled prefill; predictions say latency_source
    )
    out["run_id"] = None
    out.attrs["unpredicted_reason"] = why[0] if why else ""
    return out


def with_predicted_latency(result: Any, device: str, db: str | None = None) -> Any:
    """A :class:`harness.points.PointsResult` whose latencies are predicted for ``device``."""
    from dataclasses import replace

    pred = predictor_for(device, db)
    points = predict_frame(result.points, pred)
    notes = [
        n
        for n in result.notes
        if "TTFT measured on an M1 Max" not in n and "no published TTFT" not in n
    ]
    if pred.calibrated:
        s = pred.band()
        w = s.get("ttft", s.get("encoder", 0.0)) * 100
        notes.append(
            f"latency: predicted for {pred.profile.name} (cost model calibrated on {len(pred.known_rows())} "
            f"known rows; band = 90th percentile of leave-one-out |error|, +/-{w:.0f}%)"
        )
        if pred.fit is not None and pred.fit.outliers:
            notes.append(
                "calibration distrusts: "
                + "; ".join(f"{lbl} ({e * 100:+.0f}%)" for lbl, e in pred.fit.outliers)
            )
    else:
        notes.append(
            f"latency: predicted for {pred.profile.name} (uncalibrated: spec-sheet roofline with default "
            "efficiencies; no error band is claimed)"
        )
    missing = int(points["ttft_ms"].isna().sum())
    if len(points) and missing == len(points):
        raise UserError(
            f"none of the {missing} point(s) can be predicted for {pred.profile.name} "
            f"(first: {points.attrs.get('unpredicted_reason') or 'unknown'}); predict needs zoo "
            "encoders and LLMs or custom ones counted once with 'vlm-pareto predict --device NAME "
            "--encoder-config FILE ...'"
        )
    if missing:
        first = points[points["ttft_ms"].isna()].iloc[0]
        tiling = str(first.get("tiling") or "none")
        count = (
            f"vlm-pareto predict --device {pred.profile.name} --encoder {first.get('encoder')} "
            f"--resolutions {first.get('resolution')} --llm {first.get('llm')}"
            + (f" --tiling {tiling}" if tiling != "none" else "")
        )
        notes.append(
            f"{missing} point(s) could not be predicted: encoder or LLM outside the zoo, or its cost not "
            f"counted yet (first: {points.attrs.get('unpredicted_reason') or 'unknown'}; "
            f"'{count}' counts it once)"
        )
    return replace(result, points=points, notes=notes)
