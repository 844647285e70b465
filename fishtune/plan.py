"""`fishtune plan`: what a sweep will run and how much of it is done, without running anything.

The cells are the ones `fishtune run -m <overrides>` runs, in the order it runs them: Hydra's own
BasicSweeper takes the cartesian product of the experiment's `hydra.sweeper.params` and the command
line (a command-line key replaces the file's values). Each cell is composed and validated as a run
would be, its run folder is named the same way (`config.run_dir`), and the status of the record
there is read: complete (collapsed runs included), running (a live process holds the folder's lock),
stopped (the record says running but no process on this machine holds the lock: killed, or on a
cluster maybe running on another node; a rerun resumes it), interrupted (Ctrl-C / SIGTERM; a rerun
resumes it), failed, diverged, malformed (the record cannot be read, its status is none a run writes,
or it says complete without a finite score: a run refuses it), other-model (a record of another
model than the cell loads, which a run refuses: the files of `model.path` changed since, or a full
commit pinned by `model.revision` is not the recorded snapshot; a branch or tag is not resolved,
as that needs the Hub) or missing. Nothing is written.

The run folder's name holds the device type and precision the cell resolves to. Those are resolved on
this machine, except that a cell pinned to `train.device=cuda` planned on a machine without CUDA is
taken to run on a GPU with bf16 (what `train.precision=auto` picks on Ampere and later), so a cluster's
progress can be read on its login node; `--runtime cuda-fp32` for older GPUs.

Time to go: each cell not complete is given the median `time_s.total` (a finite one, 0 s to a year;
others are left out) of the complete cells of the plan (every experiment of it) with the same task,
method and kind (vanilla or masked), else the same task and method, else the task's median scaled by
the method's ratio to the task median on the tasks it has run (DoRA on SST-2 from DoRA and every
method on MRPC), else the task's median; a cell of a task with no complete cell is counted apart. It
is cell time on the machine that ran those cells: N processes side by side take about 1/N of it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, FishtuneError, first_line
from .hydra_args import is_searchpath, with_config_dirs

if TYPE_CHECKING:
    from omegaconf import DictConfig

RUNTIMES = {"cpu-fp32": {"device": "cpu", "precision": "fp32"},
            "cuda-bf16": {"device": "cuda", "precision": "bf16"},
            "cuda-fp32": {"device": "cuda", "precision": "fp32"}}
DONE = ("complete",)
MAX_CELL_S = 365 * 24 * 3600.0   # the most seconds a cell's time_s.total is taken to be (a year)


@dataclass(frozen=True)
class Cell:
    overrides: tuple[str, ...]  # what the sweep sets for this cell beyond the command line
    folder: Path
    status: str                 # complete, running, stopped, interrupted, failed, diverged, malformed, other-model,
    #                             missing
    score: float | None = None
    task: str = ""
    method: str = ""
    masked: bool = False
    seconds: float | None = None  # the complete run's time_s.total


def expand(overrides: list[str]) -> list[list[str]]:
    """The cells (lists of overrides) of `fishtune run -m <overrides>`, in sweep order.

    As in Hydra, the `hydra.*` and `hydra/...` overrides (`hydra.sweeper.params={seed:'1,2'}`) set the
    sweep's own config, from which the file's sweep is read; they are no cell's overrides."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    own = [o.input_line for o in _parse(overrides, overrides) if o.is_hydra_override()]
    cfg = compose([o for o in overrides if o.startswith("experiment=")] + own, hydra=True)  # the file's sweep
    params = cfg.hydra.sweeper.params or {}
    parsed = _parse([f"{k}={v}" for k, v in params.items()] + overrides, overrides)
    (cells,) = BasicSweeper.split_arguments([o for o in parsed if not o.is_hydra_override()], max_batch_size=None)
    searchpath = [o for o in own if is_searchpath(o)]   # every cell composes with it
    return [[*searchpath, *cell] for cell in cells]


