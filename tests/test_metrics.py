"""GLUE metrics against hand-computed values (percent, 4 decimals)."""

from __future__ import annotations

import numpy as np
import pytest

from fishtune.metrics import compute_metrics, main_metric_names
from fishtune.tasks import get_task

# 10 binary examples: TP=3 (0,1,2), FN=1 (3), FP=1 (4), TN=5 (5..9).
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
PREDS = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])


def logits(preds: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """Logits whose argmax is `preds`."""
    return np.eye(num_classes)[preds] * 3.0 - 1.0


def test_mrpc_f1_accuracy_and_score() -> None:
    # accuracy = 8/10; F1 = 2TP / (2TP + FP + FN) = 6/8; score = (80 + 75) / 2
    result = compute_metrics(get_task("mrpc"), {"dev": (logits(PREDS), LABELS)})
    assert result == {"f1": 75.0, "accuracy": 80.0, "score": 77.5}


def test_cola_matthews() -> None:
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (15 - 1) / sqrt(4*4*6*6) = 14/24
    result = compute_metrics(get_task("cola"), {"dev": (logits(PREDS), LABELS)})
    assert result == {"matthews": 58.3333, "score": 58.3333}


def test_cola_constant_prediction_is_zero() -> None:
    result = compute_metrics(get_task("cola"), {"dev": (logits(np.zeros(10, dtype=int)), LABELS)})
    assert result == {"matthews": 0.0, "score": 0.0}


def test_f1_without_positive_predictions_is_zero() -> None:
    # accuracy = 6/10 (all six negatives right), no predicted positives -> F1 0
    result = compute_metrics(get_task("qqp"), {"dev": (logits(np.zeros(10, dtype=int)), LABELS)})
    assert result == {"f1": 0.0, "accuracy": 60.0, "score": 30.0}


def test_accuracy_tasks() -> None:
    for name in ("sst2", "qnli", "rte", "wnli"):
        assert compute_metrics(get_task(name), {"dev": (logits(PREDS), LABELS)}) == {"accuracy": 80.0, "score": 80.0}


def test_stsb_pearson_spearman() -> None:
    # x = 1,2,3,4; y = 1,2,3,5: sum dx*dy = 6.5, sum dx^2 = 5, sum dy^2 = 8.75
    # pearson = 6.5 / sqrt(43.75) = 0.98270763; same ranks -> spearman = 1
    preds = np.array([1.0, 2.0, 3.0, 4.0])
    labels = np.array([1.0, 2.0, 3.0, 5.0])
    result = compute_metrics(get_task("stsb"), {"dev": (preds, labels)})
    assert result == {"pearson": 98.2708, "spearman": 100.0, "score": 99.1354}


def test_stsb_column_predictions_and_anticorrelation() -> None:
    # (N, 1) model output; perfectly reversed order -> both correlations -1
    preds = np.array([[3.0], [2.0], [1.0]], dtype=np.float32)
    result = compute_metrics(get_task("stsb"), {"dev": (preds, np.array([1.0, 2.0, 3.0]))})
    assert result == {"pearson": -100.0, "spearman": -100.0, "score": -100.0}


def test_stsb_constant_predictions_give_zero() -> None:
    result = compute_metrics(get_task("stsb"), {"dev": (np.full(4, 2.5), np.array([0.0, 1.0, 4.0, 5.0]))})
    assert result == {"pearson": 0.0, "spearman": 0.0, "score": 0.0}


def test_mnli_two_splits() -> None:
    # matched: 3 of 4 right = 75; mismatched: 2 of 4 right = 50; score = 62.5
    matched = (logits(np.array([0, 1, 2, 0]), 3), np.array([0, 1, 2, 1]))
    mismatched = (logits(np.array([2, 2, 1, 0]), 3), np.array([2, 0, 1, 1]))
    result = compute_metrics(get_task("mnli"), {"dev_matched": matched, "dev_mismatched": mismatched})
    assert result == {"accuracy_matched": 75.0, "accuracy_mismatched": 50.0, "score": 62.5}


def test_rounding_to_four_decimals() -> None:
    # 2 of 3 right = 66.66666... -> 66.6667
    result = compute_metrics(get_task("rte"), {"dev": (logits(np.array([0, 1, 1])), np.array([0, 1, 0]))})
    assert result == {"accuracy": 66.6667, "score": 66.6667}


def test_main_metric_names() -> None:
    assert main_metric_names(get_task("mrpc")) == ("f1", "accuracy")
    assert main_metric_names(get_task("stsb")) == ("pearson", "spearman")
    assert main_metric_names(get_task("cola")) == ("matthews",)
    assert main_metric_names(get_task("mnli")) == ("accuracy_matched", "accuracy_mismatched")


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="expected outputs for splits"):
        compute_metrics(get_task("mnli"), {"dev": (logits(PREDS), LABELS)})
    with pytest.raises(ValueError, match="logits"):
        compute_metrics(get_task("rte"), {"dev": (PREDS, LABELS)})
    with pytest.raises(ValueError, match="regression predictions"):
        compute_metrics(get_task("stsb"), {"dev": (np.zeros((10, 2)), LABELS)})
    with pytest.raises(ValueError, match="for 10 labels"):
        compute_metrics(get_task("rte"), {"dev": (logits(PREDS[:5]), LABELS)})


def _encoded(labels: list):
    import torch

    from fishtune.batching import Encoded

    dtype = torch.float32 if isinstance(labels[0], float) else torch.long
    return Encoded([[1, 2]] * len(labels), None, torch.tensor(labels, dtype=dtype))


def test_majority_baseline_predicts_the_training_splits_majority_class() -> None:
    from fishtune.runner import majority_baseline

    # MRPC: training majority 1 (dev's is 0); predicting 1 on dev [1,0,0,1,0]: TP=2, FP=3, FN=0
    # -> accuracy 2/5, F1 = 4/7; score = (57.1429 + 40) / 2
    result = majority_baseline(get_task("mrpc"), _encoded([1, 1, 0]), {"dev": _encoded([1, 0, 0, 1, 0])})
    assert result == {"f1": 57.1429, "accuracy": 40.0, "score": 48.5714}
    # MNLI, both dev splits: training majority 2 -> matched 1 of 4, mismatched 3 of 4
    result = majority_baseline(get_task("mnli"), _encoded([2, 2, 1, 0, 2]),
                               {"dev_matched": _encoded([2, 0, 0, 1]), "dev_mismatched": _encoded([2, 2, 2, 1])})
    assert result == {"accuracy_matched": 25.0, "accuracy_mismatched": 75.0, "score": 50.0}


def test_majority_baseline_of_regression_predicts_the_training_mean(monkeypatch) -> None:
    import fishtune.runner as runner

    seen = {}

    def capture(task, outputs):
        seen.update(outputs)
        return compute_metrics(task, outputs)

    monkeypatch.setattr(runner, "compute_metrics", capture)
    # training labels 1, 2, 6: mean 3 (median 2); a constant prediction correlates 0 with anything
    result = runner.majority_baseline(get_task("stsb"), _encoded([1.0, 2.0, 6.0]),
                                      {"dev": _encoded([0.0, 1.0, 4.0, 5.0])})
    assert result == {"pearson": 0.0, "spearman": 0.0, "score": 0.0}
    preds, labels = seen["dev"]
    assert preds.tolist() == [3.0] * 4 and labels.tolist() == [0.0, 1.0, 4.0, 5.0]
