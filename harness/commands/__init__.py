"""Subcommands of ``vlm-pareto``: each module has ``add_parser(sub)`` and ``run(args) -> int``."""
