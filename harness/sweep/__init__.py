"""Hydra sweeps: typed configs, a factorized plan, a resumable engine, presets in ``sweeps/``.

The package itself imports nothing (importing ``harness.sweep.configs`` must not load the
engine and, through it, every backend): ``harness.sweep.preset.run_preset`` runs a preset
in-process.
"""
