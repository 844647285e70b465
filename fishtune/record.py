"""The run record: `results.json` in the run folder, rewritten atomically as the run proceeds.

A number is trusted only if its record says how it was made, so the record carries the
resolved config path, library versions, git revision, device and timings next to the metrics.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import resource
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write_json
from .errors import FishtuneError

RECORD_NAME = "results.json"
_LIBRARIES = ("fishtune", "torch", "transformers", "peft", "datasets", "hydra-core", "omegaconf", "numpy")


class RunRecord:
    """A dict mirrored to `<run folder>/results.json` on every `save()`."""

    def __init__(self, folder: Path, data: dict[str, Any]):
        self.path = Path(folder) / RECORD_NAME
        self.data = data

    def update(self, **fields: Any) -> "RunRecord":
        self.data.update(fields)
        return self

    def save(self) -> None:
        self.data["updated_at"] = now()
        atomic_write_json(self.path, self.data)


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at `path`, or None if there is none; a damaged one is an error naming the file."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise FishtuneError(f"cannot read run record {path}: {err}") from err


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, git revision and hardware: enough to say how a number was made."""
    versions = {"python": platform.python_version()}
    for lib in _LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    hardware = {"device": str(device), "cpu_count": _cpu_count(), "platform": platform.platform()}
    if device.type == "cuda":
        hardware["gpu"] = torch.cuda.get_device_name(device)
    return {"versions": versions, "git": git_revision(), "hardware": hardware, "torch_threads": torch.get_num_threads()}


def git_revision() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if rev.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def peak_memory(device: torch.device) -> dict[str, int | None]:
    """Peak resident memory of this process (CPU) and peak allocated CUDA memory, in bytes."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    gpu = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"cpu_peak_rss_bytes": rss, "gpu_peak_allocated_bytes": gpu}


def _cpu_count() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
