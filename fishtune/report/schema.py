"""What a readable run record is: the types of the fields the reporter reads.

A record is written by `fishtune.record`, but it is a file on disk: a hand edit, a truncated copy
or another tool's output can put a string where a number goes, or NaN where a score goes (Python's
`json` reads and writes NaN). `check_identity` and `check_result` raise `ValueError` naming the
field, so `scan_records` lists the record as malformed instead of crashing later, in a figure or a
cost table, or silently dropping a NaN from a mean.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

RUN_STATUSES = ("running", "complete", "failed", "diverged", "interrupted")   # what a run record's status can be
SCORE_RANGE = (-100.0, 100.0)     # every metric is 100 × a value in [-1, 1] (MCC and correlations can be negative)
COUNT_RANGE = (0, 2**63 - 1)      # counts, bytes and seeds: what a table's integer column holds
SECONDS_RANGE = (0.0, 1e9)        # ~30 years: a larger time is no measurement


def _finite(value: object, where: str, *, optional: bool = False,
            within: tuple[float, float] | None = None) -> None:
    """A real number (not a bool, not NaN or inf) in `within` (inclusive), or None where `optional`."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} is {value!r}, not a finite number")
    if within is not None and not within[0] <= value <= within[1]:
        raise ValueError(f"{where} is {value!r}, outside [{within[0]:g}, {within[1]:g}]")


def _integer(value: object, where: str, *, optional: bool = False) -> None:
    """An integer in `COUNT_RANGE` (not a bool), or None where `optional`."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} is {value!r}, not an integer")
    if not COUNT_RANGE[0] <= value <= COUNT_RANGE[1]:
        raise ValueError(f"{where} is {value}, outside [0, 2^63 - 1]")


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


def check_status(rec: Mapping) -> None:
    """A status some run writes (`RUN_STATUSES`), and a `test_model` flag that is true or false."""
    if rec.get("status") not in RUN_STATUSES:
        raise ValueError(f"status {rec.get('status')!r} is not a run status ({', '.join(RUN_STATUSES)})")
    if rec.get("test_model") is not None and not isinstance(rec["test_model"], bool):
        raise ValueError(f"test_model is {rec['test_model']!r}, not true or false")


def check_score(rec: Mapping) -> None:
    """The least a complete record holds: a finite `score`. `fishtune run` refuses to skip a complete
    record without one, and `fishtune plan` shows it as malformed (`fishtune.record.record_problem`)."""
    _finite(rec.get("score"), "score", within=SCORE_RANGE)


def check_result(rec: Mapping) -> None:
    """The fields a complete record's result is read from (see `records._flatten`)."""
    check_score(rec)
    _finite(rec.get("best_score"), "best_score", optional=True, within=SCORE_RANGE)
    dev = _mapping((_mapping(rec.get("last"), "last")).get("dev"), "last.dev", optional=False)
    if len(dev) < 2:   # the task's metrics and their mean `score`: a table cell per metric reads them
        raise ValueError(f"last.dev is {dict(dev)!r}, without the task's metrics")
    for name, value in dev.items():
        _finite(value, f"last.dev.{name}", within=SCORE_RANGE)
    _finite(_mapping(rec.get("majority_baseline"), "majority_baseline").get("score"), "majority_baseline.score",
            optional=True, within=SCORE_RANGE)
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
            _finite(found.get(key), f"{section}.{key}", optional=True,
                    within=SECONDS_RANGE if section == "time_s" else COUNT_RANGE)
    stats = _mapping(rec.get("mask_stats"), "mask_stats")
    for family, value in _mapping(stats.get("by_family"), "mask_stats.by_family").items():
        _finite(_mapping(value, f"mask_stats.by_family.{family}").get("share_of_mask"),
                f"mask_stats.by_family.{family}.share_of_mask", optional=True, within=(0.0, 1.0))
    for name, value in _mapping(stats.get("selected_by_param"), "mask_stats.selected_by_param").items():
        _integer(value, f"mask_stats.selected_by_param.{name}")
    epochs = rec.get("epochs", [])
    if not isinstance(epochs, list):
        raise ValueError(f"epochs is {epochs!r}, not a list")
    for i, epoch in enumerate(epochs):
        _finite(_mapping(epoch, f"epochs[{i}]", optional=False).get("epoch"), f"epochs[{i}].epoch")
        _finite(_mapping(epoch.get("dev"), f"epochs[{i}].dev", optional=False).get("score"), f"epochs[{i}].dev.score",
                within=SCORE_RANGE)
    if rec.get("finished_at") is not None:   # which of two copies is newer (`records._drop_duplicates`)
        try:
            dt.datetime.fromisoformat(rec["finished_at"])
        except (TypeError, ValueError):
            raise ValueError(f"finished_at is {rec['finished_at']!r}, not an ISO 8601 time") from None
