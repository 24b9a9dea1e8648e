"""Search with fewer measurements: skip configurations whose predicted TTFT cannot reach the
frontier found so far.

Pure pieces first (:func:`online_scales`, :func:`predict_ms`, :func:`dominated`), then
:class:`CostPruner`, which ``harness.search.Search`` calls before measuring a proposal (the
hook is a few lines in ``Search.optimize``). The cost model is calibrated *online* on the
measurements the search has taken: per part, the ratio measured / cost-model roofline,
per encoder (per LLM for prefill) where that name has rows, else the median over all names
(one parameter per name: robust from the first measurement on). A proposal that would need a
new measurement is skipped when even an optimistic prediction (``(1 - margin)`` x the
predicted TTFT) is dominated by a measured point (at least as accurate, faster) or exceeds
the budget. Skipped proposals are told to Optuna with their predicted values (so the sampler
learns the region is poor) and never enter the results.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: optimism of the skip test: a candidate survives unless 1 - margin of its predicted TTFT
#: is already dominated. MARGIN is the most (and the value until the online model has shown
#: its error): online fits on this machine are within ~10% (docs/predict.md).
MARGIN = 0.2
#: the least optimism, however well the online model has predicted so far
MARGIN_FLOOR = 0.05
#: leave-one-out errors needed before the margin adapts
MIN_LOO = 4


def roofline_ms(cost: Any, profile: Any, part: str) -> float:
    """Uncalibrated roofline time of ``cost`` on ``profile``'s ``part`` (the features' scale)."""
    from harness.predict.calibrate import default_coef, part_seconds

    x = part_seconds(cost, profile, part)
    return float(x @ default_coef(profile)[: len(x)])


def online_scales(
    rows: Iterable[tuple[str, float, float]],
) -> tuple[dict[str, tuple[float, float]], float | None]:
    """``rows`` of (name, measured_ms, roofline_ms) -> per name a power law ``ms = a * roof**b``
    (least squares in logs, clipped to [0.5, 2]; a name with one distinct roofline takes the
    median ``b`` of the others, or 1), and the
    median ratio over all names (``b`` = 1) for names without rows."""
    by: dict[str, list[tuple[float, float]]] = {}
    allr: list[float] = []
    for name, ms, roof in rows:
        if ms > 0 and roof > 0:
            by.setdefault(name, []).append((roof, ms))
            allr.append(ms / roof)
    fits: dict[str, tuple[float, float]] = {}
    single: list[str] = []
    for name, pts in by.items():
        x = np.log([p[0] for p in pts])
        y = np.log([p[1] for p in pts])
        if len(set(np.round(x, 9))) >= 2:
            b = float(np.clip(np.polyfit(x, y, 1)[0], 0.5, 2.0))
            fits[name] = (float(np.exp(np.median(y - b * x))), b)
        else:
            single.append(name)
    # a name seen at one roofline only borrows the exponent of the names with a slope (the
    # same machine bends every model's curve alike); b = 1 when no name has one yet
    slopes = [b for _, b in fits.values()]
    shared = float(np.median(slopes)) if slopes else 1.0
    for name in single:
        x = np.log([p[0] for p in by[name]])
        y = np.log([p[1] for p in by[name]])
        fits[name] = (float(np.exp(np.median(y - shared * x))), shared)
    return fits, (float(np.median(allr)) if allr else None)


def loo_errors(rows: Iterable[tuple[str, float, float]]) -> list[float]:
    """Leave-one-out relative errors of :func:`online_scales`' per-name power law: every row of a
    name with at least three rows, predicted by a fit of that name's other rows."""
    by: dict[str, list[tuple[str, float, float]]] = {}
    for r in rows:
        if r[1] > 0 and r[2] > 0:
            by.setdefault(r[0], []).append(r)
    errs: list[float] = []
    for name, rs in by.items():
        if len(rs) < 3:
            continue
        for i, (_, ms, roof) in enumerate(rs):
            fits, _ = online_scales(rs[:i] + rs[i + 1 :])
            a, b = fits[name]
            errs.append(a * roof**b / ms - 1.0)
    return errs


