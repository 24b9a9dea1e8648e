"""Hydra configs for `vlm-pareto sweep` (installed as the package ``harness.conf``)."""
