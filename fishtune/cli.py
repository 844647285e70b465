"""`fishtune run|plan|report|bench|export`: a thin dispatcher in front of the Hydra app and the tools.

Hydra owns `fishtune run ...` (overrides, `-m` multirun, `--help`, `--cfg job`); the other
commands use argparse. Each run is isolated: a failing cell is recorded and the sweep goes on;
the exit status says whether every cell completed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections import Counter

from .hydra_args import config_dirs_as_searchpath, split   # light, and training code: imported before any run

USAGE = """usage: fishtune <command> [args]

commands:
  run [overrides]     train one configuration (Hydra overrides, e.g. task=rte mask=fish method.r=16);
                      `fishtune run -m task=cola,mrpc seed=1,2,3` sweeps a grid; `fishtune run --help`
                      lists the config groups and keys
  plan [overrides]    the cells a sweep with these overrides runs and which of them are done
                      (`fishtune plan experiment=table3_cpu runs_root=results/runs-cpu`)
  report [options]    aggregate run records into CSV/LaTeX tables and figures (`fishtune report --help`)
  bench [options]     speed benchmark: masked vs vanilla step, Fisher estimators, epoch throughput
  export RUN_DIR [--merge] [--out DIR]
                      a run's trained adapter (library format), or with --merge LoRA/DoRA folded
                      into a plain transformers model

examples:
  fishtune run                                    # MiniLM-L6 + LoRA r=8 on MRPC (shipped model and data)
  fishtune run method=lora mask=fish method.r=16 task=rte
  fishtune run -m task=cola,mrpc,rte seed=1,2,3
  fishtune report
