"""Metrics of predictions against labels, with no model or data code: what tasks, evaluation and reports share."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

__all__ = ["classification_metrics", "detection_metrics", "error_rates"]


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


def detection_metrics(predictions: list[dict], targets: list[dict], classes: list[str]) -> dict:
    """COCO-style detection metrics of boxes against annotations, computed by torchmetrics' ``MeanAveragePrecision``
    (pycocotools' COCOeval underneath).

    ``map`` is the AP averaged over IoU thresholds 0.50:0.05:0.95 and over the classes that have annotations;
    ``map_50`` and ``map_75`` at one threshold (``map_50`` is PASCAL VOC's measure, with COCO's 101-point
    interpolation); ``mar_100`` the recall with up to 100 detections per image. Per class: its AP (0.5:0.95), its
    AP at IoU 0.5 and its recall; ``None`` for a class without annotations in the data. Annotations flagged
    ``iscrowd`` (VOC ``difficult``, COCO crowd) are neither matched nor missed: detections on them are ignored.

    Args:
        predictions: per image ``{"boxes": (n, 4) xyxy, "scores": (n,), "labels": (n,) class indices}``.
        targets: per image ``{"boxes": (m, 4) xyxy, "labels": (m,), "iscrowd": (m,) 0/1}``, same order.
        classes: the class names the labels index.
    """
    import torch  # imported here with torchmetrics: only detection needs them
    from torchmetrics.detection import MeanAveragePrecision

    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} annotated images")
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True, extended_summary=True)
    metric.update(predictions, targets)
    result = metric.compute()
    present = result["classes"].reshape(-1)

    def per_class(values: torch.Tensor) -> dict[int, float | None]:
        found = {int(c): float(v) for c, v in zip(present, values.reshape(-1), strict=True)}
        return {index: None if found.get(index, -1.0) < 0 else found[index] for index in range(len(classes))}

    # COCOeval's precision: (IoU thresholds, 101 recall points, classes, area ranges, max detections), -1 where
    # undefined; AP at IoU 0.5 of a class is its mean over the recall points (area "all", 100 detections)
    curve = result["precision"][0, :, :, 0, -1]
    ap_50_values = torch.stack([column[column > -1].mean() if (column > -1).any() else torch.tensor(-1.0)
                                for column in curve.T]) if curve.numel() else torch.zeros(0)
    ap, ap_50, recall = (per_class(values) for values in (result["map_per_class"], ap_50_values,
                                                          result["mar_100_per_class"]))
    boxes = sum(int((target["iscrowd"] == 0).sum()) for target in targets)
    return {
        "n": len(targets),
        "boxes": boxes,
        **{key: max(float(result[key]), 0.0) for key in ("map", "map_50", "map_75", "mar_100")},
        "classes": list(classes),
        "per_class": {name: {"ap": ap[index], "ap_50": ap_50[index], "recall": recall[index]}
                      for index, name in enumerate(classes)},
    }
