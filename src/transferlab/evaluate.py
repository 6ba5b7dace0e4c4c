"""Metrics and predictions of trained classifiers (and multi-task heads) on any examples; a confusion matrix as text."""

from __future__ import annotations

import logging

import numpy as np
import torch

from transferlab.data import Examples
from transferlab.data.torch_dataset import make_dataset
from transferlab.embeddings import default_num_workers, extract_features
from transferlab.engine.distributed import make_loader
from transferlab.engine.inference import predict_logits
from transferlab.engine.precision import default_device, resolve_precision
from transferlab.errors import TransferlabError
from transferlab.metrics import classification_metrics

__all__ = ["predict_proba", "predict_task_outputs", "evaluate_model", "classification_metrics", "confusion_lines"]

log = logging.getLogger("transferlab")


def predict_proba(
    model,
    data: Examples,
    *,
    batch_size: int = 64,
    precision: str = "auto",
    num_workers: int | None = None,
    feature_cache: bool = False,
    feature_engine: str = "torch",
) -> np.ndarray:
    """Class probabilities ``(N, len(model.classes))`` for every example of ``data``.

    ``feature_cache=True`` (for models whose backbone is a frozen pretrained one, as ``features`` runs make) reads
    and fills the embedding cache, so images embedded before cost nothing; ``feature_engine`` is what embeds the
    others (`transferlab.embeddings.extract_features`).
    """
    if feature_cache:
        device, precision, workers = _inference_settings(data, precision, num_workers)
        features = extract_features(model.backbone, data, batch_size=batch_size, precision=precision, device=device,
                                    num_workers=workers, progress=False, engine=feature_engine)
        with torch.inference_mode():
            logits = model.head.to(device)(features.to(device)).float().cpu()
    else:
        logits = _model_outputs(model, data, batch_size, precision, num_workers)
    return torch.softmax(logits, dim=1).numpy()


def predict_task_outputs(
    model, data: Examples, *, batch_size: int = 64, precision: str = "auto",
    num_workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Every head's raw outputs ``{task: (N, n_outputs)}`` for the examples of ``data`` (decode with `Task.decode`)."""
    outputs = _model_outputs(model, data, batch_size, precision, num_workers)
    return {name: values.numpy() for name, values in outputs.items()}


def _inference_settings(data: Examples, precision: str, num_workers: int | None) -> tuple[torch.device, str, int]:
    """Device, resolved precision and decoding workers for running a model over ``data``."""
    device = default_device()
    return device, resolve_precision(precision, device), default_num_workers(data) if num_workers is None else num_workers


def _model_outputs(model, data: Examples, batch_size: int, precision: str, num_workers: int | None):
    """``model``'s outputs over every example of ``data`` (a tensor, or one per head), in eval mode."""
    device, precision, workers = _inference_settings(data, precision, num_workers)
    loader = make_loader(make_dataset(data, model.preprocess), batch_size=batch_size, shuffle=False,
                         num_workers=workers)
    outputs, _ = predict_logits(model.to(device), loader, precision, device)
    return outputs


def _labels_in_model_space(model, data: Examples) -> tuple[np.ndarray, np.ndarray]:
    """Map ``data``'s labels onto the model's class order by name; return ``(kept_indices, labels)``."""
    if data.labels is None:
        raise TransferlabError(f"{data.name} has no labels: evaluation needs labeled data")
    position = {name: i for i, name in enumerate(model.classes)}
    unknown = sorted(set(data.classes) - set(position))
    if unknown and not set(data.classes) & set(position):
        raise TransferlabError(
            f"none of the classes in {data.name} ({', '.join(data.classes[:5])}) are classes of the model "
            f"({', '.join(model.classes[:5])})"
        )
    if unknown:
        log.warning("%s has classes the model does not know (%s); evaluating on the shared classes", data.name,
                    ", ".join(unknown))
    mapped = np.array([position.get(data.classes[label], -1) for label in data.labels])
    kept = np.flatnonzero(mapped >= 0)
    return kept, mapped[kept]


def evaluate_model(model, data: Examples, **predict_options) -> dict:
    """Accuracy, macro-F1 and confusion matrix of ``model`` on labeled ``data`` (`classification_metrics`).

    Data may lack some of the model's classes (even all but one): macro-F1 then averages over the classes it has,
    named in ``macro_f1_classes``, and a warning names the missing ones.
    """
    kept, labels = _labels_in_model_space(model, data)
    if len(kept) == 0:
        raise TransferlabError(f"{data.name} has no examples of the model's classes")
    subset = data if len(kept) == len(data) else data.subset(kept)
    probabilities = predict_proba(model, subset, **predict_options)
    metrics = classification_metrics(labels, probabilities.argmax(1), model.classes)
    missing = [name for name in model.classes if name not in metrics["macro_f1_classes"]]
    if missing:
        log.warning("%s has no examples of class(es) %s: macro-F1 is the mean over the %d class(es) it has (%s)",
                    data.name, ", ".join(missing), len(metrics["macro_f1_classes"]),
                    ", ".join(metrics["macro_f1_classes"]))
    return metrics


def confusion_lines(classes: list[str], matrix: list[list[int]]) -> list[str]:
    """A confusion matrix as aligned text: a header of predicted classes, then one row per true class."""
    width = max(6, *(len(c) for c in classes)) + 1
    lines = [" " * width + "".join(c[: width - 1].rjust(width) for c in classes)]
    for name, row in zip(classes, matrix, strict=True):
        lines.append(name[: width - 1].ljust(width) + "".join(str(v).rjust(width) for v in row))
    return lines
