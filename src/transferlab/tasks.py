"""Task types of multi-task learning: what a head predicts, its loss, its metrics and how outputs read.

Three types, one small class each:

- `ClassificationTask`: one class per example; targets ``(N,)`` int64, ``-1`` where the example has no label.
- `MultiLabelTask`: any number of classes per example; targets ``(N, K)`` float32 multi-hot, a row of NaN where the
  example has no label.
- `RegressionTask`: one number per example; targets ``(N,)`` float32, NaN where the example has no label. The head
  predicts the standardised value ``(y - mean) / std`` (mean and std of the training targets, kept with the task).

Missing labels are masked out of losses and metrics, so one manifest may label each row for only some tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, f1_score, mean_absolute_error, mean_squared_error, r2_score

from transferlab.errors import TransferlabError
from transferlab.metrics import classification_metrics

__all__ = ["Task", "ClassificationTask", "MultiLabelTask", "RegressionTask", "task_from_dict", "TASK_TYPES"]

MULTILABEL_THRESHOLD = 0.5


@dataclass
class Task:
    """A named prediction task: ``name`` (its head), ``column`` (where its labels come from)."""

    name: str
    column: str | None = None
    type = "task"
    # what `predictions` gives, for the JSON beside an exported model
    predictions_meaning = ""
    # how `predictions` become decisions (`transferlab.models.base.Predictor.output_decisions`): "argmax", "threshold"
    # (a class per column at >= MULTILABEL_THRESHOLD), or None for values
    decision: ClassVar[str | None] = None

    @property
    def label_column(self) -> str:
        """The manifest column holding this task's labels: ``column``, or the task name."""
        return self.column or self.name

    @property
    def num_outputs(self) -> int:
        raise NotImplementedError

    def valid(self, targets: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: which examples carry a label for this task."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss over the labeled examples; ``outputs (N, num_outputs)``; 0 (kept in the graph) if none."""
        keep = self.valid(targets)
        if not bool(keep.any()):
            return outputs.sum() * 0.0
        return self._loss(outputs[keep].float(), targets[keep])

    def metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict:
        """Metrics over the labeled examples; ``score`` is the one model selection uses (higher is better)."""
        keep = self.valid(torch.as_tensor(targets)).numpy()
        if not keep.any():
            return {"n": 0}
        return {"n": int(keep.sum()), **self._metrics(outputs[keep], targets[keep])}

    def decode(self, outputs: np.ndarray) -> list[dict]:
        """Per-example predictions a user reads (labels, probabilities, values) from the head's raw outputs."""
        return self.decode_predictions(self.predictions(torch.as_tensor(outputs)).numpy())

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """What the head's raw outputs ``(N, num_outputs)`` mean for a user, ``(N, num_outputs)``: probabilities or
        values. Written in torch, so an exported (ONNX) model computes it too."""
        raise NotImplementedError

    def decode_predictions(self, predictions: np.ndarray) -> list[dict]:
        """Per-example predictions a user reads from `predictions`' values ``(N, num_outputs)``."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "column": self.column}

    def _loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict:
        raise NotImplementedError


@dataclass
class _ClassesTask(Task):
    """A task with one output per class name."""

    classes: list[str] = field(default_factory=list)

    @property
    def num_outputs(self) -> int:
        return len(self.classes)

    def probability_rows(self, probabilities: np.ndarray) -> list[dict[str, float]]:
        return [{name: float(p) for name, p in zip(self.classes, row, strict=True)} for row in probabilities]

    def to_dict(self):
        return {**super().to_dict(), "classes": list(self.classes)}


@dataclass
class ClassificationTask(_ClassesTask):
    """Single-label classification: softmax over ``classes``, cross-entropy; accuracy and macro-F1."""

    type = "classification"
    predictions_meaning = "(batch, classes) softmax probabilities"
    decision = "argmax"

    def valid(self, targets):
        return targets >= 0

    def _loss(self, outputs, targets):
        return F.cross_entropy(outputs, targets.long())

    def _metrics(self, outputs, targets):
        metrics = classification_metrics(targets, outputs.argmax(1), self.classes)
        return {**metrics, "score": metrics["accuracy"]}

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.as_tensor(outputs), dim=1).numpy()

    def predictions(self, outputs):
        """Softmax probabilities over ``classes``."""
        return torch.softmax(outputs, dim=1)

    def decode_predictions(self, predictions):
        return [{"label": self.classes[int(row.argmax())], "probabilities": rows}
                for row, rows in zip(predictions, self.probability_rows(predictions), strict=True)]


@dataclass
class MultiLabelTask(_ClassesTask):
    """Multi-label classification: a sigmoid per class, binary cross-entropy; a class is predicted when its
    probability is at least 0.5. Metrics: micro- and macro-F1, exact-match accuracy, mean average precision."""

    type = "multilabel"
    predictions_meaning = "(batch, classes) sigmoid probabilities; a class is predicted at >= 0.5"
    decision = "threshold"

    def valid(self, targets):
        return ~torch.isnan(targets).any(dim=1)

    def _loss(self, outputs, targets):
        return F.binary_cross_entropy_with_logits(outputs, targets.float())

    def _metrics(self, outputs, targets):
        predicted = (torch.sigmoid(torch.as_tensor(outputs)).numpy() >= MULTILABEL_THRESHOLD).astype(int)
        truth = targets.astype(int)
        with_positives = truth.sum(0) > 0
        mean_ap = (float(average_precision_score(truth[:, with_positives], outputs[:, with_positives], average="macro"))
                   if with_positives.any() else float("nan"))
        micro = float(f1_score(truth, predicted, average="micro", zero_division=0))
        return {
            "micro_f1": micro,
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
            "exact_match": float((predicted == truth).all(1).mean()),
            "mean_average_precision": mean_ap,
            "classes": list(self.classes),
            "score": micro,
        }

    def predictions(self, outputs):
        """A sigmoid probability per class."""
        return torch.sigmoid(outputs)

    def decode_predictions(self, predictions):
        return [{"labels": [name for name, p in rows.items() if p >= MULTILABEL_THRESHOLD], "probabilities": rows}
                for rows in self.probability_rows(predictions)]


@dataclass
class RegressionTask(Task):
    """Regression: one output, mean squared error on standardised targets; MAE, RMSE and R^2 in target units."""

    mean: float = 0.0
    std: float = 1.0
    type = "regression"
    predictions_meaning = "(batch, 1) the value, in the label column's units"

    @property
    def num_outputs(self) -> int:
        return 1

    def valid(self, targets):
        return ~torch.isnan(targets)

    def _loss(self, outputs, targets):
        standardised = (targets.float() - self.mean) / self.std
        return F.mse_loss(outputs.squeeze(1), standardised)

    def values(self, outputs: np.ndarray) -> np.ndarray:
        """Predictions in target units, ``(N,)``."""
        return outputs[:, 0] * self.std + self.mean

    def _metrics(self, outputs, targets):
        predicted = self.values(outputs)
        r2 = float(r2_score(targets, predicted)) if len(targets) > 1 else float("nan")
        return {
            "mae": float(mean_absolute_error(targets, predicted)),
            "rmse": float(np.sqrt(mean_squared_error(targets, predicted))),
            "r2": r2,
            "score": r2,
        }

    def predictions(self, outputs):
        """Values in target units, ``(N, 1)``."""
        return outputs * self.std + self.mean

    def decode_predictions(self, predictions):
        return [{"value": float(value)} for value in predictions[:, 0]]

    def to_dict(self):
        return {**super().to_dict(), "mean": self.mean, "std": self.std}


TASK_TYPES: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "multilabel": MultiLabelTask,
    "regression": RegressionTask,
}


def task_from_dict(values: dict) -> Task:
    """Rebuild a task saved with `Task.to_dict` (e.g. from a run's ``model.json``)."""
    values = dict(values)
    kind = values.pop("type", None)
    if kind not in TASK_TYPES:
        raise TransferlabError(f"unknown task type {kind!r}; expected one of: {', '.join(TASK_TYPES)}")
    return TASK_TYPES[kind](**values)
