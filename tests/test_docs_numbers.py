"""The numbers in docs/encoders.md (and docs/encoders-fastvit.md's parameter table) are the zoo's.

A doc table typed by hand drifts (125.2M in the docs while `zoo` said 125.04M): this test
reads the tables and compares every parameter count, stride, width and token count with what
`vlm-pareto zoo` computes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.commands.zoo import encoder_rows

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def zoo() -> dict[str, dict]:
    return {r["name"]: r for r in encoder_rows()}


def _table_rows(text: str, header_start: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header_start))
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip().strip("|").split("|")])
    return rows


def test_encoders_md_zoo_table_matches_the_zoo(zoo):
    rows = _table_rows(
        (DOCS / "encoders.md").read_text(), "| name (aliases) | params measured (paper)"
    )
    names = [re.match(r"`([^`]+)`", r[0]).group(1) for r in rows]
    from harness.encoders.zoo import BUILTIN_ORDER

    assert names == list(BUILTIN_ORDER), "every built-in encoder has one row, in zoo order"
    for name, (_, params, _, timed, stride, out_dim, tokens) in zip(names, rows, strict=True):
        z = zoo[name]
        m = re.fullmatch(r"([\d.]+)M \(([\d.]+)M\)", params)
        assert m, params
        assert m.group(1) == f"{z['params_m']:.2f}", (
            f"{name}: docs say {m.group(1)}M, zoo {z['params_m']:.2f}M"
        )
        assert float(m.group(2)) == z["params_m_paper"], name
        timed_m = re.search(r"\(([\d.]+)M\)", timed)
        assert timed_m and timed_m.group(1) == f"{z['params_m_encoder']:.2f}", (
            f"{name}: timed module {timed}"
        )
        assert int(stride) == z["stride"] and int(out_dim) == z["out_dim"], name
        doc_tokens = dict(pair.split("→") for pair in tokens.split(", "))
        assert {int(k): int(v) for k, v in doc_tokens.items()} == {
            int(k): v for k, v in z["tokens"].items()
        }, name


def test_encoders_fastvit_md_parameter_table_matches_the_zoo(zoo):
    rows = _table_rows(
        (DOCS / "encoders-fastvit.md").read_text(), "| model | form | encoder (no head)"
    )
    rep = {r[0]: r for r in rows if r[1] == "reparameterized"}
    for doc_name, zoo_name in (("FastViTHD", "fastvithd"), ("MCi2", "fastvit")):
        _, _, enc, head, total, _ = rep[doc_name]
        z = zoo[zoo_name]
        assert (
            enc.strip("*") == f"{z['params_m_encoder']:.2f}"
            and total.strip("*") == f"{z['params_m']:.2f}"
        )
        assert abs(float(enc.strip("*")) + float(head) - float(total.strip("*"))) < 0.011


def test_docs_make_no_faster_than_timm_claim():
    text = (DOCS / "encoders-fastvit.md").read_text() + (DOCS / "encoders.md").read_text()
    assert "1.6-2.3x faster" not in text
    assert "0.91-0.99" in text and "2e-7" in text