def adaptive_margin(
    errors: Sequence[float], default: float = MARGIN, floor: float = MARGIN_FLOOR
) -> float:
    """The skip test's optimism from the online model's own leave-one-out errors: twice their
    90th percentile of |error|, within [floor, default]; ``default`` until there are
    :data:`MIN_LOO` of them (too few to know how wrong the model is here)."""
    if len(errors) < MIN_LOO:
        return default
    p90 = float(np.percentile(np.abs(np.asarray(errors, dtype=float)), 90))
    return float(min(max(2.0 * p90, floor), default))


def predict_ms(
    name: str, roof: float, fits: dict[str, tuple[float, float]], overall: float | None
) -> float | None:
    """Predicted ms; None for a name without rows of its own (an LLM or encoder the search has
    not measured yet can differ from the others by more than any margin: it is measured)."""
    if name in fits:
        a, b = fits[name]
        return a * roof**b
    return None


def part_margin(margin: float, roof: float, known: Sequence[float]) -> float:
    """The optimism for one predicted part: ``margin`` where the name's power law was fitted
    (``roof`` among its rows' rooflines), growing with the distance of the extrapolation,
    ``margin * (1 + |ln(roof / nearest known roof)|)`` (capped at 0.9).

    A law fitted on one row (``b = 1``) or on rows far away extrapolates badly: on
    scripts/bench_search.py's budget scenario the Qwen2-7B prefill fitted at 4 000 tokens
    predicted 5.9 s at 16 tokens where 2.2 s was measured, and the skip lost a frontier point.
    """
    if not known or roof <= 0:
        return 0.9
    d = min(abs(math.log(roof / k)) for k in known if k > 0)
    return float(min(0.9, margin * (1.0 + d)))


def dominated(
    acc: float, ttft_low: float, front: Sequence[tuple[float, float]], budget: float | None
) -> bool:
    """True when a point with accuracy ``acc`` and TTFT at least ``ttft_low`` cannot join the
    (feasible) frontier of ``front`` = [(accuracy, ttft_ms)] (or cannot fit ``budget``)."""
    if budget is not None and ttft_low > budget:
        return True
    return any(a >= acc and t <= ttft_low for a, t in front)


def dominated_by_prediction(
    acc: float,
    ttft_low: float,
    others: Sequence[tuple[float, float]],
    budget: float | None,
) -> bool:
    """True when some other configuration, at its *pessimistic* TTFT (measured parts as
    measured, predicted parts inflated by the margin), is at least as accurate and faster
    than this one at its *optimistic* TTFT, and fits ``budget``. ``others`` = [(accuracy,
    pessimistic ttft_ms)]. Strictly faster or strictly more accurate, so ties survive."""
    for a, t in others:
        if budget is not None and t > budget:
            continue
        if a >= acc and t <= ttft_low and (a > acc or t < ttft_low):
            return True
    return False


@dataclass
class Skip:
    accuracy: float
    ttft_ms: float
    reason: str


@dataclass
class _Online:
    """What the online model knows after the search's measurements (one snapshot)."""

    enc_ms: dict[tuple[str, int, str], float]  # measured encoder medians
    pre_ms: dict[tuple[str, int], float]  # measured prefill medians by (llm, visual tokens)
    e_scales: dict[str, tuple[float, float]]
    p_scales: dict[str, tuple[float, float]]
    e_roofs: dict[str, list[float]]
    p_roofs: dict[str, list[float]]
    margin: float


@dataclass
class Estimate:
    """A configuration as the online model sees it: measured parts as measured."""

    accuracy: float
    encoder_ms: float
    prefill_ms: float
    low_ms: float  # optimistic: predicted parts times (1 - their optimism)
    high_ms: float  # pessimistic: predicted parts times (1 + their optimism)
    new_measurements: int  # parts (encoder, prefill) not measured yet

    @property
    def ttft_ms(self) -> float:
        return self.encoder_ms + self.prefill_ms


def improvement(
    acc: float, ttft: float, front: Sequence[tuple[float, float]], ref: tuple[float, float]
) -> float:
    """Hypervolume gained by adding (acc, ttft) to ``front`` in (accuracy, log10 TTFT), the
    report's axes, against ``ref`` = (lowest accuracy, highest TTFT of interest)."""
    from harness.pareto import hypervolume_2d

    if not (acc > ref[0] and 0 < ttft < ref[1]):
        return 0.0
    r = (ref[0], math.log10(ref[1]))
    pts = [(a, math.log10(t)) for a, t in front if t > 0]
    before = hypervolume_2d(np.array(pts), r) if pts else 0.0
    return hypervolume_2d(np.array(pts + [(acc, math.log10(ttft))]), r) - before


