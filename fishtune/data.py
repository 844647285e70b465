"""Load GLUE splits as `Example`s from local TSVs (official GLUE layout) or the HF Hub.

Local files follow the GLUE download script: `<data_dir>/<glue_dir>/<split>.tsv`, e.g.
`glue_data/MNLI/dev_matched.tsv`. Label ids always match the Hub's `ClassLabel` ids.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fishtune.errors import ConfigError, DataError
from fishtune.tasks import TaskSpec


def _shipped_glue_dir() -> Path:
    """The GLUE files fishtune ships: data/glue of the checkout this module lives in, else (an
    installed wheel) its package data `fishtune.glue`."""
    checkout = Path(__file__).resolve().parent.parent / "data" / "glue"
    if checkout.is_dir():
        return checkout
    try:
        return Path(str(importlib.resources.files("fishtune.glue")))
    except (ModuleNotFoundError, TypeError):   # neither: the error names the checkout's path
        return checkout


DEFAULT_GLUE_DIR = _shipped_glue_dir()
SOURCES = ("auto", "local", "hub")
HUB_DATASET = "nyu-mll/glue"
_HUB_SPLITS = {
    "train": "train",
    "dev": "validation",
    "dev_matched": "validation_matched",
    "dev_mismatched": "validation_mismatched",
}


@dataclass(frozen=True)
class Example:
    """One example: one or two texts and a class id (int) or regression target (float)."""

    text_a: str
    text_b: str | None
    label: int | float


def examples_digest(examples: list[Example], *, legacy: bool = False) -> str:
    """16 hex digits of SHA-256 over the examples' texts and labels, in order: the same data read
    from a TSV copy or the Hub gives the same digest, an edited file another.

    A regression label is hashed at float32 precision, the precision training reads it at: the Hub
    stores STS-B's scores as float32 (2.4 comes back as 2.4000000953674316) where the TSV has the
    decimal. `legacy=True`: the digest before that (labels as read), which older records carry.
    """
    h = hashlib.sha256()
    for e in examples:
        label = e.label if legacy or not isinstance(e.label, float) else float(np.float32(e.label))
        h.update(json.dumps([e.text_a, e.text_b, label], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class _LocalFormat:
    """Where a task's TSV keeps its texts and label, and how labels are spelled.

    `label_values` are the local label strings in Hub id order (empty: float score).
    `fixed_columns` names the columns of a header-less file (CoLA).
    """

    text_columns: tuple[str, ...]
    label_column: str
    label_values: tuple[str, ...]
    fixed_columns: tuple[str, ...] | None = None
    score_range: tuple[float, float] = (0.0, 5.0)   # a float score's scale (STS-B's similarity)


_BINARY = ("0", "1")
_PAIR = ("sentence1", "sentence2")
_LOCAL_FORMATS: dict[str, _LocalFormat] = {
    "cola": _LocalFormat(("sentence",), "label", _BINARY, ("source", "label", "orig_label", "sentence")),
    "sst2": _LocalFormat(("sentence",), "label", _BINARY),
    "mrpc": _LocalFormat(("#1 String", "#2 String"), "Quality", _BINARY),
    "qqp": _LocalFormat(("question1", "question2"), "is_duplicate", _BINARY),
    "stsb": _LocalFormat(_PAIR, "score", ()),
    "mnli": _LocalFormat(_PAIR, "gold_label", ("entailment", "neutral", "contradiction")),
    "qnli": _LocalFormat(("question", "sentence"), "label", ("entailment", "not_entailment")),
    "rte": _LocalFormat(_PAIR, "label", ("entailment", "not_entailment")),
    # Local WNLI uses 1 = entailment; the Hub's ids are not_entailment=0, entailment=1.
    "wnli": _LocalFormat(_PAIR, "label", _BINARY),
}


def load_split(
    task: TaskSpec,
    split: str,
    *,
    source: str = "auto",
    data_dir: str | Path = DEFAULT_GLUE_DIR,
    max_samples: int | None = None,
    seed: int = 0,
) -> list[Example]:
    """Load `split` ("train" or one of `task.eval_splits`) of `task`.

    `source`: "local" (TSV), "hub" (nyu-mll/glue) or "auto" (local if the file exists,
    else the Hub). `max_samples` keeps a seeded random subset in original order.
    """
    _check_args(task, split, source, max_samples)
    path = local_path(task, split, data_dir)
    if source == "local" or (source == "auto" and path.is_file()):
        examples = _load_local(task, split, path)
    else:
        examples = _load_hub(task, split, path)
    return _subsample(examples, max_samples, seed)


def local_path(task: TaskSpec, split: str, data_dir: str | Path = DEFAULT_GLUE_DIR) -> Path:
    """Path of a split's TSV in the GLUE layout: `<data_dir>/<glue_dir>/<split>.tsv`."""
    return Path(data_dir).expanduser() / task.glue_dir / f"{split}.tsv"


def _check_args(task: TaskSpec, split: str, source: str, max_samples: int | None) -> None:
    """Reject an unknown split or source, or a non-positive `max_samples`."""
    splits = ("train", *task.eval_splits)
    if split not in splits:
        raise ConfigError(f"unknown split {split!r} for task '{task.name}'; choose one of: {', '.join(splits)}")
    if source not in SOURCES:
        raise ConfigError(f"unknown data source {source!r}; choose one of: {', '.join(SOURCES)}")
    if max_samples is not None and max_samples < 1:
        raise ConfigError(f"max_samples must be a positive integer or None, got {max_samples}")


def _subsample(examples: list[Example], max_samples: int | None, seed: int) -> list[Example]:
    """A seeded random subset of `max_samples` examples, kept in file order."""
    if max_samples is None or max_samples >= len(examples):
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), max_samples))
    return [examples[i] for i in keep]


