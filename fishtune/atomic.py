"""Crash-safe file writes: write a temporary file in the same folder, fsync, then rename.

A crash at any point leaves either the old file or the new one, never a truncated one
(`os.replace` is atomic within a filesystem), and the folder is fsynced after the rename so that
the new name survives a power cut too (where the OS lets a folder be opened). Disk-full and permission errors become a
`FishtuneError` naming the path. The file gets the mode a plain `open` would give it (0666 less the
umask), not `mkstemp`'s owner-only 0600: a shared runs folder stays readable by the group.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import FishtuneError


def _file_mode() -> int:
    """0o666 less the process umask (read by setting it and putting it straight back, once, at import)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _file_mode()


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` then atomically move the temporary file onto `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise FishtuneError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        write(tmp)
        os.chmod(tmp, _MODE)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _remove_quietly(tmp)
        raise FishtuneError(f"cannot write {path}: {err.strerror or err}") from err
    except FishtuneError:
        _remove_quietly(tmp)
        raise
    except Exception as err:  # torch.save and safetensors wrap a full disk in their own errors
        _remove_quietly(tmp)
        raise FishtuneError(f"cannot write {path}: {type(err).__name__}: {err}") from err
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically replace `path` with `text` (UTF-8)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Atomically replace `path` with `obj` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def plain_modes(folder: str | Path) -> None:
    """Give every file under `folder` the mode a plain `open` would (`_MODE`): libraries that write
    through their own temporary file (safetensors' `save_file`, so PEFT and transformers
    `save_pretrained`) leave it owner-only 0600."""
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, _MODE)


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is); best effort: some
    systems (Windows, some network filesystems) cannot open or fsync a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
