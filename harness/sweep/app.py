"""``vlm-pareto sweep``: a Hydra application over the configs in ``sweeps/``.

Every Hydra feature works (overrides, ``-m``, ``--config-name``, ``--config-dir``,
``hydra/launcher=joblib|submitit_local|submitit_slurm``, ``--cfg job``). Before Hydra runs,
the overrides are checked and every job's config is composed, typed and planned once, so a
typo, an invalid resolution or an empty grid is a one-line error (exit 2) before any
measurement starts. Jobs report their exit codes through files so that launchers running
jobs in other processes still give the right exit status.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from harness.errors import UserError, suggest

INFO_FLAGS = {
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--cfg",
    "-c",
    "--version",
    "--shell-completion",
    "-sc",
}
VALUE_FLAGS = {
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--config-path",
    "-cp",
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--info",
    "-i",
    "--experimental-rerun",
}
#: every flag of a Hydra app's command line (anything else is a typo, refused in one line)
KNOWN_FLAGS = INFO_FLAGS | VALUE_FLAGS | {"-m", "--multirun", "--resolve", "--run", "-r"}
CFG_CHOICES = ("job", "hydra", "all")
EXIT_DIR_ENV = "VLM_PARETO_SWEEP_EXIT_DIR"
#: The folder the sweep was started in: relative store and report paths mean that folder,
#: also when Hydra runs the job elsewhere (``hydra.job.chdir=true``).
LAUNCH_DIR_ENV = "VLM_PARETO_LAUNCH_DIR"
STARTED = "started-"

HELP_EPILOG = """
vlm-pareto sweep: measure an (encoder x resolution x LLM x tiling) grid.

  vlm-pareto sweep                           # default preset (paper_table4)
  vlm-pareto sweep --config-name quick       # presets: {presets}
  vlm-pareto sweep --config-name paper_fig4 protocol=standard backend=torch-cpu
  vlm-pareto sweep encoders.fastvithd.resolutions=[256,512] run_id=my-run   # resume my-run
  vlm-pareto sweep -m protocol=quick,standard hydra/launcher=joblib
  vlm-pareto sweep -m tiling=none,2x2 hydra/launcher=submitit_slurm hydra.launcher.partition=P  # docs/team.md
  vlm-pareto sweep --config-dir ./my_conf +encoder@encoders.mine=my_encoder
  vlm-pareto sweep --cfg job                 # print the composed config