def _parse(lines: list[str], overrides: list[str]) -> list:
    """Hydra's parsed `lines` (its `Override`s); a ConfigError naming the command line's `overrides`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(lines)
    except HydraException as err:
        raise ConfigError(f"cannot parse the overrides {' '.join(overrides)}: {err}") from err


class UncomposableError(ConfigError):
    """A composition error Hydra raises as a plain ValueError/TypeError (`mask=null`): Hydra itself would
    print it with its whole traceback, so `fishtune run` reports it first, in one line."""


def compose(overrides: list[str], *, hydra: bool = False):
    """The run config of `fishtune run <overrides>` (with the `hydra` node if asked)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module(config_module="fishtune.configs", version_base="1.3"):
            return hydra_compose(config_name="run", overrides=list(overrides), return_hydra_config=hydra)
    except (HydraException, OmegaConfBaseException) as err:   # Hydra's lines (a list of options) as one
        reason = " ".join(str(err).partition("Config search path:")[0].split())
        raise ConfigError(f"cannot compose {' '.join(overrides) or 'the default config'}: {reason}") from err
    except (ValueError, TypeError) as err:  # Hydra's internal checks, which `fishtune run` would print as a traceback
        raise UncomposableError(f"cannot compose {' '.join(overrides)}: {_group_hint(overrides) or err}") from err
    except (AttributeError, AssertionError) as err:  # Hydra/OmegaConf failing inside, on a `hydra.*` override
        raise UncomposableError(f"cannot compose {' '.join(overrides)}: "
                                f"{_sweep_hint(overrides) or f'{type(err).__name__}: {first_line(err)}'}") from err


def _group_hint(overrides: list[str]) -> str | None:
    """`mask=null: the config group mask takes one of its files (fish, none, …), not null`, for the
    first config group set to null, the one override Hydra answers with a bare ValueError."""
    from importlib.resources import files

    configs = files("fishtune.configs")
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if value.strip().lower() in ("null", "~", "") and configs.joinpath(key).is_dir():
            names = sorted(p.name.removesuffix(".yaml") for p in configs.joinpath(key).iterdir()
                           if p.name.endswith(".yaml"))
            return f"{override}: the config group {key} takes one of its files ({', '.join(names)}), not null"
    return None


def _sweep_hint(overrides: list[str]) -> str | None:
    """For a `hydra.sweeper.params` override where no experiment file sets a sweep (Hydra cannot add
    to its null sweep params): sweep on the command line instead."""
    for override in overrides:
        if override.lstrip("+~").startswith("hydra.sweeper.params"):
            return (f"{override}: Hydra can only change the sweep params of an experiment file (experiment=NAME); "
                    "without one, sweep on the command line (seed=1,2 task=mrpc,sst2)")
    return None


def composed_cells(overrides: list[str]) -> Iterator[tuple[list[str], DictConfig]]:
    """Each cell of the sweep (its overrides) with its composed run config, in sweep order; composed one
    at a time, so a caller that stops at the first bad cell composes no more."""
    for cell in expand(overrides):
        yield cell, compose(cell)


def cell_name(number: int, cell: list[str], overrides: list[str]) -> str:
    """`cell #1 (seed=1 method.r=0)`: a cell of the sweep by its number (Hydra's job number, from 0)
    and what the sweep sets for it, not the overrides every cell shares; how `fishtune run -m` and
    `fishtune plan` name a cell whose config is refused."""
    fixed = {o.partition("=")[0] for o in overrides if "," not in o}   # keys not swept
    own = " ".join(o for o in cell if o.partition("=")[0] not in fixed)
    return f"cell #{number}{f' ({own})' if own else ''}"


def runtime_of(train_cfg, forced: str | None) -> dict[str, str]:
    """The device type and precision the cell's folder is named by (see the module docstring)."""
    import torch

    from .config import resolved_runtime

    if forced:
        return RUNTIMES[forced]
    if train_cfg.device == "cuda" and not torch.cuda.is_available():
        return RUNTIMES["cuda-fp32" if train_cfg.precision == "fp32" else "cuda-bf16"]
    return resolved_runtime(train_cfg)


