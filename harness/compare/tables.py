"""Tables of measurements (store rows, exports, benchmark JSON) compared key by key."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.compare.samples import (
    CONTEXT_FIELDS,
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
    KEY_FIELDS,
    MIN_SAMPLES,
    SampleComparison,
    check_comparable,
    check_thresholds,
    compare_samples,
)
from harness.errors import UserError

# --------------------------------------------------------------------------------------------
# Tables of measurements (store rows / exports)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyComparison:
    """One measured key (see KEY_FIELDS) of a table comparison."""

    key: dict[str, Any]
    context: dict[str, Any]
    result: SampleComparison

    @property
    def label(self) -> str:
        return key_label(self.key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "context": self.context,
            **self.result.to_dict(),
        }


@dataclass(frozen=True)
class TableComparison:
    """All keys of a baseline-vs-candidate comparison, plus keys only one side has."""

    rows: list[KeyComparison]
    only_baseline: list[str] = field(default_factory=list)
    only_candidate: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: keys whose rows on one side had another backend/device/dtype/protocol than the pairing
    other_context: list[str] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD
    alpha: float = DEFAULT_ALPHA
    #: Standard deviation of log median between two runs on this machine (0: not included).
    run_sd: float = 0.0

    @property
    def regressions(self) -> list[KeyComparison]:
        return [r for r in self.rows if r.result.verdict == "regression"]

    @property
    def improvements(self) -> list[KeyComparison]:
        return [r for r in self.rows if r.result.verdict == "improvement"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "alpha": self.alpha,
            "run_sd": self.run_sd,
            "regressions": len(self.regressions),
            "improvements": len(self.improvements),
            "rows": [r.to_dict() for r in self.rows],
            "only_baseline": self.only_baseline,
            "only_candidate": self.only_candidate,
            "skipped": self.skipped,
            "other_context": self.other_context,
        }


def key_label(key: Mapping[str, Any]) -> str:
    """Short human label of a measurement key, e.g. ``encoder fastvithd@1024 2x2+overview``."""
    parts = [str(key.get("kind", "")), str(key.get("name", ""))]
    res, tiling = key.get("resolution", 0), key.get("tiling", "none")
    tokens, prompt = key.get("tokens", 0), key.get("prompt_tokens", 0)
    if res not in (0, "0", None):
        parts[-1] += f"@{res}"
    in_dim = key.get("in_dim", 0)
    if key.get("kind") == "projector" and in_dim not in (0, "0", None):
        parts[-1] = f"{in_dim}->{parts[-1]}"  # one projector per encoder width
    if tiling not in ("none", None, ""):
        parts.append(str(tiling))
    if key.get("kind") == "prefill" or prompt not in (0, "0", None):
        parts.append(f"tok={tokens}+{prompt}")
    elif key.get("kind") == "projector" and tokens not in (0, "0", None):
        parts.append(f"tok={tokens}")
    return " ".join(p for p in parts if p)


def _normalise(rows: Any) -> list[dict[str, Any]]:
    """Rows as dicts with every key/context field present (missing ones get neutral values)."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        records = rows.to_dict("records")
    else:
        records = [dict(r) for r in rows]
    defaults: dict[str, Any] = {
        "kind": "encoder",
        "resolution": 0,
        "tiling": "none",
        "tokens": 0,
        "prompt_tokens": 0,
        "in_dim": 0,
        "backend": "none",
        "device": "none",
        "dtype": "none",
        "protocol": "none",
        "machine_id": "unknown",
        "status": "ok",
    }
    out = []
    for r in records:
        for k, v in defaults.items():
            if r.get(k) is None or (isinstance(r.get(k), float) and math.isnan(r[k])):
                r[k] = v
        for k in ("resolution", "tokens", "prompt_tokens", "in_dim"):
            try:
                r[k] = int(r[k])
            except (TypeError, ValueError):
                pass
        if "name" not in r:
            raise UserError("measurement rows need a 'name' column")
        out.append(r)
    return out


def parse_samples(value: Any) -> list[float]:
    """A row's ``samples_ms`` (a list, a numpy array, or JSON text; missing is empty) as floats.

    Anything else (a scalar, nested lists, strings inside) is a ``ValueError``.
    """
    s = value
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return []
    if isinstance(s, str):
        import json

        try:
            s = json.loads(s)
        except json.JSONDecodeError:
            raise ValueError("not JSON") from None
    if hasattr(s, "tolist"):  # a numpy array (parquet)
        s = s.tolist()
    if not isinstance(s, (list, tuple)) or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in s
    ):
        raise ValueError("not a list of numbers")
    return [float(v) for v in s]


def _samples(r: Mapping[str, Any]) -> list[float]:
    try:
        return parse_samples(r.get("samples_ms"))
    except ValueError:
        raise UserError(
            f"samples_ms of {r.get('kind', '?')} {r.get('name', '?')} is not a JSON list of "
            f"numbers ({str(r.get('samples_ms'))[:40]!r})"
        ) from None