Measurements go to the store (--db before 'sweep', or $VLM_PARETO_DB); the report for the
sweep is written to reports/<name>/ at the end. Progress goes to stderr: a bar on a terminal,
one line per finished measurement elsewhere (pipe, CI log); progress=false silences it.
Exit: 0 ok, 1 a point failed (or a launcher job died: rerun with the same run_id to finish),
2 bad input.
"""


def _split_args(argv: list[str]) -> tuple[dict[str, str], list[str], bool, bool]:
    """(flags with values, overrides, multirun?, info-only?)"""
    flags: dict[str, str] = {}
    overrides: list[str] = []
    multirun = info = False
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, val = a.partition("=")
        if a in ("-m", "--multirun"):
            multirun = True
        elif name in INFO_FLAGS:
            info = True
            if name in ("--cfg", "-c"):
                value = val if eq else (argv[i + 1] if i + 1 < len(argv) else "")
                if value not in CFG_CHOICES:
                    raise UserError(
                        f"sweep {name} needs one of {', '.join(CFG_CHOICES)}, got {value!r}"
                    )
            if (
                name in VALUE_FLAGS
                and not eq
                and i + 1 < len(argv)
                and not argv[i + 1].startswith("-")
            ):
                i += 1
        elif name in VALUE_FLAGS:
            if eq:
                flags[name] = val
            elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                flags[name] = argv[i + 1]
                i += 1
            else:
                raise UserError(f"sweep {name} needs a value (see 'vlm-pareto sweep --help')")
        elif a.startswith("-"):
            if name not in KNOWN_FLAGS:  # hydra would print its whole usage block
                raise UserError(
                    suggest(
                        name, sorted(f for f in KNOWN_FLAGS if f.startswith("--")), "sweep option"
                    )
                    + "; settings are key=value overrides, e.g. json=true progress=false"
                )
        else:
            overrides.append(a)
        i += 1
    return flags, overrides, multirun, info


def _flags_first(argv: list[str]) -> list[str]:
    """The command line with every flag (and its value) before the overrides: Hydra's parser
    takes overrides only as one trailing run, so ``a=1 -m b=2`` would be refused."""
    bare: list[
        str
    ] = []  # --info without its optional value: first, so no override becomes its value
    flags: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, _ = a.partition("=")
        if a.startswith("-"):
            takes = (
                name in VALUE_FLAGS
                and not eq
                and i + 1 < len(argv)
                and not argv[i + 1].startswith("-")
            )
            if takes and (name not in INFO_FLAGS or "=" not in argv[i + 1]):
                flags += [a, argv[i + 1]]
                i += 1
            elif name in ("--info", "-i") and not eq:
                bare.append(a)
            else:
                flags.append(a)
        else:
            overrides.append(a)
        i += 1
    return bare + flags + overrides


def _group_options(group: str, dirs: list[Path]) -> list[str]:
    names: set[str] = set()
    for d in dirs:
        g = d / group
        if g.is_dir():
            names.update(p.stem for p in g.glob("*.yaml"))
    return sorted(names)


def _hydra_group_options(group: str) -> list[str]:
    """Options of one of Hydra's own groups (``hydra/launcher``: basic, joblib, ...), plugins
    included; empty when the group is unknown or Hydra's loader cannot say."""
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra._internal.utils import create_config_search_path
        from hydra.core.plugins import Plugins

        Plugins.instance()  # plugins (joblib, submitit) register their configs on discovery
        loader = ConfigLoaderImpl(config_search_path=create_config_search_path(None))
        return sorted(loader.get_group_options(group))
    except Exception:  # a private API: never let it stand between a user and Hydra
        return []


