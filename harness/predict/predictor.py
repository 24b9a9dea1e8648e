"""A calibrated device profile that predicts encoder, prefill and TTFT for any configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.predict.calibrate import Fit, KnownRow, default_coef, design_row, fit_rows
from harness.predict.profiles import Profile, get_profile
from harness.predict.rows import paper_known_rows, part_costs, store_known_rows
from harness.predict.validate import Held, leave_one_out, summarize


@dataclass
class Prediction:
    encoder_ms: float
    prefill_ms: float  # projector + prefill
    ttft_ms: float
    calibrated: bool
    low_ms: float | None  # band from the validation error; None when uncalibrated
    high_ms: float | None
    device: str

    @property
    def label(self) -> str:
        return f"predicted for {self.device}" + ("" if self.calibrated else " (uncalibrated)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoder_ms": self.encoder_ms,
            "prefill_ms": self.prefill_ms,
            "ttft_ms": self.ttft_ms,
            "calibrated": self.calibrated,
            "ttft_low_ms": self.low_ms,
            "ttft_high_ms": self.high_ms,
            "label": self.label,
        }


class Predictor:
    """``Predictor(profile)``: calibrates on first use from the profile's ``calibrate_from``
    source (the paper's rows, or this machine's stored measurements via ``store``)."""

    def __init__(
        self, profile: Profile | str, *, store: Any = None, rows: list[KnownRow] | None = None
    ):
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self._store = store
        self._rows = rows
        self._fit: Fit | None = None
        self._loo: list[Held] | None = None
        self._done = False
        #: Paper latency rows it cannot model (encoder or LLM outside the zoo), by label.
        self.not_modelled: list[str] = []

    # -- calibration -------------------------------------------------------------
    def known_rows(self) -> list[KnownRow]:
        if self._rows is None:
            src = self.profile.calibrate_from
            if src == "paper":
                self.not_modelled = []
                self._rows = paper_known_rows(self.profile.prompt_tokens, self.not_modelled)
            elif src == "store" and self._store is not None:
                extra = self.profile.extra.get("store") or {}
                self._rows = store_known_rows(
                    self._store,
                    backend=str(extra.get("backend", "torch")),
                    device=str(extra.get("device", "cpu")),
                    dtype=str(extra.get("dtype", "float32")),
                )
            else:
                self._rows = []
        return self._rows

    @property
    def fit(self) -> Fit | None:
        if not self._done:
            rows = self.known_rows()
            self._fit = fit_rows(rows, self.profile) if rows else None
            self._done = True
        return self._fit

    @property
    def calibrated(self) -> bool:
        return self.fit is not None

    def coef(self) -> np.ndarray:
        f = self.fit
        return f.coef if f is not None else default_coef(self.profile)

    def validation(self) -> list[Held]:
        if self._loo is None:
            self._loo = leave_one_out(self.known_rows(), self.profile) if self.calibrated else []
        return self._loo

    def band(self) -> dict[str, float]:
        """Relative half-width per part: the 90th percentile of leave-one-out |error|."""
        s = summarize(self.validation())
        return {p: v["p90_abs_pct"] / 100 for p, v in s.items()}

    # -- prediction --------------------------------------------------------------
    def predict(
        self,
        encoder: str,
        resolution: int,
        llm: str,
        tiling: str = "none",
        *,
        tokens: int | None = None,
        prompt_tokens: int | None = None,
        compute: bool = True,
    ) -> Prediction:
        """``compute=False``: only shipped/cached costs (no torch); raises LookupError if missing."""
        if tokens is None:
            from harness.predict.costmodel import shipped_table

            tokens = _tokens(encoder, resolution, tiling, shipped_table())
        prompt = self.profile.prompt_tokens if prompt_tokens is None else prompt_tokens
        enc, pre = part_costs(encoder, resolution, tiling, llm, tokens, prompt, compute=compute)
        if enc is None or (pre is None and llm and llm != "none"):
            raise LookupError(f"no cost counted yet for {encoder}@{resolution} {tiling} + {llm}")
        row = KnownRow("", "ttft", 1.0, encoder=enc, prefill=pre)
        n = len(design_row(row, self.profile)) // 2
        x = design_row(row, self.profile)
        c = self.coef()
        e_ms, p_ms = float(x[:n] @ c[:n]), float(x[n:] @ c[n:])
        t = e_ms + p_ms
        lo = hi = None
        if self.calibrated:
            b = self.band()
            w = (
                b.get("ttft", b.get("encoder", 0.0))
                if llm and llm != "none"
                else b.get("encoder", 0.0)
            )
            lo, hi = t * max(0.0, 1 - w), t * (1 + w)
        return Prediction(e_ms, p_ms, t, self.calibrated, lo, hi, self.profile.name)


def _tokens(encoder: str, resolution: int, tiling: str, table: dict[str, Any]) -> int:
    """Visual tokens without torch for built-ins; via the zoo otherwise."""
    from harness.encoders.zoo import encoder_tokens

    return int(encoder_tokens(encoder, int(resolution), tiling, check_memory=False))
