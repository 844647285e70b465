"""What a readable run record is: the types of the fields the reporter reads.

A record is written by `fishtune.record`, but it is a file on disk: a hand edit, a truncated copy
or another tool's output can put a string where a number goes, or NaN where a score goes (Python's
`json` reads and writes NaN). `check_identity` and `check_result` raise `ValueError` naming the
field, so `scan_records` lists the record as malformed instead of crashing later, in a figure or a
cost table, or silently dropping a NaN from a mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def _finite(value: object, where: str, *, optional: bool = False) -> None:
    """A real number (not a bool, not NaN or inf), or None where `optional`."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} is {value!r}, not a finite number")


def _integer(value: object, where: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} is {value!r}, not an integer")


def _mapping(value: object, where: str, *, optional: bool = True) -> Mapping:
    """A JSON object; an absent (None) one reads as empty where `optional`."""
    if value is None and optional:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} is {value!r}, not an object")
    return value


def check_identity(rec: Mapping) -> None:
    """The fields that place a record in a row and cell: task, model, method, mask (strings), seed."""
    for key in ("task", "model", "method", "mask"):
        if not isinstance(rec.get(key), str):
            raise ValueError(f"{key} is {rec.get(key)!r}, not a string")
    for key in ("method_tag", "mask_tag"):
        if rec.get(key) is not None and not isinstance(rec[key], str):
            raise ValueError(f"{key} is {rec[key]!r}, not a string")
    _integer(rec.get("seed"), "seed")


def check_score(rec: Mapping) -> None:
    """The least a complete record holds: a finite `score`. `fishtune run` refuses to skip a complete
    record without one, and `fishtune plan` shows it as malformed (`fishtune.record.record_problem`)."""
    _finite(rec.get("score"), "score")


def check_result(rec: Mapping) -> None:
    """The fields a complete record's result is read from (see `records._flatten`)."""
    check_score(rec)
    _finite(rec.get("best_score"), "best_score", optional=True)
    dev = _mapping((_mapping(rec.get("last"), "last")).get("dev"), "last.dev", optional=False)
    for name, value in dev.items():
        _finite(value, f"last.dev.{name}")
    _finite(_mapping(rec.get("majority_baseline"), "majority_baseline").get("score"), "majority_baseline.score",
            optional=True)
    trainable = _mapping(rec.get("trainable"), "trainable", optional=False)
    for key in ("peft_selected", "peft_total", "head"):
        _integer(trainable.get(key), f"trainable.{key}")
    for key in ("peft_live", "dense", "inference", "backbone"):
        _integer(trainable.get(key), f"trainable.{key}", optional=True)
    _integer(rec.get("mask_storage_bytes"), "mask_storage_bytes", optional=True)
    for section, keys in (("time_s", ("total", "train", "eval", "fisher", "fisher_warmup")),
                          ("memory", ("cpu_peak_rss_bytes", "gpu_peak_allocated_bytes"))):
        found = _mapping(rec.get(section), section)
        for key in keys:
            _finite(found.get(key), f"{section}.{key}", optional=True)
    stats = _mapping(rec.get("mask_stats"), "mask_stats")
    for family, value in _mapping(stats.get("by_family"), "mask_stats.by_family").items():
        _finite(_mapping(value, f"mask_stats.by_family.{family}").get("share_of_mask"),
                f"mask_stats.by_family.{family}.share_of_mask", optional=True)
    for name, value in _mapping(stats.get("selected_by_param"), "mask_stats.selected_by_param").items():
        _integer(value, f"mask_stats.selected_by_param.{name}")
    epochs = rec.get("epochs", [])
    if not isinstance(epochs, list):
        raise ValueError(f"epochs is {epochs!r}, not a list")
    for i, epoch in enumerate(epochs):
        _finite(_mapping(epoch, f"epochs[{i}]", optional=False).get("epoch"), f"epochs[{i}].epoch")
        _finite(_mapping(epoch.get("dev"), f"epochs[{i}].dev", optional=False).get("score"), f"epochs[{i}].dev.score")
    if rec.get("finished_at") is not None and not isinstance(rec["finished_at"], str):
        raise ValueError(f"finished_at is {rec['finished_at']!r}, not a string")