class CostPruner:
    """``pruner(search, config) -> Skip | None`` for :class:`harness.search.Search`, and
    ``pruner.propose(search) -> Config | None``: the next configuration worth measuring."""

    def __init__(self, profile: str = "host-cpu", margin: float | None = None):
        """``margin``: a fixed optimism; None adapts it to the online model's error."""
        from harness.predict.profiles import get_profile

        self.profile = get_profile(profile)
        self.margin = margin
        self.skipped = 0
        self.proposed = 0
        self.last_margin: float | None = None
        self._roof: dict[tuple[Any, ...], float] = {}
        self._acc: dict[Any, float] = {}
        #: skips decided by a predicted (not yet measured) dominator
        self.skipped_predicted = 0

    def _enc_roof(self, name: str, res: int, tiling: str) -> float:
        from harness.predict.costmodel import encoder_cost

        key = ("e", name, res, tiling)
        if key not in self._roof:
            self._roof[key] = roofline_ms(encoder_cost(name, res, tiling), self.profile, "encoder")
        return self._roof[key]

    def _pre_roof(self, llm: str, tokens: int) -> float:
        from harness.predict.costmodel import prefill_cost

        key = ("p", llm, tokens)
        if key not in self._roof:
            self._roof[key] = roofline_ms(prefill_cost(llm, tokens), self.profile, "prefill")
        return self._roof[key]

    def _online(self, search: Any) -> _Online | None:
        """The online model on the search's measurements so far; None before any, or when
        the cost model cannot describe what was measured."""
        df = search.store.measurements(run_ids=[search.run_id], status="ok")
        if df is None or len(df) == 0:
            return None
        enc_rows = df[df["kind"] == "encoder"]
        pre_rows = df[df["kind"] == "prefill"]
        try:
            e_data = [
                (
                    r["name"],
                    float(r["median_ms"]),
                    self._enc_roof(r["name"], int(r["resolution"]), r["tiling"]),
                )
                for _, r in enc_rows.iterrows()
            ]
            p_data = [
                (
                    r["name"],
                    float(r["median_ms"]),
                    self._pre_roof(r["name"], int(r["tokens"]) + int(r["prompt_tokens"])),
                )
                for _, r in pre_rows.iterrows()
            ]
            e_scales, _ = online_scales(e_data)
            p_scales, _ = online_scales(p_data)
            margin = (
                self.margin
                if self.margin is not None
                else adaptive_margin(loo_errors(e_data) + loo_errors(p_data))
            )
        except Exception:  # noqa: BLE001 - anything the cost model cannot describe is measured
            return None
        return _Online(
            enc_ms={
                (r["name"], int(r["resolution"]), str(r["tiling"])): float(r["median_ms"])
                for _, r in enc_rows.iterrows()
            },
            pre_ms={
                (r["name"], int(r["tokens"])): float(r["median_ms"]) for _, r in pre_rows.iterrows()
            },
            e_scales=e_scales,
            p_scales=p_scales,
            e_roofs=self._roofs(e_data),
            p_roofs=self._roofs(p_data),
            margin=margin,
        )

    def estimate(self, search: Any, c: Any, m: _Online) -> Estimate | None:
        """``c`` as the online model ``m`` sees it; None when a part cannot be predicted (its
        encoder or LLM has no rows yet) or the accuracy is unknown."""
        space = search.space
        tokens = space.tokens(c)
        e = m.enc_ms.get((c.encoder, c.resolution, c.tiling))
        p = m.pre_ms.get((c.llm, tokens))
        e_lo = e_hi = p_lo = p_hi = 1.0
        try:
            if e is None:
                if c.encoder not in m.e_scales:
                    return None
                roof = self._enc_roof(c.encoder, c.resolution, c.tiling)
                a, b = m.e_scales[c.encoder]
                e = a * roof**b
                w = part_margin(m.margin, roof, m.e_roofs[c.encoder])
                e_lo, e_hi = 1 - w, 1 + w
            if p is None:
                if c.llm not in m.p_scales:
                    return None
                roof = self._pre_roof(c.llm, tokens + space.cfg.prompt_tokens)
                a, b = m.p_scales[c.llm]
                p = a * roof**b
                w = part_margin(m.margin, roof, m.p_roofs[c.llm])
                p_lo, p_hi = 1 - w, 1 + w
        except Exception:  # noqa: BLE001 - the cost model cannot describe it: measure it
            return None
        acc = self._accuracy(search, c)
        if math.isnan(acc):
            return None
        new = int((c.encoder, c.resolution, c.tiling) not in m.enc_ms) + int(
            (c.llm, tokens) not in m.pre_ms
        )
        return Estimate(acc, e, p, e * e_lo + p * p_lo, e * e_hi + p * p_hi, new)

    def __call__(self, search: Any, c: Any) -> Skip | None:
        m = self._online(search)
        if m is None:
            return None
        est = self.estimate(search, c, m)
        if est is None or est.new_measurements == 0:
            return None  # unpredictable, or costs (almost) nothing: measure it
        budget = search.settings.budget_ms
        front = _front(search)
        self.last_margin = m.margin
        if dominated(est.accuracy, est.low_ms, front, budget):
            self.skipped += 1
            return Skip(
                est.accuracy,
                est.ttft_ms,
                f"predicted TTFT {est.ttft_ms:.0f} ms cannot reach the frontier",
            )
        # Not beaten by a measured point: is it beaten by another configuration's prediction
        # (pessimistic), i.e. would measuring that one first make this one pointless?
        others = [
            (o.accuracy, o.high_ms)
            for d in search.space.configs()
            if d != c and d not in search._seen
            for o in [self.estimate(search, d, m)]
            if o is not None
        ]
        if dominated_by_prediction(est.accuracy, est.low_ms, others, budget):
            self.skipped += 1
            self.skipped_predicted += 1
            return Skip(
                est.accuracy,
                est.ttft_ms,
                f"predicted TTFT {est.ttft_ms:.0f} ms is beaten by a configuration predicted faster and as accurate",
            )
        return None

    def propose(self, search: Any) -> Any:
        """The unmeasured configuration whose *optimistic* TTFT adds the most hypervolume to
        the measured (feasible) front per new measurement it needs (one free of new
        measurements counts as half of one); None while the online model cannot predict
        every name, or when no configuration can improve the front even optimistically
        (the sampler's proposals are then all skipped). Ties go to the lower TTFT."""
        m = self._online(search)
        if m is None:
            return None
        budget = search.settings.budget_ms
        ests = []
        for d in search.space.configs():
            if d in search._seen:
                continue
            est = self.estimate(search, d, m)
            if est is None:
                return None  # a name the model has not seen: leave the choice to the sampler
            ests.append((d, est))
        if not ests:
            return None
        accs = [e.accuracy for _, e in ests] + [float(p["accuracy"]) for p in search._seen.values()]
        ref_t = budget if budget is not None else 1.1 * max(e.high_ms for _, e in ests)
        ref = (min(accs) - 1e-9, ref_t)
        front = _front(search)
        best, best_score = None, 0.0
        for d, est in ests:
            gain = improvement(est.accuracy, est.low_ms, front, ref)
            score = gain / max(est.new_measurements, 0.5)
            if score > best_score * (1 + 1e-9) or (
                best is not None and math.isclose(score, best_score) and est.low_ms < best[1]
            ):
                best, best_score = (d, est.low_ms), score
        self.last_margin = m.margin
        if best is None:
            return None
        self.proposed += 1
        return best[0]

    @staticmethod
    def _roofs(data: Sequence[tuple[str, float, float]]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for name, _, roof in data:
            out.setdefault(name, []).append(roof)
        return out

    def _accuracy(self, search: Any, c: Any) -> float:
        if c not in self._acc:
            acc, _ = search.accuracy(c, search.space.tokens(c), search.space.llm_params_b[c.llm])
            self._acc[c] = float(acc)
        return self._acc[c]


def _front(search: Any) -> list[tuple[float, float]]:
    """(accuracy, TTFT) of the feasible configurations the search has measured."""
    return [
        (float(p["accuracy"]), float(p["ttft_ms"]))
        for p in search._seen.values()
        if p.get("feasible", True)
    ]
