"""Hydra's command line as `fishtune run` and `fishtune plan` hand it on.

Hydra's argparse takes the overrides as one positional list, so a flag between two overrides
(`seed=1,2 --config-dir DIR task=x`) leaves the rest as "unrecognized arguments": `split` tells
Hydra's flags (with the values they take, in any form argparse accepts: `-cd DIR`, `--config-dir=DIR`,
an unambiguous prefix such as `--pack`) from the overrides, so they can be passed on overrides first.

`--config-dir DIR` becomes the override `hydra.searchpath=[file://DIR]`, which adds the same folder to
the same search path: as an override, it reaches `fishtune plan` and the check of every cell before
a sweep runs (`plan.compose`), which Hydra's flags do not.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

# Hydra's long flags (its `get_args_parser`), those of them that take a value, and the short forms.
LONG_FLAGS = ("--help", "--hydra-help", "--version", "--cfg", "--resolve", "--package", "--run", "--multirun",
              "--shell-completion", "--config-path", "--config-name", "--config-dir", "--experimental-rerun",
              "--info")
TAKE_VALUE = frozenset({"--cfg", "--package", "--config-path", "--config-name", "--config-dir", "--experimental-rerun"})
SHORT_FLAGS = {"-h": "--help", "-c": "--cfg", "-p": "--package", "-r": "--run", "-m": "--multirun",
               "-sc": "--shell-completion", "-cp": "--config-path", "-cn": "--config-name", "-cd": "--config-dir",
               "-i": "--info"}
INFO_CHOICES = frozenset({"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"})


def flag_name(arg: str) -> str | None:
    """The long name of Hydra's flag `arg` as argparse reads it (a short form, or a prefix of one long
    flag only), or None for an override, a `--flag=value` or an unknown flag."""
    if arg in SHORT_FLAGS:
        return SHORT_FLAGS[arg]
    if not arg.startswith("--") or "=" in arg:
        return None
    matches = [name for name in LONG_FLAGS if name.startswith(arg)]
    return arg if arg in LONG_FLAGS else (matches[0] if len(matches) == 1 else None)


def split(args: list[str]) -> tuple[list[str], list[str]]:
    """(overrides, flags): the overrides in their order, and Hydra's flags each with the value it
    takes. `--info` takes the next argument when it is no override (a choice, or a word without `=`,
    which argparse then refuses as a choice)."""
    overrides: list[str] = []
    flags: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            overrides.append(arg)
            i += 1
            continue
        name, after = flag_name(arg), args[i + 1] if i + 1 < len(args) else None
        takes = name in TAKE_VALUE or (name == "--info" and after is not None and (
            after in INFO_CHOICES or ("=" not in after and not after.startswith(("-", "~", "+")))))
        width = 2 if takes and after is not None else 1
        flags += args[i:i + width]
        i += width
    return overrides, flags


def config_dirs_as_searchpath(args: list[str]) -> list[str]:
    """`args` with each `--config-dir DIR` (`-cd DIR`, `--config-dir=DIR`) taken out and the folders
    added as one `hydra.searchpath` override (`searchpath_override`). Left as it is when a
    `hydra.searchpath` override is given too: that one would replace the list."""
    overrides, flags = split(args)
    dirs, others = [], []
    i = 0
    while i < len(flags):
        name, eq, value = flags[i].partition("=")
        if flag_name(name) == "--config-dir" and (eq or i + 1 < len(flags)):
            dirs.append(value if eq else flags[i + 1])
            i += 1 if eq else 2
            continue
        others.append(flags[i])
        i += 1
    if not dirs or any(map(is_searchpath, overrides)):
        return args
    return [*others, *with_config_dirs(overrides, dirs)]


def is_searchpath(override: str) -> bool:
    """Whether `override` sets Hydra's search path (`hydra.searchpath=[...]`, also with `+`, `++`, `~`)."""
    return override.lstrip("+~").startswith("hydra.searchpath")


def with_config_dirs(overrides: list[str], dirs: list[str]) -> list[str]:
    """`overrides` with the folders `dirs` as one `hydra.searchpath` override at the end; as they are
    when there is no folder, or when they set the search path themselves (theirs would replace it)."""
    if not dirs or any(map(is_searchpath, overrides)):
        return overrides
    return [*overrides, searchpath_override(dirs)]


def searchpath_override(dirs: list[str]) -> str:
    """`hydra.searchpath=['file:///abs/DIR', ...]`, the folders in order; a `ConfigError` for one that
    is not a folder (Hydra's search path would pass over it without a word)."""
    paths = []
    for folder in dirs:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"--config-dir {folder}: no such folder (it holds config files of your own, e.g. "
                              f"{folder}/model/mymodel.yaml for model=mymodel)")
        paths.append("'file://" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'")
    return f"hydra.searchpath=[{','.join(paths)}]"
