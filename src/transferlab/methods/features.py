"""Feature extraction (SEED.md 3.2): a frozen pretrained backbone embeds every example once (cached on disk), then a
head is trained on the embeddings: scikit-learn logistic regression (default; C chosen by cross-validation on the
training labels, then refit on all of them) or a torch linear / MLP head.

The logistic regression, with its feature scaling, is folded into one ``nn.Linear`` so the result is an
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
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn

from transferlab.config import (
    GRADIENT_TRAINING_SETTINGS,
    HEADS,
    ExampleSettings,
    FitConfig,
    HeadSettings,
    LabelSettings,
    PretrainedSettings,
    TrainDataSettings,
    TrainingSettings,
)
from transferlab.engine.distributed import world_size
from transferlab.engine.onnx_features import AUTO_ONNX_MIN_EXAMPLES, FEATURE_ENGINES, choose_feature_engine
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

__all__ = ["LOGISTIC_C_GRID", "FeaturesConfig", "fit_logistic_head", "logistic_label_use", "train_on_features"]


class FeaturesConfig(FitConfig, TrainDataSettings, LabelSettings, ExampleSettings, PretrainedSettings, HeadSettings,
                     TrainingSettings):
    """``features``: a frozen backbone embeds once; the head (logistic by default; the training settings apply to
    the torch heads) learns on the embeddings."""

    head: Literal[HEADS] = Field("logistic", description="'logistic' (scikit-learn, C by cross-validation on the "
                                 "training labels, refit on all), or a "
                                 "torch head trained on the embeddings: 'linear', 'mlp', 'bottleneck'")
    engine: Literal[FEATURE_ENGINES] = Field(
        "auto", description="what embeds the run's data: 'torch', 'onnx' (the backbone exported once to ONNX, "
        "cached, run by onnxruntime; CPU and fp32 only, faster where the CPU has no bf16), or 'auto': onnx for "
        f"image backbones in fp32 on the CPU from {AUTO_ONNX_MIN_EXAMPLES} images at 224 px (or as many pixels), "
        "else torch; predicting with the saved run uses torch")

    def ignored_settings(self):
        if self.head != "logistic":
            return {}
        why = ("the logistic head is fitted by scikit-learn (C by cross-validation on every training label, none "
               "held out); these settings apply to --head linear, mlp or bottleneck")
        return dict.fromkeys((*GRADIENT_TRAINING_SETTINGS, "head_hidden", "dropout", "val_fraction"), why)


log = logging.getLogger("transferlab")

SMALL_PROBLEM_BLAS_THREADS = 1
"""The logistic fits run with one BLAS thread: their matrices (a few hundred examples x a few thousand features) are
too small to gain from more, and OpenBLAS's spinning threads lose badly to any other load on the cores (measured on
2 cores beside other jobs: 7-8 s per fit with 2 threads, 0.2 s with 1)."""

LOGISTIC_C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 11))  # 0.001 to 100 in half decades


def _logistic_as_linear(shift: np.ndarray, scale: np.ndarray, classifier: LogisticRegression,
                        num_classes: int) -> nn.Linear:
    """``softmax(W (x - shift) / scale + b)`` as one linear layer; binary models become two logits ``[0, z]``."""
    coef, intercept = classifier.coef_, classifier.intercept_
    if coef.shape[0] == 1:  # binary: p(class 1) = sigmoid(z) = softmax([0, z])[1]
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    full_coef = np.zeros((num_classes, coef.shape[1]))
    full_intercept = np.full(num_classes, -1e4)  # classes absent from training are never predicted
    full_coef[classifier.classes_] = coef
    full_intercept[classifier.classes_] = intercept
    linear = nn.Linear(coef.shape[1], num_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(full_coef / scale))
        linear.bias.copy_(torch.from_numpy(full_intercept - (full_coef / scale) @ shift))
    return linear


def feature_scale(features: np.ndarray) -> float:
    """The root mean square of the feature values: one number, so that C means the same for every backbone."""
    rms = float(np.sqrt(np.mean(np.square(features, dtype=np.float64))))
    return rms if rms > 0 else 1.0


def fit_logistic_head(train_x: np.ndarray, train_y: np.ndarray, num_classes: int, seed: int
                      ) -> tuple[nn.Linear, list[dict], dict]:
    """Choose how to scale the features and the C of multinomial logistic regression by stratified k-fold
    cross-validation on the training labels, refit on all of them, and return it as one linear layer, one history
    row per candidate (mean and std of the cross-validated accuracy, mean cross-validated log-loss) and what was
    chosen (``{"C", "standardize", "folds", "cv_accuracy", "cv_log_loss", "seconds"}``).

    The candidates (scikit-learn's `GridSearchCV` over a pipeline): features divided by their root mean square
    (`feature_scale`, one number), with or without per-feature standardisation fitted inside each fold, times
    `LOGISTIC_C_GRID`. Per-feature standardisation can help sentence embeddings and hurts images with a handful of
    labels (its estimates from 10 examples blow up near-constant features), so the labels decide: among the
    candidates within one standard error of the best cross-validated accuracy, unstandardised ones first, the one
    with the lowest cross-validated log-loss (`_best_candidate`). No labels are held out: with few labels every one
    of them trains the final head. ``k`` is 5 (3 above 10,000 examples), or the smallest class's count when smaller;
    with a class of a single example there is no cross-validation: no standardisation, C 1.
    """
    with threadpool_limits(limits=SMALL_PROBLEM_BLAS_THREADS, user_api="blas"):
        return _fit_logistic_head(train_x, train_y, num_classes, seed)


def _fit_logistic_head(train_x: np.ndarray, train_y: np.ndarray, num_classes: int, seed: int):
    started = time.perf_counter()
    rms = feature_scale(train_x)  # unsupervised: no label of a fold leaks through it
    scaled = train_x / rms
    counts = np.bincount(train_y)
    folds = int(min(5 if len(train_y) <= 10_000 else 3, counts[counts > 0].min()))
    pipeline = Pipeline([("standardize", "passthrough"),
                         ("logistic", LogisticRegression(C=1.0, max_iter=2000, random_state=seed))])
    if folds < 2:
        log.warning("a class has a single training example: no cross-validation, logistic regression with C=1")
        pipeline.fit(scaled, train_y)
        history = [{"epoch": 1, "C": 1.0, "standardize": False, "train_accuracy": pipeline.score(scaled, train_y)}]
        summary = {"C": 1.0, "standardize": False, "folds": 0}
    else:
        grid = {"standardize": ["passthrough", StandardScaler()], "logistic__C": list(LOGISTIC_C_GRID)}
        search = GridSearchCV(pipeline, grid, scoring={"accuracy": "accuracy", "log_loss": "neg_log_loss"},
                              refit=_best_candidate,
                              cv=StratifiedKFold(folds, shuffle=True, random_state=seed)).fit(scaled, train_y)
        pipeline, results = search.best_estimator_, search.cv_results_
        history = [{"epoch": i + 1, "C": params["logistic__C"], "standardize": params["standardize"] != "passthrough",
                    "cv_accuracy": float(results["mean_test_accuracy"][i]),
                    "cv_accuracy_std": float(results["std_test_accuracy"][i]),
                    "cv_log_loss": -float(results["mean_test_log_loss"][i])}
                   for i, params in enumerate(results["params"])]
        best = history[search.best_index_]
        summary = {"C": best["C"], "standardize": best["standardize"], "folds": folds,
                   "cv_accuracy": best["cv_accuracy"], "cv_log_loss": best["cv_log_loss"]}
        log.info("logistic regression: C=%.3g%s by %d-fold cross-validation (accuracy %.3f, log-loss %.3f), refit on "
                 "all %d labels", best["C"], ", standardised" if best["standardize"] else "", folds,
                 best["cv_accuracy"], best["cv_log_loss"], len(train_y))
    summary["seconds"] = round(time.perf_counter() - started, 3)
    standardize = pipeline.named_steps["standardize"]
    shift = standardize.mean_ * rms if summary["standardize"] else np.zeros(train_x.shape[1])
    scale = standardize.scale_ * rms if summary["standardize"] else np.full(train_x.shape[1], rms)
    return _logistic_as_linear(shift, scale, pipeline.named_steps["logistic"], num_classes), history, summary


def _best_candidate(results: dict) -> int:
    """GridSearchCV's choice. The candidates whose mean cross-validated accuracy is within one standard error of the
    best one's cannot be told apart by accuracy (the one-standard-error rule, Hastie, Tibshirani & Friedman, ESL
    7.10); among them the simpler scaling first (no per-feature standardisation, whose 2 x dim estimates from a
    handful of labels can blow up near-constant features), then the lowest mean cross-validated log-loss, then the
    smaller C. With few labels a fold holds a handful of examples: its accuracy moves in steps of 1/handful and most
    candidates tie, while the log-loss of the same held-out predictions (a proper scoring rule) is continuous and
    still ranks them; where accuracy does separate candidates, accuracy decides."""
    folds = sum(1 for key in results if key.startswith("split") and key.endswith("_test_accuracy"))
    means, stds = np.asarray(results["mean_test_accuracy"]), np.asarray(results["std_test_accuracy"])
    best = int(np.argmax(means))
    close = np.flatnonzero(means >= means[best] - stds[best] / np.sqrt(folds) - 1e-12)
    standardized = np.array([results["params"][i]["standardize"] != "passthrough" for i in close])
    if not standardized.all():
        close = close[~standardized]
    log_loss = -np.asarray(results["mean_test_log_loss"], dtype=float)[close]
    close = close[log_loss <= log_loss.min() + 1e-12]
    return int(close[np.argmin([results["params"][i]["logistic__C"] for i in close])])


def logistic_label_use(splits: Splits, summary: dict) -> dict:
    """How a logistic head used its labels (metrics.json ``labels``): all of them trained it, and the same labels
    chose C by cross-validation (``summary`` from `fit_logistic_head`)."""
    folds = f"{summary['folds']}-fold cross-validation on the training labels" if summary["folds"] else "none"
    return {"train": len(splits.train), **splits.label_use, "selection_by": folds,
            "selection": len(splits.train) if summary["folds"] else 0}


def prepare_features_splits(config: FeaturesConfig) -> Splits:
    """The labeled splits; the logistic head chooses C by cross-validation on the training labels, so no
    validation is held out of them (the torch heads hold one out to pick their epoch)."""
    return prepare_labeled_splits(config, hold_out=config.head != "logistic")


def train_on_features(config: FitConfig, splits: Splits, context: RunContext) -> MethodResult:
    """Embed train/val once with the frozen backbone, then fit the head on the cached embeddings."""
    model = build_model(config, splits.classes, pretrained=config.pretrained or config.weights is not None)
    model.backbone.requires_grad_(False)
    model.cache_features = True  # a frozen pretrained backbone: its embeddings may come from the cache
    examples = sum(len(split) for split in (splits.train, splits.val, splits.test) if split is not None)
    engine = choose_feature_engine(config.engine, model.backbone, context.precision, context.device, world_size(),
                                   examples)  # one engine for every split of the run
    model.feature_engine = engine  # also for this run's own validation and test scores
    if config.head == "logistic":
        train_x = embed_splits(model, config, splits, context, with_val=False, engine=engine)[0]
        model.head[-1], history, summary = fit_logistic_head(train_x.numpy(), splits.train.labels,
                                                             len(splits.classes), config.seed)
        return MethodResult(model=model, history=history, metrics={
            "logistic": summary, "labels": logistic_label_use(splits, summary), "engine": engine})
    train_x, val_x = embed_splits(model, config, splits, context, engine=engine)

    history = train_head_on_embeddings(model, config, splits, context, embeddings=(train_x, val_x))
    return MethodResult(model=model.to(torch.device("cpu")), history=history, metrics={"engine": engine})


register_method(MethodSpec("features", "frozen pretrained backbone as a feature extractor + a head on its embeddings",
                           FeaturesConfig, prepare_features_splits, train_on_features))
