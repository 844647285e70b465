"""Every `fishtune run ...` command the project prints composes, at the same LoRA scale.

The commands are read from the README, `fishtune --help` and every config header, so a command
shown to users can never compose alpha/r = 1 against the vanilla run's alpha/r = 2 again.
"""

from __future__ import annotations

import re
import shlex

import pytest

from conftest import REPO, compose_run
from fishtune.cli import USAGE
from fishtune.config import validate

RUN_YAML_HELP = (REPO / "configs" / "run.yaml").read_text()


def _commands() -> list[tuple[str, str]]:
    """(where, command) for every `fishtune run ...` line the project prints."""
    sources = {"README.md": (REPO / "README.md").read_text(), "fishtune --help": USAGE}
    sources.update({str(p.relative_to(REPO)): p.read_text() for p in sorted((REPO / "configs").rglob("*.yaml"))})
    found = []
    for where, text in sources.items():
        for match in re.finditer(r"fishtune run((?: +[^\s#`;()]+)*)", text):
            args = match.group(1).split()
            if any(a.startswith("--") for a in args):
                continue  # --help, --cfg: not a run
            found.append((where, "fishtune run" + match.group(1)))
    return sorted(set(found))


def _overrides(command: str) -> list[str]:
    """The overrides of one cell: `-m` dropped, each swept `key=a,b` taken at its first value."""
    out = []
    for arg in shlex.split(command)[2:]:
        if arg in ("-m", "--multirun"):
            continue
        key, _, value = arg.partition("=")
        if "," in value and "[" not in value:
            value = value.split(",")[0]
        out.append(f"{key}={value}")
    return out


COMMANDS = _commands()


def test_the_commands_were_found() -> None:
    assert len(COMMANDS) >= 15
    assert any("mask=fish method.r=16" in c for _, c in COMMANDS)


# One case per distinct cell (several places print the same command), named after its first source.
CELLS: dict[tuple[str, ...], tuple[str, str]] = {}
for _where, _command in COMMANDS:
    CELLS.setdefault(tuple(_overrides(_command)), (_where, _command))


@pytest.mark.parametrize("where,command", list(CELLS.values()), ids=[f"{w}: {c}" for w, c in CELLS.values()])
def test_printed_command_composes_at_the_default_lora_scale(where: str, command: str) -> None:
    overrides = _overrides(command)
    cfg = compose_run(*overrides)
    validate(cfg)
    if cfg.method.name in ("lora", "dora") and not any(o.startswith("method.alpha=") for o in overrides):
        assert cfg.method.alpha == 2 * cfg.method.r, f"{where}: {command} composes alpha {cfg.method.alpha}, r {cfg.method.r}"
