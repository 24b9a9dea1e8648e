"""Run a sweep preset in-process (the nightly job's entry into the sweep engine)."""

from __future__ import annotations


def run_preset(
    preset: str,
    protocol: str | None = None,
    rounds: int = 1,
    db: str | None = None,
    overrides: list[str] | None = None,
    report: bool = False,
    progress: bool = False,
) -> str:
    """Run sweep preset ``preset`` in-process (no Hydra launcher) and return its run id.

    Used by ``vlm-pareto nightly``: ``protocol`` replaces the preset's protocol group and
    ``rounds`` repeats the grid, interleaved, so drift on a shared machine hits every point.
    """
    from harness.errors import UserError, suggest
    from harness.sweep.configs import compose_sweep, presets
    from harness.sweep.engine import run_sweep

    if preset not in presets():
        raise UserError(suggest(preset, presets(), "sweep preset"))
    ov = list(overrides or [])
    if protocol:
        ov.append(f"protocol={protocol}")
    ov += [f"rounds={rounds}", f"report={str(report).lower()}", f"progress={str(progress).lower()}"]
    if db:
        ov.append(f"db={db}")
    typed = compose_sweep(preset, ov)
    out = run_sweep(typed, command=f"vlm-pareto nightly --preset {preset}")
    return out.run_id
