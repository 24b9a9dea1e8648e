"""Hydra sweeps: typed configs, a factorized plan, a resumable engine, presets in ``sweeps/``."""

from __future__ import annotations


def run_preset(preset: str, protocol: str | None = None, rounds: int = 1, db: str | None = None,
               overrides: list[str] | None = None, report: bool = False, progress: bool = False) -> str:
    """Run sweep preset ``preset`` in-process (no Hydra launcher) and return its run id.

    Used by ``vlm-pareto nightly``: ``protocol`` replaces the preset's protocol group and
    ``rounds`` repeats the grid, interleaved, so drift on a shared machine hits every point.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from harness.errors import UserError
    from harness.sweep.configs import config_dir, presets, register_configs, to_typed
    from harness.sweep.engine import run_sweep

    if preset not in presets():
        from harness.errors import suggest

        raise UserError(suggest(preset, presets(), "sweep preset"))
    register_configs()
    ov = list(overrides or [])
    if protocol:
        ov.append(f"protocol={protocol}")
    ov += [f"rounds={rounds}", f"report={str(report).lower()}", f"progress={str(progress).lower()}"]
    if db:
        ov.append(f"db={db}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            try:
                cfg = compose(config_name=preset, overrides=ov)
            except Exception as e:
                raise UserError(f"invalid sweep config: {str(e).splitlines()[0]}") from e
    finally:
        GlobalHydra.instance().clear()
    typed = to_typed(cfg)
    out = run_sweep(typed, command=f"vlm-pareto nightly --preset {preset}")
    return out.run_id