def plan(overrides: list[str], *, runtime: str | None = None) -> list[Cell]:
    """Every cell of the sweep, with its run folder and the status of its record."""
    from .config import check_run_folder_place, run_dir, validate
    from .lock import RunFolderBusy, check_unlocked
    from .record import RECORD_NAME, read_record, record_problem

    cells = []
    digests: dict[str, str | None] = {}   # model.path -> its folder digest, read once per plan
    for number, (cell, cfg) in enumerate(composed_cells(overrides)):
        try:
            validate(cfg)
            folder = run_dir(cfg, runtime=runtime_of(cfg.train, runtime))
            check_run_folder_place(cfg, folder)   # runs_root=a file: no run could write there
        except FishtuneError as err:
            raise ConfigError(f"{cell_name(number, cell, overrides)}: {err}") from None
        try:
            record = read_record(folder / RECORD_NAME)
        except FishtuneError:
            record = {"status": "malformed"}
        else:
            if record is not None and record_problem(record):   # a run refuses it; the report lists it malformed
                record = {"status": "malformed"}
        status = (record or {}).get("status", "missing")
        if status == "running":
            try:
                check_unlocked(folder)
                status = "stopped"
            except RunFolderBusy:
                pass
        if record and status != "malformed" and _other_model(cfg, record, digests):
            status = "other-model"
        score = record.get("score") if record and status == "complete" else None
        seconds = _cell_seconds(record) if record and status == "complete" else None
        own = tuple(o for o in cell if o not in overrides)
        cells.append(Cell(own, folder, status, score, str(cfg.task.name), str(cfg.method.name),
                          cfg.mask.name != "none", seconds))
    return cells


def _cell_seconds(record: dict) -> float | None:
    """A complete record's `time_s.total` when it is a sane number of seconds (finite, from 0 to
    `MAX_CELL_S`), else None: a damaged or hand-edited timing must not skew the time to go."""
    timing = record.get("time_s")
    total = timing.get("total") if isinstance(timing, dict) else None
    if isinstance(total, bool) or not isinstance(total, (int, float)) or not 0 <= total <= MAX_CELL_S:
        return None   # NaN fails the comparison too
    return float(total)


def _other_model(cfg: DictConfig, record: dict, digests: dict[str, str | None]) -> bool:
    """Whether `record` ran on another model than `cfg` loads, as far as can be told without the Hub
    (the runner's check, `runner._read_own_record`, refuses such a record)."""
    from .models import FULL_COMMIT, model_files_digest, other_model

    files = None
    if record.get("model_files_sha256") and cfg.model.get("path") and not cfg.model.get("tiny"):
        folder = str(cfg.model.path)
        if folder not in digests:
            try:
                digests[folder] = model_files_digest(cfg.model)
            except FishtuneError:  # not there on this machine (a login node): cannot tell
                digests[folder] = None
        files = digests[folder]
    pin = cfg.model.get("revision")
    commit = str(pin).lower() if pin is not None and FULL_COMMIT.fullmatch(str(pin)) else None
    return other_model(record, model_files=files, revision=commit) is not None


_LIKE: tuple[Callable[[Cell], tuple], ...] = (lambda c: (c.task, c.method, c.masked), lambda c: (c.task, c.method),
                                              lambda c: (c.task,))


def time_to_go(cells: list[Cell], reference: list[Cell]) -> tuple[float, int]:
    """(seconds, cells without an estimate) for the cells not complete (module docstring)."""
    timed = [c for c in reference if c.status in DONE and isinstance(c.seconds, (int, float))]
    medians = [{key: statistics.median(c.seconds for c in timed if like(c) == key) for key in {like(c) for c in timed}}
               for like in _LIKE]
    by_method, by_task = medians[1], medians[2]
    total, unknown = 0.0, 0
    for cell in cells:
        if cell.status in DONE:
            continue
        found = next((m[like(cell)] for like, m in zip(_LIKE[:2], medians) if like(cell) in m), None)
        if found is None and (cell.task,) in by_task:
            # the method not yet timed on this task: the task's median times how much slower (or faster)
            # than each task's median the method was on the tasks it has run
            ratios = [t / by_task[(task,)] for (task, method), t in by_method.items() if method == cell.method]
            found = by_task[(cell.task,)] * (statistics.median(ratios) if ratios else 1.0)
        if found is None:
            unknown += 1
        else:
            total += found
    return total, unknown