def group_rows(rows: Any) -> dict[tuple, dict[tuple, list[dict[str, Any]]]]:
    """``{key tuple: {context tuple: [rows]}}`` for rows with status 'ok'."""
    groups: dict[tuple, dict[tuple, list[dict[str, Any]]]] = {}
    for r in _normalise(rows):
        if str(r.get("status", "ok")) != "ok":
            continue
        k = tuple(r[f] for f in KEY_FIELDS)
        c = tuple(str(r[f]) for f in CONTEXT_FIELDS)
        groups.setdefault(k, {}).setdefault(c, []).append(r)
    return groups


def _one_machine(rows: list[dict[str, Any]], side: str) -> None:
    machines = sorted({str(r["machine_id"]) for r in rows})
    if len(machines) > 1:
        raise UserError(
            f"the {side} mixes runs from different machines ({', '.join(machines)}); "
            "pick runs from one machine"
        )


def compare_tables(
    baseline: Any,
    candidate: Any,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    *,
    min_samples: int = MIN_SAMPLES,
    n_boot: int = 2000,
    run_sd: float = 0.0,
) -> TableComparison:
    """Compare two tables of measurement rows (DataFrame or dicts with ``samples_ms`` lists).

    The baseline may hold several runs (a window): their samples are pooled per key. Rows
    are paired by KEY_FIELDS; a key present on both sides with a different context
    (machine, backend, device, dtype, protocol) is refused, as is a side mixing machines.

    ``run_sd`` is the machine's run-to-run standard deviation of log median (one run). A
    key's ratio then carries ``run_sd * sqrt(1 + 1/k)`` for a baseline pooled over ``k``
    runs (rows without a ``run_id`` count as one run); see :func:`compare_samples`.
    """
    check_thresholds(threshold, alpha)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 2:
        raise UserError(
            f"--min-samples must be at least 2 (a rank test needs two per side), got {min_samples}"
        )
    b_rows, c_rows = _normalise(baseline), _normalise(candidate)
    if not b_rows:
        raise UserError("the baseline has no measurements")
    if not c_rows:
        raise UserError("the candidate has no measurements")
    _one_machine(b_rows, "baseline")
    _one_machine(c_rows, "candidate")
    check_comparable(
        {"machine_id": b_rows[0]["machine_id"]},
        {"machine_id": c_rows[0]["machine_id"]},
        "baseline and candidate",
    )
    bg, cg = group_rows(b_rows), group_rows(c_rows)
    skipped = sorted({key_label(r) for r in b_rows + c_rows if str(r.get("status", "ok")) != "ok"})

    out: list[KeyComparison] = []
    other: list[str] = []
    for k in sorted(set(bg) & set(cg), key=lambda t: tuple(str(x) for x in t)):
        common = sorted(set(bg[k]) & set(cg[k]))
        key = dict(zip(KEY_FIELDS, k, strict=True))
        if common:
            for side, groups in (("baseline", bg), ("candidate", cg)):
                for ctx in sorted(set(groups[k]) - set(common)):
                    other.append(f"{key_label(key)} ({side}: {'/'.join(ctx[1:])})")
        if not common:
            b_ctx = dict(zip(CONTEXT_FIELDS, sorted(bg[k])[0], strict=True))
            c_ctx = dict(zip(CONTEXT_FIELDS, sorted(cg[k])[0], strict=True))
            check_comparable(b_ctx, c_ctx, f"baseline and candidate of {key_label(key)}")
        for ctx in common:
            b = [s for r in bg[k][ctx] for s in _samples(r)]
            c = [s for r in cg[k][ctx] for s in _samples(r)]
            label = key_label(key) + (f" ({ctx[1]}/{ctx[3]})" if len(common) > 1 else "")
            k_runs = max(1, len({str(r.get("run_id")) for r in bg[k][ctx]}))
            res = compare_samples(
                b,
                c,
                threshold,
                alpha,
                min_samples=min_samples,
                n_boot=n_boot,
                where=label,
                run_sd=run_sd * math.sqrt(1.0 + 1.0 / k_runs),
            )
            out.append(
                KeyComparison(
                    key=key, context=dict(zip(CONTEXT_FIELDS, ctx, strict=True)), result=res
                )
            )
    if not out:
        raise UserError(
            "baseline and candidate have no measurement in common (same kind, name, resolution, "
            "tiling, tokens); nothing to compare"
        )
    return TableComparison(
        rows=out,
        only_baseline=sorted(
            key_label(dict(zip(KEY_FIELDS, k, strict=True))) for k in set(bg) - set(cg)
        ),
        only_candidate=sorted(
            key_label(dict(zip(KEY_FIELDS, k, strict=True))) for k in set(cg) - set(bg)
        ),
        skipped=skipped,
        other_context=other,
        threshold=threshold,
        alpha=alpha,
        run_sd=run_sd,
    )
