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
import re
import sys
from collections.abc import Sequence

from harness import __version__
from harness.errors import UserError, suggest

#: name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "zoo": ("harness.commands.zoo", "list encoders and LLMs with params, strides and token counts"),
    "sweep": (
        "harness.commands.sweep",
        "measure an (encoder x resolution x LLM x tiling) grid (Hydra app)",
    ),
    "ingest": (
        "harness.commands.ingest",
        "ingest eval results (lmms-eval JSON, tidy CSV) as accuracy rows",
    ),
    "report": (
        "harness.commands.report",
        "write the Pareto report (HTML, figures, summary.md, CSV)",
    ),
    "choose": (
        "harness.commands.choose",
        "pick the most accurate configuration under a TTFT budget",
    ),
    "search": (
        "harness.commands.search",
        "Optuna search of a large configuration space under a budget",
    ),
    "compare": (
        "harness.commands.compare",
        "compare two runs (or benchmark files) for regressions",
    ),
    "nightly": (
        "harness.commands.nightly",
        "nightly regression run against the history on this machine",
    ),
    "predict": (
        "harness.commands.predict",
        "predict encoder, prefill and TTFT for a device profile; validate it",
    ),
    "runtimes": (
        "harness.commands.runtimes",
        "deployment runtimes vs fp32 eager: speedup and parity per model and size",
    ),
    "runs": (
        "harness.commands.runs",
        "list runs in the store, or export measurements (CSV/Parquet/JSON)",
    ),
    "db": ("harness.commands.db", "check, migrate or recover the results store"),
}

#: Commands that take their own argv (Hydra parses it).
PASSTHROUGH = {"sweep"}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a bad option is a UserError (exit 2), no usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = [c.strip().strip("'\"") for c in m.group(2).split(",")]
            head = message.split(":", 1)[0]
            message = f"{head}: " + suggest(m.group(1), choices, "choice")
        raise UserError(f"{self.prog}: {message} (see '{self.prog} --help')")


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (module, help_) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            out[name] = (module, help_)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vlm-pareto",
        description=(
            "Benchmark vision-language models on accuracy vs time-to-first-token "
            "(TTFT = vision encoder + projector + LLM prefill) and find the Pareto frontier."
        ),
        epilog="Run 'vlm-pareto <command> --help' for a command's options. The global options "
        "--db, --debug and --json may also follow the command. Exit codes: 0 ok, "
        "1 failure/regression/nothing fits, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"vlm-pareto {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
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


def _hoist_globals(argv: list[str]) -> tuple[dict[str, object], list[str]]:
    """Take ``--db X`` / ``--db=X`` / ``--debug`` from anywhere (before ``--``), and ``--json``
    from before the command, so global options work before or after the subcommand."""
    opts: dict[str, object] = {"db": None, "debug": False, "json": False}
    out: list[str] = []
    command_seen = False
    i = 0
    while i < len(argv):
        t = argv[i]
        if t == "--":
            out.extend(argv[i:])
            break
        if t == "--debug":
            opts["debug"] = True
        elif t == "--db" or t.startswith("--db="):
            value = t[len("--db=") :] if "=" in t else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 0 if "=" in t else 1
            if not value or value.startswith("--"):
                raise UserError("--db needs a value: a SQLite file path or a SQLAlchemy URL")
            opts["db"] = value
        elif t == "--json" and not command_seen:
            opts["json"] = True
        else:
            if not t.startswith("-"):
                command_seen = True
            out.append(t)
        i += 1
    return opts, out


def db_error_line(e: BaseException) -> str | None:
    """One line for a database error that escaped the store's own handling (None: not one)."""
    import sqlite3

    mod = type(e).__module__ or ""
    if not (isinstance(e, sqlite3.Error) or mod.startswith(("sqlalchemy", "psycopg"))):
        return None
    from harness.store import (
        corrupt_message,
        describe_url,
        error_line,
        is_corruption,
        resolve_url,
    )

    where = describe_url(resolve_url(None))
    detail = error_line(e)
    if is_corruption(e):
        return corrupt_message(where, detail)
    return (
        f"database error on {where}: {detail}; check the store with 'vlm-pareto db check' "
        "(rerun with --debug for the traceback)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("VLM_PARETO_DEBUG") == "1"
    try:
        opts, argv = _hoist_globals(argv)
        if opts["db"]:
            os.environ["VLM_PARETO_DB"] = str(opts["db"])
        if argv and argv[0] in PASSTHROUGH:
            # --json after 'sweep' too (the Hydra app spells it json=true)
            json_flag = opts["json"] or "--json" in argv[1:]
            rest = [a for a in argv[1:] if a != "--json"] + (["json=true"] if json_flag else [])
            module = importlib.import_module(COMMANDS[argv[0]][0])
            return int(module.main(rest, debug=debug) or 0)
        if argv and not argv[0].startswith("-") and argv[0] not in _available():
            raise UserError(suggest(argv[0], _available(), "command"))
        if opts["json"] and argv and not argv[0].startswith("-"):
            argv.insert(1, "--json")
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 0
        args.db = opts["db"]
        args.debug = debug
        module = importlib.import_module(args._module)
        return int(module.run(args) or 0)
    except UserError as e:
        if debug:  # the traceback, and still the exit code of a user error
            import traceback

            traceback.print_exc()
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
        print(
            "vlm-pareto: interrupted (completed measurements are kept in the store)",
            file=sys.stderr,
        )
        return 130
    except Exception as e:
        line = None if debug else db_error_line(e)
        if line is None:
            raise
        print(f"vlm-pareto: error: {' '.join(line.split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
