"""Crash-safe writes: the old file or the new one, never a truncated one; errors name the path."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fishtune.atomic import atomic_write, atomic_write_json, atomic_write_text
from fishtune.errors import FishtuneError


def test_a_crash_mid_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    atomic_write_json(target, {"status": "complete", "score": 81.5})
    old = target.read_bytes()

    def crash(tmp: str) -> None:
        Path(tmp).write_text('{"status": "runn')  # half-written
        raise KeyboardInterrupt  # e.g. Ctrl-C or a signal mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_disk_full_is_a_clear_error_naming_the_path(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "run" / "mask.safetensors"

    def full(tmp: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(FishtuneError, match=r"cannot write .*mask\.safetensors: No space left on device"):
        atomic_write(target, full)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_unwritable_folder_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(FishtuneError, match="cannot write .*not_a_folder"):
        atomic_write_text(blocker / "results.json", "{}")


def test_permission_error_on_rename_names_the_path(tmp_path: Path, monkeypatch) -> None:
    def denied(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "replace", denied)
    with pytest.raises(FishtuneError, match="cannot write .*config.yaml: Permission denied"):
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_the_umask_mode_not_owner_only(tmp_path: Path) -> None:
    # mkstemp makes 0600 files; a runs folder shared by a group must stay readable by it
    import fishtune.atomic as atomic

    plain = tmp_path / "plain"
    plain.write_text("x")
    atomic_write_text(tmp_path / "record", "x")
    assert atomic._MODE == (plain.stat().st_mode & 0o777)
    assert (tmp_path / "record").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
