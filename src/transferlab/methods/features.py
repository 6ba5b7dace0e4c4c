"""Feature extraction (SEED.md 3.2): a frozen pretrained backbone embeds every image once (cached on disk), then a
head is trained on the embeddings: scikit-learn logistic regression (default) or a torch linear / MLP head.

The logistic regression, with its feature standardisation, is folded into one ``nn.Linear`` so the result is an
ordinary `TransferModel` that saves, loads and predicts like every other run.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from transferlab.config import (
    HEADS,
    FitConfig,
    HeadSettings,
    LabelSettings,
    PretrainedSettings,
    TrainDataSettings,
    TrainingSettings,
)
from transferlab.methods.base import (
    MethodResult,
    MethodSpec,
    RunContext,
    Splits,
    register_method,
)
from transferlab.methods.embedded_head import embed_splits, train_head_on_embeddings
from transferlab.methods.finetune import build_model
from transferlab.methods.splits import prepare_labeled_splits

__all__ = ["FeaturesConfig", "train_on_features", "fit_logistic_head", "LOGISTIC_C_GRID"]


class FeaturesConfig(FitConfig, TrainDataSettings, LabelSettings, PretrainedSettings, HeadSettings, TrainingSettings):
    """``features``: a frozen backbone embeds once; the head (logistic by default; the training settings apply to
    the torch heads) learns on the embeddings."""

    head: Literal[HEADS] = Field("logistic", description="'logistic' (scikit-learn, C picked on validation data), or a "
                                 "torch head trained on the embeddings: 'linear', 'mlp', 'bottleneck'")

log = logging.getLogger("transferlab")

LOGISTIC_C_GRID = (0.01, 0.1, 1.0, 10.0)


def _logistic_as_linear(scaler: StandardScaler, classifier: LogisticRegression, num_classes: int) -> nn.Linear:
    """``softmax(W (x - mu) / sigma + b)`` as one linear layer; binary models become two logits ``[0, z]``."""
    coef, intercept = classifier.coef_, classifier.intercept_
    if coef.shape[0] == 1:  # binary: p(class 1) = sigmoid(z) = softmax([0, z])[1]
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    full_coef = np.zeros((num_classes, coef.shape[1]))
    full_intercept = np.full(num_classes, -1e4)  # classes absent from training are never predicted
    full_coef[classifier.classes_] = coef
    full_intercept[classifier.classes_] = intercept
    scale = scaler.scale_
    linear = nn.Linear(coef.shape[1], num_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(full_coef / scale))
        linear.bias.copy_(torch.from_numpy(full_intercept - (full_coef / scale) @ scaler.mean_))
    return linear


def fit_logistic_head(train_x, train_y, val_x, val_y, num_classes: int, seed: int) -> tuple[nn.Linear, list[dict]]:
    """Standardise features, fit multinomial logistic regression for each C in `LOGISTIC_C_GRID`, keep the C with
    the best validation accuracy (training accuracy when there is no validation data), and return it as a linear
    layer plus one history row per C."""
    scaler = StandardScaler().fit(train_x)
    scaled_train = scaler.transform(train_x)
    history, best = [], None
    for c in LOGISTIC_C_GRID:
        started = time.perf_counter()
        classifier = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(scaled_train, train_y)
        row = {"epoch": len(history) + 1, "C": c, "train_accuracy": classifier.score(scaled_train, train_y)}
        if val_x is not None:
            row["val_accuracy"] = classifier.score(scaler.transform(val_x), val_y)
        row["seconds"] = round(time.perf_counter() - started, 3)
        history.append(row)
        score = row.get("val_accuracy", row["train_accuracy"])
        if best is None or score > best[0]:
            best = (score, classifier)
    log.info("logistic regression: kept C=%s", best[1].C)
    return _logistic_as_linear(scaler, best[1], num_classes), history


def train_on_features(config: FitConfig, splits: Splits, context: RunContext) -> MethodResult:
    """Embed train/val once with the frozen backbone, then fit the head on the cached embeddings."""
    model = build_model(config, splits.classes, pretrained=config.pretrained or config.weights is not None)
    model.backbone.requires_grad_(False)
    model.cache_features = True  # a frozen pretrained backbone: its embeddings may come from the cache
    train_x, val_x = embed_splits(model, config, splits, context)
    train_y = torch.from_numpy(splits.train.labels)
    val_y = torch.from_numpy(splits.val.labels) if splits.val is not None else None

    if config.head == "logistic":
        model.head[-1], history = fit_logistic_head(
            train_x.numpy(), train_y.numpy(),
            None if val_x is None else val_x.numpy(), None if val_y is None else val_y.numpy(),
            len(splits.classes), config.seed,
        )
        return MethodResult(model=model, history=history)

    history = train_head_on_embeddings(model, config, splits, context, embeddings=(train_x, val_x))
    return MethodResult(model=model.to(torch.device("cpu")), history=history)


register_method(MethodSpec("features", "frozen pretrained backbone as a feature extractor + a head on its embeddings",
                           FeaturesConfig, prepare_labeled_splits, train_on_features))
