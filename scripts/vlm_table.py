"""Print every shipped open VLM: parameters (built on the meta device) and visual tokens per size.

    python scripts/vlm_table.py            # full-size configs in sweeps/vlm/
    python scripts/vlm_table.py --all      # tiny test configs too

Nothing is run or allocated; takes seconds. See docs/vlms.md.
"""

from __future__ import annotations

import argparse

from harness.vlm import family_of, list_vlms, load_vlm, vlm_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="include the tiny-* test configs")
    args = ap.parse_args()
    print(
        f"{'vlm':<22} {'family':<16} {'vision M':>9} {'conn M':>7} {'llm M':>8} {'total B':>8} {'published':>9}  tokens per size"
    )
    for name in list_vlms():
        if name.startswith("tiny-") and not args.all:
            continue
        vlm = load_vlm(name)
        fam = family_of(vlm)
        p = vlm_params(vlm)
        sizes = vlm.resolutions or fam.valid_sizes(vlm)[:6]
        toks = ", ".join(f"{r}:{fam.tokens(vlm, r)}" for r in sizes)
        pub = vlm.published.get("params_b", "-")
        print(
            f"{name:<22} {fam.name:<16} {p['vision'] / 1e6:>9.1f} {p['connector'] / 1e6:>7.1f} {p['llm'] / 1e6:>8.1f} "
            f"{p['total'] / 1e9:>8.3f} {pub!s:>9}  {toks}"
        )


if __name__ == "__main__":
    main()
