"""The nine GLUE tasks: Hub names, text columns, label ids, eval splits and metrics."""

from __future__ import annotations

from dataclasses import dataclass

from fishtune.errors import ConfigError


@dataclass(frozen=True)
class TaskSpec:
    """Static description of one GLUE task.

    `label_names` are in the id order of the Hub's (nyu-mll/glue) `ClassLabel`; it is
    empty for the regression task STS-B. `train_size` is the published size of the train split
    (nyu-mll/glue, and the shipped `data/glue` files).
    """

    name: str
    glue_dir: str
    hub_config: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...]
    eval_splits: tuple[str, ...]
    metrics: tuple[str, ...]
    train_size: int

    @property
    def is_regression(self) -> bool:
        """True for STS-B (a float similarity score instead of a class)."""
        return not self.label_names

    @property
    def num_labels(self) -> int:
        """Number of model outputs: classes, or 1 for regression."""
        return 1 if self.is_regression else len(self.label_names)


_DEV = ("dev",)
_PAIR = ("sentence1", "sentence2")
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("cola", "CoLA", "cola", ("sentence",), ("unacceptable", "acceptable"), _DEV, ("matthews",), 8551),
        TaskSpec("sst2", "SST-2", "sst2", ("sentence",), ("negative", "positive"), _DEV, ("accuracy",), 67349),
        TaskSpec("mrpc", "MRPC", "mrpc", _PAIR, ("not_equivalent", "equivalent"), _DEV, ("f1", "accuracy"), 3668),
        TaskSpec(
            "qqp", "QQP", "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), _DEV, ("f1", "accuracy"), 363846
        ),
        TaskSpec("stsb", "STS-B", "stsb", _PAIR, (), _DEV, ("pearson", "spearman"), 5749),
        TaskSpec(
            "mnli",
            "MNLI",
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("dev_matched", "dev_mismatched"),
            ("accuracy",),
            392702,
        ),
        TaskSpec("qnli", "QNLI", "qnli", ("question", "sentence"), _NLI2, _DEV, ("accuracy",), 104743),
        TaskSpec("rte", "RTE", "rte", _PAIR, _NLI2, _DEV, ("accuracy",), 2490),
        TaskSpec("wnli", "WNLI", "wnli", _PAIR, ("not_entailment", "entailment"), _DEV, ("accuracy",), 635),
    )
}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name, case-insensitively ("SST-2" and "sst2" both work)."""
    key = name.strip().lower().replace("-", "")
    if key not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of: {', '.join(sorted(TASKS))}")
    return TASKS[key]
