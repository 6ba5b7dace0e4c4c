"""Metrics of predictions against labels, with no model or data code: what tasks, evaluation and reports share."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

__all__ = ["classification_metrics", "error_rates"]


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro-F1 and the confusion matrix (rows: true class, columns: predicted, over all ``classes``).

    Macro-F1 is the mean F1 of the classes that have examples in ``labels``, named in ``macro_f1_classes``: a class
    the model knows but the data lacks has no F1 to average (counting it as 0 would give perfect predictions on
    one-class data a macro-F1 of 1/len(classes)). Predictions of such a class still lower the precision of the
    class they were made for.

    Args:
        labels: ``(N,)`` true class indices into ``classes``.
        predictions: ``(N,)`` predicted class indices.
        classes: the class names (the model's).
    """
    present = np.unique(labels).tolist()
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=present, average="macro", zero_division=0)),
        "macro_f1_classes": [classes[index] for index in present],
        "classes": list(classes),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=list(range(len(classes)))).tolist(),
    }


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Word and character error rates ``{"wer", "cer"}`` of transcripts over a whole corpus, computed with jiwer.

    WER = (S + D + I) / N over words and CER the same over characters, where S, D and I are the substitutions,
    deletions and insertions of the minimal alignment of hypothesis to reference and N is the number of reference
    words (characters). Both are totals over the corpus (not means of per-clip rates) and can exceed 1 when the
    hypotheses insert much.

    Args:
        references: the true transcripts, non-empty.
        hypotheses: one transcript per reference, in the same order.

    Raises:
        ValueError: the lists differ in length, are empty, or a reference is empty.
    """
    import jiwer  # imported here: only speech recognition needs it

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("no transcripts to score")
    if not all(reference.strip() for reference in references):
        raise ValueError("a reference transcript is empty; WER and CER need non-empty references")
    return {"wer": float(jiwer.wer(references, hypotheses)), "cer": float(jiwer.cer(references, hypotheses))}