def _time_line(cells: list[Cell], reference: list[Cell]) -> str | None:
    seconds, unknown = time_to_go(cells, reference)
    if not seconds and not unknown:
        return None
    if not seconds:
        return f"  time to go: not known ({unknown} cell(s), no timed complete cell of their task yet)"
    return (f"  time to go: ~{seconds / 3600:.1f} h of cell time (each at the median of the complete cells like it)"
            + (f"; {unknown} cell(s) with no timed complete cell of their task, not counted" if unknown else ""))


def split_experiments(overrides: list[str]) -> list[list[str]]:
    """`experiment=a,b` as one list of overrides per experiment file (each sweeps its own
    `hydra.sweeper.params`), else `[overrides]`.

    Hydra itself would not do this: it composes a multirun's primary config without its sweep
    overrides, so `fishtune run -m experiment=a,b` would take the sweep params of neither file and run
    one cell per file. `experiment=[a,b]` (a list) would merge the files into one config whose grid is
    neither's; it is refused.
    """
    for i, override in enumerate(overrides):
        key, _, value = override.partition("=")
        if key != "experiment":
            continue
        if value.startswith("[") or "(" in value:
            raise ConfigError(f"{override}: name experiment files as experiment=NAME, or experiment=a,b to run "
                              "(or plan) each one's grid in turn")
        names = [name.strip() for name in value.split(",")]
        if len(names) > 1:
            if "" in names or len(set(names)) < len(names):
                raise ConfigError(f"{override}: an empty or repeated experiment name")
            return [[*overrides[:i], f"experiment={name}", *overrides[i + 1:]] for name in names]
    return [overrides]


def _summary(cells: list[Cell]) -> str:
    counts = Counter(c.status for c in cells)
    done = sum(counts[s] for s in DONE)
    rest = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in DONE and s != "missing")
    return (f"{len(cells)} cells: {done} complete, {counts['missing']} to run"
            + (f", {rest}" if rest else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fishtune plan",
        description="The cells a sweep (`fishtune run -m OVERRIDES`) runs and the status of each one's "
                    "record, without running anything. `experiment=a,b` plans several experiment files.",
        epilog="example: fishtune plan experiment=table3_cpu runs_root=results/runs-cpu")
    parser.add_argument("overrides", nargs="*", help="the sweep's Hydra overrides, as given to `fishtune run -m`")
    parser.add_argument("-m", "--multirun", action="store_true",
                        help="accepted and ignored, so a `fishtune run -m ...` line can be planned as it is")
    listing = parser.add_mutually_exclusive_group()
    listing.add_argument("--all", action="store_true", help="list every cell, not only those not complete")
    listing.add_argument("--brief", action="store_true", help="only the count lines, no cells")
    parser.add_argument("--runtime", choices=sorted(RUNTIMES),
                        help="name folders for this device and precision instead of resolving them here")
    parser.add_argument("--config-dir", "-cd", action="append", default=[], metavar="DIR",
                        help="a folder of config files of your own, as `fishtune run --config-dir DIR` takes it")
    args = parser.parse_intermixed_args(argv)
    plans = []
    try:
        for overrides in split_experiments(with_config_dirs(args.overrides, args.config_dir)):
            plans.append((overrides, plan(overrides, runtime=args.runtime)))
    except FishtuneError as err:
        print(f"fishtune plan: error: {err}", file=sys.stderr)
        return 2
    seen: dict[Path, Cell] = {}
    for _, cells in plans:
        for cell in cells:
            seen.setdefault(cell.folder, cell)
    reference = list(seen.values())
    for overrides, cells in plans:
        print(f"{' '.join(overrides) or '(defaults)'}: {_summary(cells)}")
        if (line := _time_line(cells, reference)) is not None:
            print(line)
        for cell in cells:
            if not args.brief and (args.all or cell.status not in DONE):
                score = f"  {cell.score:.2f}" if cell.score is not None else ""
                print(f"  {cell.status:<11} {' '.join(cell.overrides):<52} {cell.folder}{score}")
    if len(plans) > 1:
        print(f"all: {_summary(reference)} (a cell shared between experiments counted once)")
        if (line := _time_line(reference, reference)) is not None:
            print(line)
    return 0