def _check_group_overrides(overrides: list[str], dirs: list[Path]) -> None:
    """Unknown config-group options get a did-you-mean error."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # hydra's grammar errors
        raise UserError(f"cannot parse override: {str(e).splitlines()[0]}") from e
    for ov in parsed:
        group = ov.key_or_group
        if ov.is_delete():
            continue
        if group.startswith("hydra/"):
            options = _hydra_group_options(group)
            if not options:
                continue
        elif group.startswith("hydra") or not any((d / group).is_dir() for d in dirs):
            continue
        else:
            options = _group_options(group, dirs)
        values = (
            list(ov.sweep_string_iterator())
            if ov.is_sweep_override()
            else [ov.get_value_element_as_str()]
        )
        for v in values:
            if v not in options:
                raise UserError(suggest(v, options, f"'{group}' option"))


def precheck(argv: list[str]) -> None:
    """Compose, type-check and plan every job of this invocation before Hydra runs it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from harness.sweep.configs import compose_error, config_dir, presets, to_typed
    from harness.sweep.engine import resolve

    flags, overrides, multirun, info = _split_args(argv)
    if info:
        return
    primary = config_dir()
    dirs = [primary]
    extra_dir = flags.get("--config-dir") or flags.get("-cd")
    if extra_dir:
        p = Path(extra_dir).expanduser().resolve()
        if not p.is_dir():
            raise UserError(f"--config-dir {extra_dir}: no such directory")
        dirs.insert(0, p)
        from harness.sweep.engine import CONFIG_DIR_ENV

        os.environ[CONFIG_DIR_ENV] = str(p)  # custom encoders' import_path may be relative to it
    name = flags.get("--config-name") or flags.get("-cn") or "config"
    available = set(presets()) | {p.stem for d in dirs[:-1] for p in d.glob("*.yaml")}
    if name not in available:
        raise UserError(suggest(name, available, "sweep preset (--config-name)"))
    _check_group_overrides(overrides, dirs)
    if multirun:
        from harness.sweep.slurm import check_slurm

        check_slurm(overrides)

    parsed = OverridesParser.create().parse_overrides(overrides)
    axes = []
    for ov in parsed:
        if ov.key_or_group.startswith("hydra"):
            continue
        if ov.is_sweep_override():
            if not multirun:
                raise UserError(
                    f"override {ov.input_line!r} is a sweep (a,b,...): add -m to run it as a multirun"
                )
            axes.append([f"{ov.get_key_element()}={v}" for v in ov.sweep_string_iterator()])
        else:
            assert ov.input_line is not None  # the parser keeps every override's text
            axes.append([ov.input_line])
    search = [f"hydra.searchpath=[file://{dirs[0]}]"] if extra_dir else []
    # Hydra's own settings (hydra.run.dir=..., hydra/launcher=... with its hydra.launcher.*):
    # composed once with the hydra node, so a mistyped key is one line here, not Hydra's
    # multi-line report later
    hydra_keys = [
        ov.input_line
        for ov in parsed
        if ov.key_or_group.startswith(("hydra.", "hydra/"))
        and not ov.is_sweep_override()
        and ov.input_line is not None
    ]
    for ov in parsed:  # Hydra's output folders, given literally: a folder that cannot be made
        if ov.key_or_group in ("hydra.run.dir", "hydra.sweep.dir") and not ov.is_sweep_override():
            value = ov.get_value_element_as_str()
            if "${" not in value:
                try:
                    Path(value).expanduser().mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise UserError(
                        f"{ov.key_or_group}={value}: cannot make that folder ({e.strerror or e})"
                    ) from None
    GlobalHydra.instance().clear()
    dbs: set[str | None] = set()
    try:
        with initialize_config_dir(config_dir=str(primary), version_base="1.3"):
            if hydra_keys:
                try:
                    compose(
                        config_name=name,
                        overrides=[*hydra_keys, *search],
                        return_hydra_config=True,
                    )
                except Exception as e:
                    raise compose_error(e) from e
            for combo in itertools.islice(itertools.product(*axes), 64):
                try:
                    cfg = compose(config_name=name, overrides=list(combo) + search)
                except Exception as e:
                    raise compose_error(e) from e
                typed = to_typed(cfg)
                resolve(typed)
                dbs.add(typed.db)
    finally:
        GlobalHydra.instance().clear()
    if multirun:  # an unreachable database fails here once, not once per launched job
        from harness.store import Store

        for db in dbs:
            Store(db)


def _job(cfg: Any) -> int:
    """The Hydra task function: one job = one sweep config."""
    from omegaconf import OmegaConf

    from harness.sweep.configs import to_typed
    from harness.sweep.engine import run_sweep
    from harness.sweep.finish import finish

    code = 2
    try:
        typed = to_typed(cfg)
        _anchor_paths(typed)
        if typed.run_id is None and _is_multirun():
            typed.run_id = _multirun_run_id(typed.name)
        _record_start(typed.run_id)
        command = "vlm-pareto sweep " + " ".join(sys.argv[1:])
        out = run_sweep(
            typed,
            command=command.strip(),
            config_dict=cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=True)),
        )
        code = finish(typed, out)
    except UserError as e:
        print(f"vlm-pareto: error: {e}", file=sys.stderr)
        code = 2
    except Exception as e:
        from harness.cli import db_error_line

        line = db_error_line(e)
        if line is None:
            raise
        print(f"vlm-pareto: error: {' '.join(line.split())}", file=sys.stderr)
        code = 2
    finally:
        _record_exit(code)
    return code


