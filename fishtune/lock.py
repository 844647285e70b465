"""One writer per run folder: an exclusive `flock` on `<run folder>/.lock`.

Two `fishtune run` processes with the same config (a SLURM array retried, a sweep restarted while
the first still runs) map to the same folder. The first takes the lock and writes its PID into the
lock file; a second one finds the lock held and stops at once, naming the folder and the holder's
PID, without writing anything. The OS releases a `flock` when its holder dies, so the lock of a
killed run never blocks the rerun that resumes it (the stale file is simply locked again).
`check_unlocked` probes the lock with a brief shared `flock`; a writer that meets such a probe
retries for up to `PROBE_WAIT_S` before it calls the folder busy.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .errors import FishtuneError

LOCK_NAME = ".lock"
PROBE_WAIT_S = 1.0  # a probe holds its shared lock for microseconds; a writer holds it for the whole run


class RunFolderBusy(FishtuneError):
    """Another live process holds the run folder."""


def _busy(folder: Path, path: Path) -> RunFolderBusy:
    return RunFolderBusy(f"run folder {folder} is in use by {_holder(path)}; "
                         "wait for it to finish (rerunning afterwards resumes or skips it)")


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"PID {pid}" if pid else "another process"


def check_unlocked(folder: Path) -> None:
    """Raise `RunFolderBusy` if a live process holds `folder`'s lock. Creates and changes nothing."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(folder, path) from None
    finally:
        os.close(fd)


class RunFolderLock:
    """`with RunFolderLock(folder):` holds the folder's lock (creating the folder) or raises `RunFolderBusy`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunFolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + PROBE_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise _busy(self.folder, self.path) from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock; the file stays (harmless, reused next time)
            self._fd = None
