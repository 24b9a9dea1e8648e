"""Measuring configurations through the engine's Measurer into one run of the store."""

from __future__ import annotations

from typing import Any

from harness.errors import UserError
from harness.search.space import Config, SearchSpace

# ------------------------------------------------------------------------ measurement


class Evaluator:
    """Measures configurations into one run of the store, through the sweep's runners.

    Tasks are made by ``harness.sweep.plan.point_tasks`` (as the sweep's plan makes them) and measured by the engine's
    :class:`~harness.sweep.engine.Measurer` (the claim/reuse logic: an ``ok`` row of the run is reused, a dead worker's claim taken over),
    so a configuration sharing an encoder setting or a prefill token count with an earlier one
    costs only the missing tasks.
    """

    def __init__(self, space: SearchSpace, store: Any, run_id: str):
        import sys

        from harness.sweep.engine import Measurer, sweep_run_to_run
        from harness.sweep.runners import Runners

        self.space, self.store, self.run_id = space, store, run_id
        self.runners = Runners(space.cfg, space.llm_specs)
        run = store.get_run(run_id) or {}
        # intervals carry the machine's run-to-run term, as a sweep's do (harness/drift.py)
        term = sweep_run_to_run(
            space.cfg,
            store,
            str(run.get("machine_id", "")),
            run_id,
            lambda msg: print(msg, file=sys.stderr),
        )
        self.measurer = Measurer(
            store,
            run_id,
            self.runners,
            run_to_run=term,
            confidence=self.runners.protocol.confidence,
        )
        self.progress: Any = (
            None  # a harness.progress.Progress: one line per measurement off a terminal
        )

    def ttft(self, c: Config) -> dict[str, Any]:
        """Measure (or reuse) the tasks of ``c`` and return its composed TTFT row.

        Raises UserError when a task was skipped or failed (its reason is in the store).
        """
        from harness.sweep.plan import Plan, jobs, point_tasks
        from harness.ttft import compose_ttft

        enc = self.space.encoders[c.encoder]
        tokens = self.space.tokens(c)
        et, pt, jt = point_tasks(
            self.space.cfg,
            enc.label,
            self.space.llms[c.llm],
            c.llm,
            c.resolution,
            c.tiling,
            tokens,
            enc.out_dim,
        )
        # the projector for this encoder's channels comes along with the prefill
        job_list = jobs(
            Plan(encoder_tasks=[et], prefill_tasks=[pt], projector_tasks=[jt]), self.runners.key
        )
        for job in job_list:
            self.measurer.run(job)
            if self.progress is not None:
                self.progress.measured(job.label, self.measurer.row(job.key))
        ek, pk, jk = (j.key for j in job_list)
        rows = {
            kind: self.store.get_measurement(self.run_id, k)
            for kind, k in (("encoder", ek), ("prefill", pk), ("projector", jk))
        }
        bad = {k: r for k, r in rows.items() if r is None or r["status"] != "ok"}
        if bad:
            kind, r = next(iter(bad.items()))
            raise UserError(
                f"{c.label()}: {kind} {'missing' if r is None else r['status']}: "
                f"{'' if r is None else r.get('reason')}"
            )
        df = compose_ttft([rows["encoder"]], [rows["projector"]], [rows["prefill"]])
        if len(df) != 1:
            raise RuntimeError(f"{c.label()}: composing TTFT gave {len(df)} rows, expected 1")
        return {str(k): v for k, v in df.iloc[0].to_dict().items()}

    @property
    def measured(self) -> int:
        """Measurements taken by this process (reused ones excluded)."""
        return int(self.measurer.counts["measured"])

    def run_measurements(self) -> int:
        """Distinct successful measurements stored in the run (all sessions)."""
        return len(self.store.measurement_rows(run_ids=[self.run_id], status="ok"))
