"""A run killed with SIGKILL mid-epoch and rerun ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import GLUE, REPO

pytestmark = pytest.mark.slow  # real processes, ~1 min each (`make test-slow`, run by CI)

# Big enough that the kill lands mid-run (400 steps of a tiny model, seconds after the first
# checkpoint), small enough for CI.
ARGS = ["run", "model=tiny-bert", "task=sst2", "mask=fish", "method.r=16", "mask.num_samples=32",
        "mask.warmup_steps=5", "train.epochs=2", "train.batch_size=8", "train.max_train_samples=1600",
        "train.max_eval_samples=64", "train.checkpoint_every=7", "train.weight_decay=0.1",
        "train.progress=false", f"data.dir={GLUE}"]


def _fishtune(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fishtune.cli", *ARGS, f"output_dir={out}", *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _record(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_sigkill_mid_epoch_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    from fishtune.cli import main

    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert main([*ARGS, f"output_dir={reference}"]) == 0  # in this process: one interpreter start less

    proc = _fishtune(killed)
    checkpoint = killed / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # let it train past the first checkpoint
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert _record(killed)["status"] == "running"  # what a preempted job leaves behind

    resumed = _fishtune(killed)
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert "resumed from" in output

    ref, got = _record(reference), _record(killed)
    assert got["status"] == "complete" and got["resumed"] is True
    assert got["frozen_changed"] == 0 == ref["frozen_changed"]
    assert [e["dev"] for e in got["epochs"]] == [e["dev"] for e in ref["epochs"]]
    assert [e["train_loss"] for e in got["epochs"]] == [e["train_loss"] for e in ref["epochs"]]
    # mask.safetensors: written by two processes (this one and the killed one), the same bytes
    for name in ("peft_final.safetensors", "mask.safetensors", "peft_init.safetensors"):
        assert (killed / name).read_bytes() == (reference / name).read_bytes(), name
    assert got["time_s"]["total"] >= got["time_s"]["train"]  # wall time adds up over both sessions
    assert [s.get("ended") for s in got["sessions"]] == ["killed", None]
    assert not checkpoint.exists()  # a complete run drops its checkpoint


def test_sigterm_marks_the_run_interrupted_and_a_rerun_resumes(tmp_path: Path) -> None:
    """What SLURM does to a preempted job: SIGTERM. One line, exit 143, record `interrupted`."""
    out = tmp_path / "run"
    proc = _fishtune(out, "train.epochs=1")
    checkpoint = out / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be terminated; make it longer"
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 143, output
    assert "Traceback" not in output
    assert f"fishtune: terminated (SIGTERM); rerun the same command to resume {out} from its last checkpoint" in output
    record = _record(out)
    assert record["status"] == "interrupted" and record["finished_at"]

    resumed = _fishtune(out, "train.epochs=1")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert "resumed from" in output and _record(out)["status"] == "complete"
    assert [s.get("ended") for s in _record(out)["sessions"]] == ["interrupted", None]
