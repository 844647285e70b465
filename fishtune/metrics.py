"""GLUE metrics in percent, plus the leaderboard "score" (mean of a task's metrics)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from fishtune.tasks import TaskSpec


def _f1(preds: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 of the positive class (id 1), 0 when nothing is predicted positive."""
    return float(f1_score(labels, preds, zero_division=0))


def _correlation(fn: Callable[..., object]) -> Callable[[np.ndarray, np.ndarray], float]:
    """Wrap a scipy correlation: constant inputs give nan, reported as 0."""

    def metric(preds: np.ndarray, labels: np.ndarray) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(fn(preds, labels)[0])
        return 0.0 if math.isnan(value) else value

    return metric


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda preds, labels: float(accuracy_score(labels, preds)),
    "f1": _f1,
    "matthews": lambda preds, labels: float(matthews_corrcoef(labels, preds)),
    "pearson": _correlation(pearsonr),
    "spearman": _correlation(spearmanr),
}


def main_metric_names(task: TaskSpec) -> tuple[str, ...]:
    """Metric keys `compute_metrics` returns besides "score" (e.g. "accuracy_matched" for MNLI)."""
    return tuple(name for split in task.eval_splits for name, _ in _split_metrics(task, split))


def compute_metrics(task: TaskSpec, outputs: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Metrics in percent (4 decimals) from {eval split: (predictions, labels)}.

    Predictions are logits (N, C) for classification, (N,) or (N, 1) for regression.
    """
    if set(outputs) != set(task.eval_splits):
        raise ValueError(f"{task.name}: expected outputs for splits {list(task.eval_splits)}, got {list(outputs)}")
    result: dict[str, float] = {}
    for split in task.eval_splits:
        preds, labels = _prepare(task, *outputs[split])
        for key, metric in _split_metrics(task, split):
            result[key] = round(100.0 * metric(preds, labels), 4)
    result["score"] = round(sum(result.values()) / len(result), 4)
    return result


def _split_metrics(task: TaskSpec, split: str) -> list[tuple[str, Callable[[np.ndarray, np.ndarray], float]]]:
    """(key, function) per metric of one split; keys get a suffix when a task has several splits."""
    suffix = "_" + split.removeprefix("dev_") if len(task.eval_splits) > 1 else ""
    return [(name + suffix, _METRICS[name]) for name in task.metrics]


def _prepare(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat predicted class ids (argmax of logits) or scores, and flat labels."""
    preds = np.asarray(predictions)
    labels = np.asarray(labels).reshape(-1)
    if preds.ndim == 0 or len(preds) != len(labels) or not len(labels):
        raise ValueError(f"{task.name}: predictions of shape {preds.shape} for {len(labels)} labels")
    if task.is_regression:
        preds = preds.reshape(len(preds), -1)
        if preds.shape[1] != 1:
            raise ValueError(f"{task.name}: regression predictions must be (N,) or (N, 1), got {preds.shape}")
        preds = preds[:, 0].astype(np.float64)
    else:
        if preds.ndim != 2:
            raise ValueError(f"{task.name}: classification predictions must be logits (N, C), got {preds.shape}")
        preds = preds.argmax(axis=-1)
    return preds, labels