# --- local TSV ---------------------------------------------------------------------------


def _load_local(task: TaskSpec, split: str, path: Path) -> list[Example]:
    """Parse a local GLUE TSV; every problem is a DataError naming the file and line."""
    if not path.is_file():
        raise DataError(
            f"no local data for task '{task.name}' split '{split}': {path} does not exist. "
            f"Point data.dir=/path/to/glue_data at a folder in the GLUE layout "
            f"(<dir>/{task.glue_dir}/{split}.tsv, as written by the GLUE download script), "
            f"or use data.source=hub when online."
        )
    fmt = _LOCAL_FORMATS[task.name]
    rows = _TsvRows(path, has_header=fmt.fixed_columns is None)
    try:
        examples = _parse_rows(fmt, path, iter(rows))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 text ({err.reason} at byte {err.start})") from err
    except csv.Error as err:  # e.g. a field over the csv module's size limit
        raise DataError(f"{path}, line {rows.line}: not a GLUE TSV row ({err})") from err
    if not examples:
        raise DataError(f"{path}: no data rows (empty split)")
    return examples


class _TsvRows:
    """Iterate (1-based line number, fields); the header (if any) comes first, as line 1. `line` is
    the line being read (for an error the csv module raises mid-row).

    Bare `"` is ordinary text in GLUE, so quoting is off; a leading BOM is dropped.
    """

    def __init__(self, path: Path, *, has_header: bool):
        self.path, self.has_header, self.line = path, has_header, 1

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        with self.path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if self.has_header:
                header = next((row for row in reader if row), [])  # blank lines before it are skipped
                self.line = reader.line_num + 1
                yield reader.line_num or 1, header
            for row in reader:
                self.line = reader.line_num + 1
                if row:
                    yield reader.line_num, row


def _parse_rows(fmt: _LocalFormat, path: Path, rows: Iterator[tuple[int, list[str]]]) -> list[Example]:
    """Turn TSV rows into Examples, using the header (or fixed columns) to find fields."""
    columns = fmt.fixed_columns or _check_header(fmt, path, *next(rows))
    text_idx = [columns.index(name) for name in fmt.text_columns]
    label_idx = columns.index(fmt.label_column)
    examples = []
    for line, row in rows:
        if len(row) != len(columns):
            raise DataError(
                f"{path}, line {line}: malformed row: expected {len(columns)} tab-separated columns, found {len(row)}"
            )
        texts = [row[i] for i in text_idx]
        label = _parse_label(fmt, row[label_idx], path, line)
        examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label))
    return examples


def _check_header(fmt: _LocalFormat, path: Path, line: int, header: list[str]) -> tuple[str, ...]:
    """Return the header's column names, or fail if a required column is missing or repeated."""
    if not header:
        raise DataError(f"{path}: no data rows (empty split; not even a header line)")
    names = tuple(name.strip() for name in header)
    required = (*fmt.text_columns, fmt.label_column)
    missing = [name for name in required if name not in names]
    if missing:
        raise DataError(
            f"{path}, line {line}: wrong header: missing column(s) {', '.join(map(repr, missing))}; "
            f"expected columns {', '.join(map(repr, required))} (found {', '.join(map(repr, names))})"
        )
    repeated = [name for name in required if names.count(name) > 1]
    if repeated:
        raise DataError(f"{path}, line {line}: wrong header: column(s) {', '.join(map(repr, repeated))} appear "
                        "more than once, so which one holds the data is ambiguous")
    return names


def _parse_label(fmt: _LocalFormat, value: str, path: Path, line: int) -> int | float:
    """A class id from the task's local label strings, or a float score (STS-B)."""
    value = value.strip()
    if not fmt.label_values:
        try:
            score = float(value)
        except ValueError:
            raise DataError(f"{path}, line {line}: score {value!r} is not a number") from None
        low, high = fmt.score_range
        if not low <= score <= high:   # also NaN and inf, which float() reads
            raise DataError(f"{path}, line {line}: score {value!r} is outside [{low:g}, {high:g}]")
        return score
    if value not in fmt.label_values:
        raise DataError(f"{path}, line {line}: unknown label {value!r}; valid labels: {', '.join(fmt.label_values)}")
    return fmt.label_values.index(value)


# --- Hugging Face Hub ----------------------------------------------------------------------


def _load_hub(task: TaskSpec, split: str, path: Path) -> list[Example]:
    """Load a split of nyu-mll/glue; any failure (offline, ...) becomes one DataError line."""
    try:
        import datasets

        rows = datasets.load_dataset(HUB_DATASET, task.hub_config, split=_HUB_SPLITS[split])
    except Exception as err:  # noqa: BLE001 - whatever the Hub client raised, the fix is the same
        reason = (str(err).splitlines() or [""])[0]
        raise DataError(
            f"cannot load '{task.name}' split '{split}' from the Hugging Face Hub ({HUB_DATASET}): "
            f"the Hub is unreachable or failed ({type(err).__name__}: {reason}); "
            f"local data was looked for at {path} (set data.dir=/path/to/glue_data to use local files)"
        ) from err
    examples = [_hub_example(task, row) for row in rows]
    if not examples:
        raise DataError(f"Hub dataset {HUB_DATASET}/{task.hub_config} split '{split}' has no rows")
    return examples


def _hub_example(task: TaskSpec, row: dict[str, Any]) -> Example:
    """One Hub row ({text fields..., "label"}) as an Example."""
    texts = [row[name] for name in task.text_fields]
    label = float(row["label"]) if task.is_regression else int(row["label"])
    return Example(texts[0], texts[1] if len(texts) > 1 else None, label)
