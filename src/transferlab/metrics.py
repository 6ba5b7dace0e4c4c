"""Metrics of predictions against labels, with no model or data code: what tasks, evaluation and reports share."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

__all__ = ["classification_metrics"]


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro-F1 and the confusion matrix (rows: true class, columns: predicted), over ``classes``."""
    indices = list(range(len(classes)))
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=indices, average="macro", zero_division=0)),
        "classes": list(classes),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=indices).tolist(),
    }
