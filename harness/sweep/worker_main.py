"""The worker process of a round (harness/sweep/worker.py starts it): measure one round of a
sweep into its store and pickle what happened."""

from __future__ import annotations

import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.sweep.worker import NOT_REPRODUCIBLE, NotReproducible, RoundResult


def quiet_library_notices() -> None:
    """Rounds after the first: the libraries' deprecation notices were shown by the first
    round's worker already; every fresh interpreter would print them again."""
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _work(job: dict[str, Any]) -> RoundResult:
    from harness.backends import get_backend
    from harness.progress import Progress
    from harness.rounds import plan_rounds
    from harness.store import Store
    from harness.sweep.engine import Measurer, resolve
    from harness.sweep.plan import jobs
    from harness.sweep.runners import Runners

    cfg, rnd = job["cfg"], int(job["round"])
    try:
        plan, llm_specs = resolve(cfg)
        runners = Runners(cfg, llm_specs)
        for side in {cfg.backend.encoder_backend, cfg.backend.llm_backend}:
            get_backend(side)
    except UserError as e:
        raise NotReproducible(f"the config does not resolve in a fresh process: {e}") from e
    n_rounds, runners.protocol = plan_rounds(runners.protocol, cfg.rounds)
    store = Store(job["url"], check=False)
    measurer = Measurer(
        store,
        job["run_id"],
        runners,
        run_to_run=job.get("run_to_run"),
        confidence=runners.protocol.confidence,
    )
    job_list = jobs(plan, runners.key)
    state = job["progress"]
    progress = Progress(int(state["total"]), bool(cfg.progress), counts=measurer.counts)
    progress.done, progress.busy_s, progress.taken = (
        int(state["done"]),
        float(state["busy_s"]),
        int(state["taken"]),
    )
    measurer.start_round(rnd)
    try:
        for j in job_list:
            progress.step(j.label + f" (round {rnd + 1}/{n_rounds}, worker {os.getpid()})")
            measurer.run(j)
            progress.advance(measurer.row(j.key))
    finally:
        progress.close()
    return RoundResult(
        counts=measurer.counts,
        failures=measurer.failures,
        skipped=measurer.skipped,
        produced=set(measurer.produced),
        progress={"done": progress.done, "busy_s": progress.busy_s, "taken": progress.taken},
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(
            "usage: python -m harness.sweep.worker_main JOB RESULT (started by the sweep engine)",
            file=sys.stderr,
        )
        return 2
    job_path, result_path = Path(args[0]), Path(args[1])
    job = pickle.loads(job_path.read_bytes())
    if int(job["round"]) > 0:
        quiet_library_notices()
    out: dict[str, Any] = {"error": None, "result": None}
    rc = 0
    try:
        out["result"] = _work(job)
    except NotReproducible as e:
        out["error"], rc = str(e), NOT_REPRODUCIBLE
    except UserError as e:
        out["error"], rc = str(e), 2
    except KeyboardInterrupt:
        rc = 130
    result_path.write_bytes(pickle.dumps(out))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