def _anchor_paths(typed: Any) -> None:
    """Relative store and report paths, made absolute against the launch folder when the job
    runs in another one (``hydra.job.chdir=true``): results must land where the user looks."""
    launch = os.environ.get(LAUNCH_DIR_ENV)
    if not launch or Path(launch).resolve() == Path.cwd().resolve():
        return
    from harness.store import resolve_url, sqlite_path

    url = resolve_url(typed.db)
    path = sqlite_path(url)
    if path is not None and not path.is_absolute():
        typed.db = str(Path(launch) / path)
    else:
        typed.db = url
    report = Path(typed.report_dir) if typed.report_dir else Path("reports") / typed.name
    if not report.is_absolute():
        typed.report_dir = str(Path(launch) / report)


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig

    try:
        return str(HydraConfig.get().mode) == "RunMode.MULTIRUN"
    except ValueError:
        return False


def _multirun_run_id(name: str) -> str:
    """All jobs of one multirun share a run (so shared measurements are taken once)."""
    from hydra.core.hydra_config import HydraConfig

    return f"{name}-{Path(HydraConfig.get().sweep.dir).name}"


def _record_start(run_id: str | None) -> None:
    """A job that started but never records its exit code was killed (scancel, OOM, time)."""
    d = os.environ.get(EXIT_DIR_ENV)
    if d:
        try:
            Path(d, f"{STARTED}{os.getpid()}-{os.urandom(4).hex()}").write_text(run_id or "")
        except OSError:
            pass  # _record_exit says so


def _record_exit(code: int) -> None:
    d = os.environ.get(EXIT_DIR_ENV)
    if d:
        try:
            Path(d, f"{os.getpid()}-{os.urandom(4).hex()}").write_text(str(code))
        except OSError as e:  # the job's result is in the store either way; say it
            print(
                f"vlm-pareto: warning: could not report exit code {code} to the launcher: {e}",
                file=sys.stderr,
            )


def main(argv: list[str], debug: bool = False) -> int:
    """Entry point used by ``vlm-pareto sweep``; returns the process exit code."""
    import hydra

    from harness.sweep.configs import config_dir, presets, register_configs

    if any(a in ("--help", "-h") for a in argv):
        print(HELP_EPILOG.format(presets=", ".join(p for p in presets() if p != "config")).strip())
        print()
    register_configs()
    precheck(argv)
    # Jobs report exit codes through files: under the working directory (shared storage on a
    # cluster, where /tmp of the submitting node is not visible to the jobs' nodes).
    # Absolute: a job may run in another working directory (hydra.job.chdir, a cluster's).
    exit_root = Path("outputs").resolve()
    exit_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".exit-", dir=exit_root) as exit_dir:
        os.environ[EXIT_DIR_ENV] = exit_dir
        os.environ[LAUNCH_DIR_ENV] = os.getcwd()
        task = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(
            _job
        )
        saved = sys.argv
        sys.argv = ["vlm-pareto sweep", *_flags_first(argv)]
        hydra_failed = False
        try:
            task()
        except SystemExit as e:  # hydra exits on its own errors (after printing them)
            hydra_failed = e.code not in (0, None)
        finally:
            sys.argv = saved
            os.environ.pop(EXIT_DIR_ENV, None)
            os.environ.pop(LAUNCH_DIR_ENV, None)
        files = list(Path(exit_dir).iterdir())
        started = [p.read_text() for p in files if p.name.startswith(STARTED)]
        codes = [int(p.read_text() or 0) for p in files if not p.name.startswith(STARTED)]
    if hydra_failed and not started:
        return 2  # hydra refused the command line before any job ran
    lost = len(started) - len(codes)
    if lost > 0:
        # A launcher job died without reporting (scancel, OOM kill, time limit): its
        # committed measurements are kept and a rerun of the same run resumes it.
        run_ids = sorted({r for r in started if r})
        again = f"run_id={run_ids[0]}" if len(run_ids) == 1 else "the same run_id"
        print(
            f"vlm-pareto: error: {lost} of {len(started)} sweep job(s) ended without an exit code (cancelled, "
            f"killed, out of time, or still running when the launcher gave up); what they committed is kept: "
            f"rerun with {again} to finish",
            file=sys.stderr,
        )
        return max([1, *codes])
    if hydra_failed:
        return max(codes, default=2)  # a job raised; hydra printed it
    return max(codes, default=0)