"""

# Outcomes of the runs of this process, in order (complete, skipped, failed, diverged).
OUTCOMES: list[str] = []
# A multirun's cells may run in other processes (launcher plugins: joblib, submitit/SLURM). Each such
# cell writes its outcome as one file into the folder this variable names ("<pid>:<folder>"; the
# launching process sets it for every job through `hydra.job.env_set`), and the launching process
# counts them in its summary.
OUTCOME_ENV = "FISHTUNE_OUTCOMES"
_LAUNCHER = False  # True in the process that ran `fishtune run`; False in a launcher's worker process


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "run":
        try:
            return _run(rest)
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (errors.Terminated): the record says `interrupted`
            from .errors import Terminated

            terminated = isinstance(err, Terminated)
            print(f"fishtune: {'terminated (SIGTERM)' if terminated else 'interrupted'}; "
                  f"{_after_interrupt(err, multirun=bool({'-m', '--multirun'} & set(rest)))}", file=sys.stderr)
            return 143 if terminated else 130
    if command == "plan":
        from .plan import main as plan_main

        return plan_main(rest)
    if command == "report":
        from .report.cli import main as report_main

        return report_main(rest)
    if command == "bench":
        from .bench import main as bench_main

        return bench_main(rest)
    if command == "export":
        _quiet_libraries()
        from .export import main as export_main

        return export_main(rest)
    print(f"fishtune: error: unknown command {command!r}; choose run, plan, report, bench or export\n\n{USAGE}", file=sys.stderr)
    return 2


def _after_interrupt(err: KeyboardInterrupt, *, multirun: bool) -> str:
    """What an interrupt left and how to go on: the run folder it saved `interrupted` (the runner names
    it on the error), else, for one run, that none was written yet."""
    if folder := getattr(err, "run_folder", None):
        return f"rerun the same command to resume {folder} from its last checkpoint"
    if multirun:
        return "rerun the same command to resume: complete cells are skipped, started ones resume"
    return "no run folder was written yet, so there is nothing to resume; rerun the same command to start"


def _run(args: list[str], *, checked: bool = False) -> int:
    import hydra

    from .errors import ConfigError
    from .plan import split_experiments

    multirun = [a for a in args if a in ("-m", "--multirun")]
    rest = [a for a in args if a not in multirun]
    try:
        rest = config_dirs_as_searchpath(rest)
        experiments = split_experiments(rest)
    except ConfigError as err:
        print(f"fishtune: error: {err}", file=sys.stderr)
        return 2
    if multirun and len(experiments) > 1:
        return _run_each(multirun, experiments)
    global _LAUNCHER
    _LAUNCHER = True
    _quiet_libraries()
    OUTCOMES.clear()
    elsewhere = _outcome_folder() if multirun else None
    report = [f"++hydra.job.env_set.{OUTCOME_ENV}='{os.getpid()}:{elsewhere}'"] if elsewhere else []
    # Overrides first, Hydra's flags after (`hydra_args`): argparse takes the overrides as one list.
    sys.argv = ["fishtune run", *multirun, *report, *[a for part in split(rest) for a in part]]
    app = hydra.main(config_path="pkg://fishtune.configs", config_name="run", version_base="1.3")(_run_job)
    if multirun and not checked and (problem := _bad_cell(rest)):
        print(f"fishtune: error: {problem}", file=sys.stderr)
        return 2
    if not multirun and any(a.startswith("experiment=") for a in args):
        print("fishtune: note: an experiment file's grid runs with -m; without it this is one cell, the file's "
              "base config", file=sys.stderr)
    try:
        with _hydra_raises():
            app()
    except SystemExit as exit_:  # Hydra exits 1 on a composition error after printing it
        if exit_.code not in (0, None):
            return int(exit_.code) if isinstance(exit_.code, int) else 1
    except Exception as err:  # Hydra's own error (composing, parsing an override), raised rather than printed
        if os.environ.get("HYDRA_FULL_ERROR") == "1":   # the user's own: the whole traceback, as Hydra gives it
            raise
        message, code = _hydra_error(err, rest)
        print(f"fishtune: error: {message}", file=sys.stderr)
        return code
    finally:
        remote = _collect_outcomes(elsewhere)
    return _summarise(OUTCOMES + remote, multirun=bool(multirun), elsewhere=len(remote))


def _run_each(multirun: list[str], experiments: list[list[str]]) -> int:
    """`fishtune run -m experiment=a,b`: each experiment's grid in turn, every cell of every grid
    checked before any runs; a failed cell stops neither its grid nor the next (exit status 1)."""
    for overrides in experiments:
        if problem := _bad_cell(overrides):
            print(f"fishtune: error: {_experiment_of(overrides)}: {problem}", file=sys.stderr)
            return 2
    codes = []
    for number, overrides in enumerate(experiments, 1):
        print(f"fishtune: {_experiment_of(overrides)} ({number} of {len(experiments)})", file=sys.stderr)
        codes.append(_run([*multirun, *overrides], checked=True))
    return max(codes)


def _experiment_of(overrides: list[str]) -> str:
    return next(o for o in overrides if o.startswith("experiment="))


def _bad_cell(overrides: list[str]) -> str | None:
    """The first cell of the sweep whose config fails `validate`, as one line; None if every cell passes.
    Checked before any cell runs (a bad value in a late cell of a 96-cell grid would surface hours
    in); ~0.1–0.25 s a cell. What cannot be composed is left to Hydra, which reports it itself."""
    from .config import validate
    from .errors import FishtuneError
    from .plan import UncomposableError, cell_name, composed_cells

    if any(a.startswith("-") for a in overrides):  # --cfg, --help, ...: Hydra's own
        return None
    try:
        for number, (cell, cfg) in enumerate(composed_cells(overrides)):
            try:
                validate(cfg)
            except FishtuneError as err:
                return f"{cell_name(number, cell, overrides)}: {err}; no cell was run"
    except UncomposableError as err:  # Hydra would print this one as a traceback
        return str(err)
    except FishtuneError:  # cannot be expanded or composed: Hydra says why when it tries
        return None
    return None


@contextlib.contextmanager
def _hydra_raises():
    """Hydra raises, rather than prints, an error of its own while this is on (`HYDRA_FULL_ERROR`): a
    composition error that Hydra would print with its whole traceback (`mask=null`), or a parse error
    over several lines, then reaches `_hydra_error`, which says it in one line (unless the user set
    HYDRA_FULL_ERROR=1, who then gets Hydra's traceback). `_run_job` catches every error of a run
    itself, so those never get here."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def _hydra_error(err: Exception, overrides: list[str]) -> tuple[str, int]:
    """An error Hydra raised, in one line, and the exit status: Hydra's own message (with the config
    error that caused it; 1, as Hydra exits), an OmegaConf error's first line and key (1), or for a
    bare ValueError/TypeError/AttributeError/AssertionError from inside Hydra (`mask=null`) what
    `plan.compose` says of the same overrides, which names the config group and its files (2, a usage
    error)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .errors import FishtuneError, first_line
    from .plan import UncomposableError, compose

    if isinstance(err, HydraException):
        cause = f": {first_line(err.__cause__)}" if isinstance(err.__cause__, OmegaConfBaseException) else ""
        return " ".join(str(err).partition("Config search path:")[0].split()) + cause, 1
    if isinstance(err, OmegaConfBaseException):   # its detail lines (full_key, object_type) as one key
        key = getattr(err, "full_key", None)
        return first_line(err) + (f" (at {key})" if key else ""), 1
    if isinstance(err, (ValueError, TypeError, AttributeError, AssertionError)) and not any(
            a.startswith("-") for a in overrides):
        try:
            compose(overrides)
        except UncomposableError as composed:
            return str(composed), 2
        except FishtuneError:
            pass
    if isinstance(err, ValueError):   # Hydra's own argument checks, e.g. `-m` together with `--cfg`
        return first_line(err), 2
    return f"{type(err).__name__}: {first_line(err)}", 1


def _outcome_folder():
    """A fresh folder (under the sweep root, so cluster nodes that share the working directory see it)
    for the outcomes of cells that run in other processes."""
    import tempfile
    from pathlib import Path

    root = Path("results/sweeps").resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".outcomes-", dir=root))
    except OSError:
        return None


def _collect_outcomes(folder) -> list[str]:
    """The outcomes other processes reported into `folder` (then removed with the folder)."""
    import shutil

    if folder is None:
        return []
    outcomes = [p.read_text().strip() for p in sorted(folder.glob("*.outcome"))]
    shutil.rmtree(folder, ignore_errors=True)
    return outcomes


def _report_outcome(status: str) -> None:
    """In a process other than the sweep's launcher: leave this cell's outcome where it counts it."""
    from pathlib import Path

    owner, _, folder = os.environ.get(OUTCOME_ENV, "").partition(":")
    if not folder or owner == str(os.getpid()) or not Path(folder).is_dir():
        return
    try:
        from .atomic import atomic_write_text

        atomic_write_text(Path(folder) / f"{os.getpid()}-{os.urandom(4).hex()}.outcome", status)
    except Exception as err:  # the run's record holds the truth; the summary is a convenience
        print(f"fishtune: could not report this cell's outcome to the sweep: {err}", file=sys.stderr)


def _run_job(cfg) -> str:
    """One Hydra job: run it, turn user errors into one line, never let one cell stop a sweep."""
    from .errors import DivergedError, FishtuneError
    from .runner import run_experiment

    if not _LAUNCHER:  # a launcher's worker process (joblib, submitit): same logs, prefixed by this cell
        from hydra.core.hydra_config import HydraConfig

        _quiet_libraries(prefix=f"[fishtune #{HydraConfig.get().job.num}] ")
    try:
        status = run_experiment(cfg)["status"]
    except DivergedError as err:
        print(f"fishtune: diverged: {err}", file=sys.stderr)
        status = "diverged"
    except FishtuneError as err:
        print(f"fishtune: error: {err}", file=sys.stderr)
        status = "failed"
    except KeyboardInterrupt:
        raise
    except Exception as err:  # a bug or an environment problem: the traceback is in the run folder, if any
        print(f"fishtune: error: {type(err).__name__}: {' '.join(str(err).split())} ({_where_traceback(err)})",
              file=sys.stderr)
        status = "failed"
    OUTCOMES.append(status)
    _report_outcome(status)
    return status


def _where_traceback(err: BaseException) -> str:
    """Where the full traceback is: the run folder's traceback.txt, or (an error before the run folder
    was written) the line that raised it."""
    if getattr(err, "traceback_file", None):
        return f"traceback: {err.traceback_file}"
    import traceback

    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    at = f"raised at {frame.filename}:{frame.lineno}; " if frame else ""
    return f"{at}nothing was written"


def _summarise(outcomes: list[str], *, multirun: bool, elsewhere: int = 0) -> int:
    counts = Counter(outcomes)
    bad = counts["failed"] + counts["diverged"]
    if multirun and not outcomes:
        # Cells ran where they could not report back (e.g. SLURM nodes without this folder): say so.
        print("fishtune: the cells ran in other processes and none reported an outcome here; each run's "
              "results.json holds its status (`fishtune report` lists them in runs_status.md)", file=sys.stderr)
    elif multirun:
        where = f" ({elsewhere} reported by other processes)" if elsewhere else ""
        print(f"fishtune: {len(outcomes)} cells{where}: {counts['complete']} completed, {counts['skipped']} skipped "
              f"(already complete), {counts['failed']} failed, {counts['diverged']} diverged", file=sys.stderr)
    return 1 if bad else 0


def _quiet_libraries(prefix: str = "[fishtune] ") -> None:
    """fishtune's INFO lines on stderr (`prefix` first), the libraries' chatter off."""
    logging.basicConfig(level=logging.INFO, format=f"{prefix}%(message)s", stream=sys.stderr, force=True)
    for noisy in ("transformers", "peft", "datasets", "httpx", "huggingface_hub", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*newly initialized.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
