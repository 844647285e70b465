"""One writer per run folder, with real processes: a live holder stops a second run at once and
untouched; the lock of a killed holder never blocks the rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, records

HOLD = """
import sys, time
from fishtune.lock import RunFolderLock
with RunFolderLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow  # two real processes
def test_a_second_process_stops_at_once_and_touches_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    holder = _holder(folder)
    try:
        (folder / "results.json").write_text('{"status": "running"}\n')  # what the first writer left so far
        before = _snapshot(folder)
        out = subprocess.run([sys.executable, "-m", "fishtune.cli", "run", *TINY, f"output_dir={folder}"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert out.returncode == 1
        assert out.stderr.strip() == (f"fishtune: error: run folder {folder} is in use by PID {holder.pid}; "
                                      "wait for it to finish (rerunning afterwards resumes or skips it)")
        assert _snapshot(folder) == before
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_process_does_not_block_the_rerun(run_cli, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    holder = _holder(folder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (folder / ".lock").read_text().strip() == str(holder.pid)  # a stale lock file stays behind
    assert run_cli(f"output_dir={folder}") == 0
    (rec,) = records(folder)
    assert rec["status"] == "complete"


def test_the_lock_is_released_after_a_run(run_cli, tmp_path: Path) -> None:
    from fishtune.lock import RunFolderLock

    folder = tmp_path / "run"
    assert run_cli(f"output_dir={folder}") == 0
    with RunFolderLock(folder):  # would raise if the run had kept it
        pass



def test_a_writer_waits_out_a_brief_probe_instead_of_calling_the_folder_busy(tmp_path: Path) -> None:
    # `check_unlocked` (plan, every runner before it loads) holds a shared flock for an instant; a
    # writer arriving in that instant must not give up on a folder nobody is running
    import fcntl
    import threading

    from fishtune.lock import PROBE_WAIT_S, RunFolderLock, RunFolderBusy

    folder = tmp_path / "run"
    folder.mkdir()
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # the probe, caught mid-check
    threading.Timer(PROBE_WAIT_S / 5, os.close, args=(fd,)).start()
    with RunFolderLock(folder):
        pass

    fd = os.open(folder / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a lock held for longer than the wait is a busy folder
    try:
        with pytest.raises(RunFolderBusy):
            with RunFolderLock(folder):
                pass
    finally:
        os.close(fd)


def test_a_rerun_clears_the_temporary_files_of_a_killed_write(run_cli, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    partial = folder / ".checkpoint.pt.k2j4x.tmp"  # what SIGKILL mid-`atomic_write` leaves
    partial.write_bytes(b"\0" * 1024)
    assert run_cli(f"output_dir={folder}") == 0
    assert not partial.exists()
