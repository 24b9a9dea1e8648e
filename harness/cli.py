"""The ``vlm-pareto`` command line.

Each subcommand lives in ``harness/commands/<name>.py`` and exposes
``add_parser(subparsers) -> argparse.ArgumentParser`` and ``run(args) -> int``. Command modules
are imported only when needed, so ``vlm-pareto ingest --help`` never imports torch.
``sweep`` is a Hydra application and receives its arguments untouched.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from harness import __version__
from harness.errors import UserError, suggest

#: name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "zoo": ("harness.commands.zoo", "list encoders and LLMs with params, strides and token counts"),
    "sweep": ("harness.commands.sweep", "measure an (encoder x resolution x LLM x tiling) grid (Hydra app)"),
    "ingest": ("harness.commands.ingest", "ingest eval results (lmms-eval JSON, tidy CSV) as accuracy rows"),
    "report": ("harness.commands.report", "write the Pareto report (HTML, figures, summary.md, CSV)"),
    "choose": ("harness.commands.choose", "pick the most accurate configuration under a TTFT budget"),
    "search": ("harness.commands.search", "Optuna search of a large configuration space under a budget"),
    "compare": ("harness.commands.compare", "compare two runs (or benchmark files) for regressions"),
    "nightly": ("harness.commands.nightly", "nightly regression run against the history on this machine"),
    "runtimes": ("harness.commands.runtimes", "deployment runtimes vs fp32 eager: speedup and parity per model and size"),
    "runs": ("harness.commands.runs", "list runs in the store, or export measurements (CSV/Parquet/JSON)"),
}

#: Commands that take their own argv (Hydra parses it).
PASSTHROUGH = {"sweep"}


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (module, help_) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            out[name] = (module, help_)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-pareto",
        description=(
            "Benchmark vision-language models on accuracy vs time-to-first-token "
            "(TTFT = vision encoder + projector + LLM prefill) and find the Pareto frontier."
        ),
        epilog="Run 'vlm-pareto <command> --help' for a command's options. Exit codes: 0 ok, "
        "1 failure/regression/nothing fits, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"vlm-pareto {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument(
        "--db",
        default=None,
        help="results store: SQLAlchemy URL or SQLite file path "
        "(default: $VLM_PARETO_DB or sqlite:///results/vlm_pareto.db)",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module, help_) in _available().items():
        if name in PASSTHROUGH:
            sub.add_parser(name, help=help_, add_help=False)
            continue
        mod = importlib.import_module(module)
        p = mod.add_parser(sub)
        p.set_defaults(_module=module)
    return parser


def _split_passthrough(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """Split global options from a pass-through command and its own arguments."""
    for i, token in enumerate(argv):
        if token in PASSTHROUGH:
            return argv[:i], token, argv[i + 1 :]
        if not token.startswith("-") and (i == 0 or argv[i - 1] != "--db"):
            break
    return argv, None, []


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("VLM_PARETO_DEBUG") == "1"
    try:
        head, passthrough, rest = _split_passthrough(argv)
        if passthrough is not None:
            parser = argparse.ArgumentParser(prog="vlm-pareto", add_help=False)
            parser.add_argument("--debug", action="store_true")
            parser.add_argument("--db", default=None)
            gargs = parser.parse_args(head)
            if gargs.db:
                os.environ["VLM_PARETO_DB"] = gargs.db
            module = importlib.import_module(COMMANDS[passthrough][0])
            return int(module.main(rest, debug=gargs.debug) or 0)
        parser = build_parser()
        if argv and not argv[0].startswith("-") and argv[0] not in _available():
            raise UserError(suggest(argv[0], _available(), "command"))
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 0
        if args.db:
            os.environ["VLM_PARETO_DB"] = args.db
        module = importlib.import_module(args._module)
        return int(module.run(args) or 0)
    except UserError as e:
        if debug:
            raise
        print(f"vlm-pareto: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # output piped into `head` and closed early: not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        print("vlm-pareto: interrupted (completed measurements are kept in the store)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
