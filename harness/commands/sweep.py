"""``vlm-pareto sweep``: the Hydra application (arguments go to Hydra untouched)."""

from __future__ import annotations


def main(argv: list[str], debug: bool = False) -> int:
    from harness.sweep.app import main as app_main

    return app_main(argv, debug=debug)
