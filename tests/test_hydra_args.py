"""Hydra's command line as fishtune hands it on (`fishtune.hydra_args`): flags told from overrides in
every form argparse takes, and `--config-dir` as a search-path override."""

from __future__ import annotations

from pathlib import Path

import pytest

from fishtune.errors import ConfigError
from fishtune.hydra_args import config_dirs_as_searchpath, flag_name, split


@pytest.mark.parametrize("arg,name", [("-cd", "--config-dir"), ("--config-dir", "--config-dir"), ("--pack", "--package"),
                                      ("--config-d", "--config-dir"), ("--config", None), ("--cfg=job", None),
                                      ("--nosuch", None), ("-i", "--info"), ("seed=1", None), ("~train.lr", None)])
def test_flag_names_as_argparse_reads_them(arg: str, name: str | None) -> None:
    assert flag_name(arg) == name


@pytest.mark.parametrize("args,overrides,flags", [
    (["seed=1,2", "--config-dir", "d", "task=x"], ["seed=1,2", "task=x"], ["--config-dir", "d"]),
    (["--cfg", "job", "train.lr=-1", "-p", "train"], ["train.lr=-1"], ["--cfg", "job", "-p", "train"]),
    (["--pack", "task", "~train.lr"], ["~train.lr"], ["--pack", "task"]),
    (["--info", "model=x"], ["model=x"], ["--info"]),             # an override is not --info's value
    (["--info", "plugin", "model=x"], ["model=x"], ["--info", "plugin"]),   # a typo is: argparse refuses it
    (["-i", "config", "+a=1"], ["+a=1"], ["-i", "config"]),
    (["--cfg=job", "a=1", "--resolve"], ["a=1"], ["--cfg=job", "--resolve"]),
])
def test_split_keeps_each_flag_with_its_value(args: list[str], overrides: list[str], flags: list[str]) -> None:
    assert split(args) == (overrides, flags)


def test_config_dirs_become_one_searchpath_override(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b c").mkdir()
    monkeypatch.chdir(tmp_path)
    got = config_dirs_as_searchpath(["seed=1", "-cd", "a", "--cfg", "job", f"--config-dir={tmp_path / 'b c'}"])
    assert got == ["--cfg", "job", "seed=1", f"hydra.searchpath=['file://{tmp_path / 'a'}','file://{tmp_path / 'b c'}']"]
    assert config_dirs_as_searchpath(["seed=1"]) == ["seed=1"]
    own = ["-cd", "a", "hydra.searchpath=[pkg://x]"]   # the user's own list would replace it: left to Hydra
    assert config_dirs_as_searchpath(own) == own
    with pytest.raises(ConfigError, match="--config-dir nope: no such folder"):
        config_dirs_as_searchpath(["-cd", "nope"])
