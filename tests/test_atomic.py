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


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an fd through /proc (Linux)")
def test_the_folder_is_fsynced_after_the_rename(tmp_path: Path, monkeypatch) -> None:
    # a rename survives a power cut only once its folder's entries are flushed
    events: list[str] = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    def fsync(fd):
        events.append("fsync folder" if Path(f"/proc/self/fd/{fd}").resolve() == tmp_path.resolve() else "fsync file")
        real_fsync(fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_text(tmp_path / "results.json", "{}")
    assert events == ["fsync file", "replace", "fsync folder"]


def test_a_folder_that_cannot_be_fsynced_is_not_an_error(tmp_path: Path, monkeypatch) -> None:
    real_open = os.open

    def no_folders(path, flags, *args):
        if Path(path).is_dir():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_folders)
    atomic_write_text(tmp_path / "results.json", "{}")
    assert (tmp_path / "results.json").read_text() == "{}"


def test_a_library_error_mid_write_names_the_path_and_leaves_no_temporary(tmp_path: Path) -> None:
    """torch.save and safetensors raise their own errors (RuntimeError, SafetensorError) on a full disk."""
    target = tmp_path / "checkpoint.pt"

    def torch_save_on_a_full_disk(tmp: str) -> None:
        Path(tmp).write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 832 vs 726")

    with pytest.raises(FishtuneError, match=r"cannot write .*checkpoint\.pt: RuntimeError: \[enforce fail"):
        atomic_write(target, torch_save_on_a_full_disk)
    assert list(tmp_path.iterdir()) == []
