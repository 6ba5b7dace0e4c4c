"""SetFit's recipe (Tunstall et al., "Efficient Few-Shot Learning Without Prompts", 2022) for any backbone: the
pretrained encoder first learns from pairs of labelled examples, then a logistic head is fitted on its embeddings.

Stage 1, contrastive tuning: pairs of training examples, ``y = 1`` when both have one class and ``0`` otherwise
(`label_pairs`), and the whole backbone trained through the shared loop on the cosine-similarity loss
(`cosine_pair_loss`). Stage 2: the tuned backbone, frozen, embeds every training example once and the ``features``
method's logistic head (C by cross-validation on the training labels, refit on all of them) learns on them.

With a handful of labels per class this turns ``n`` labels into ``O(n^2)`` training signals: SetFit's case is
few-shot text classification with a sentence encoder. The pairs are SetFit 1.x's default (``sampling_strategy
"oversampling"``): every unique pair of the more numerous kind (same-class pairs, an example with itself included,
or cross-class pairs) once, and the other kind drawn again until both kinds are as many; above ``max_pairs`` pairs
in all, ``max_pairs / 2`` of each kind are drawn at random instead. The cost grows with the pairs: with MiniLM on 2
CPU cores in bf16 (docs/benchmarks.md), 544 pairs (16 labels per class, binary) trained in 10 s, 8,320 (64 per
class) in about 2 minutes.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

from transferlab.config import (
    ExampleSettings,
    FitConfig,
    HeadSettings,
    LabelSettings,
    PretrainedSettings,
    TrainDataSettings,
    TrainingSettings,
)
from transferlab.data.torch_dataset import make_dataset
from transferlab.engine.distributed import steps_per_epoch
from transferlab.engine.loop import Trainer
from transferlab.engine.optim import build_optimizer, build_scheduler
from transferlab.engine.sampling import lengths_of
from transferlab.errors import TransferlabError
from transferlab.methods.base import (
    MethodResult,
    MethodSpec,
    RunContext,
    Splits,
    register_method,
    train_settings,
)
from transferlab.methods.embedded_head import embed_splits
from transferlab.methods.features import fit_logistic_head, logistic_label_use
from transferlab.methods.finetune import build_model
from transferlab.methods.splits import prepare_labeled_splits

__all__ = ["ContrastiveConfig", "CosinePairObjective", "LabelPairs", "cosine_pair_loss", "label_pairs"]

log = logging.getLogger("transferlab")


class ContrastiveConfig(FitConfig, TrainDataSettings, LabelSettings, ExampleSettings, PretrainedSettings, HeadSettings,
                        TrainingSettings):
    """``contrastive``: the backbone tuned on pairs of labelled examples (cosine-similarity loss), then a logistic
    head on its embeddings. The training settings apply to the pair stage (``batch_size``: pairs per step)."""

    head: Literal["logistic"] = Field("logistic", description="the logistic head (scikit-learn, C by "
                                      "cross-validation on the training labels) on the tuned backbone's embeddings")
    lr: float = Field(2e-5, gt=0, description="learning rate of the backbone in the pair stage (the logistic head "
                      "is fitted by scikit-learn, not by gradient steps)")
    max_pairs: int = Field(10_000, ge=2, description="the most pairs of training examples the backbone is tuned on "
                           "(SetFit's pairs: every unique pair of the larger kind, same class or not, once; above "
                           "this many, max_pairs / 2 of each kind drawn at random)")

    def ignored_settings(self):
        why = ("the logistic head is fitted by scikit-learn on every training label (none held out, no validation "
               "epochs); the training settings apply to the pair stage")
        return dict.fromkeys(("head_hidden", "dropout", "val_fraction", "patience"), why)


CONTRASTIVE_RECIPE = {"epochs": 1, "lr": 2e-5, "batch_size": 16, "warmup": 0.1}
"""SetFit 1.x's defaults where transferlab has the setting: one epoch of 16 pairs per step, lr 2e-5 after a 10 %
warm-up, then down to 0 (SetFit: linearly; here: the default cosine schedule)."""


def cosine_pair_loss(first: torch.Tensor, second: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' ``CosineSimilarityLoss`` (SetFit's): ``mean_i (cos(u_i, v_i) - y_i)^2``.

    Args:
        first, second: ``(B, D)`` embeddings ``u``, ``v`` of the two examples of each pair.
        same: ``(B,)`` float ``y``: 1 when the pair shares a class, else 0.
    Returns:
        a scalar tensor.
    """
    return F.mse_loss(F.cosine_similarity(first.float(), second.float(), dim=1), same.float())


class CosinePairObjective(nn.Module):
    """``forward(backbone, batch)``: ``batch = (inputs, same)`` with the ``2B`` examples of ``B`` pairs stacked
    (first examples, then their partners; `LabelPairs.collate_fn`): one forward pass embeds both halves."""

    def forward(self, backbone: nn.Module, batch) -> dict:
        inputs, same = batch
        first, second = backbone(inputs).chunk(2)
        loss = cosine_pair_loss(first, second, same)
        return {"loss": loss, "parts": {"cosine_mse": loss}, "examples": len(same)}


def _count_pairs(labels: np.ndarray) -> tuple[int, int]:
    """Unique same-class pairs (an example with itself included) and cross-class pairs."""
    counts = np.bincount(labels).astype(np.int64)
    same = int((counts * (counts + 1) // 2).sum())
    return same, int((len(labels) ** 2 - (counts**2).sum()) // 2)


def label_pairs(labels: np.ndarray, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """SetFit's pairs of example positions ``(P, 2)`` and their targets ``(P,)`` (1.0 same class, 0.0 not), in a
    seeded random order; see the module docstring for which pairs.

    Raises:
        TransferlabError: when the labels hold a single class (no pair of different classes).
    """
    labels = np.asarray(labels)
    same_count, cross_count = _count_pairs(labels)
    if cross_count == 0:
        raise TransferlabError("contrastive needs training examples of at least two classes; all "
                               f"{len(labels)} have one class")
    rng = np.random.default_rng(seed)
    each = max(same_count, cross_count)
    if 2 * each > max_pairs:
        each = max_pairs // 2
        same, cross = _draw_pairs(labels, each, True, rng), _draw_pairs(labels, each, False, rng)
    else:
        first, second = np.triu_indices(len(labels))
        kind = labels[first] == labels[second]
        same, cross = (np.stack([first[k], second[k]], 1) for k in (kind, ~kind))
        same, cross = (_repeat_to(pairs, each, rng) for pairs in (same, cross))
    pairs = np.concatenate([same, cross])
    targets = np.concatenate([np.ones(len(same)), np.zeros(len(cross))]).astype(np.float32)
    order = rng.permutation(len(pairs))
    return pairs[order], targets[order]


def _repeat_to(pairs: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``pairs`` once each, then drawn again at random until there are ``count``."""
    extra = rng.integers(0, len(pairs), count - len(pairs))
    return np.concatenate([pairs, pairs[extra]])


def _draw_pairs(labels: np.ndarray, count: int, same: bool, rng: np.random.Generator) -> np.ndarray:
    """``count`` random pairs of one kind: for each a uniform first example, then a uniform partner of its class
    (``same``) or of another class."""
    first = rng.integers(0, len(labels), count)
    partners = {c: np.flatnonzero((labels == c) == same) for c in np.unique(labels)}
    second = np.array([rng.choice(partners[labels[i]]) for i in first])
    return np.stack([first, second], 1)


class LabelPairs(Dataset):
    """The pairs of `label_pairs` over a training dataset: item ``k`` is ``((inputs_a, inputs_b), same)``;
    ``collate_fn`` stacks a batch's first examples, then their partners, into one batch of inputs. Its ``lengths``
    (text: the longer text of each pair) let the loader draw pairs of similar lengths together."""

    def __init__(self, examples: Dataset, labels: np.ndarray, *, max_pairs: int, seed: int):
        self.examples = examples
        self.pairs, self.same = label_pairs(labels, max_pairs, seed)
        lengths = lengths_of(examples)
        if lengths is not None:
            self.lengths = [max(lengths[a], lengths[b]) for a, b in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        a, b = self.pairs[index]
        return (self.examples[a][0], self.examples[b][0]), torch.tensor(self.same[index])

    def collate_fn(self, items: list):
        inputs = [first for (first, _), _ in items] + [second for (_, second), _ in items]
        collate_inputs = getattr(self.examples, "collate_inputs", torch.stack)  # text, audio: padded; images: stacked
        return collate_inputs(inputs), torch.stack([same for _, same in items])


def prepare_contrastive_splits(config: ContrastiveConfig) -> Splits:
    """The labeled splits, none held out: the logistic head cross-validates on the training labels."""
    return prepare_labeled_splits(config, hold_out=False)


def train_contrastive(config: ContrastiveConfig, splits: Splits, context: RunContext) -> MethodResult:
    """Tune the backbone on label pairs, then fit the logistic head on its embeddings of the training examples."""
    model = build_model(config, splits.classes, pretrained=config.pretrained or config.weights is not None)
    backbone = model.backbone
    pairs = LabelPairs(make_dataset(splits.train, model.preprocess, train=True), splits.train.labels,
                       max_pairs=config.max_pairs, seed=config.seed)
    log.info("contrastive: %d pairs of %d training examples (%d of one class), %d epoch(s) of %d pairs per step",
             len(pairs), len(splits.train), int(pairs.same.sum()), config.epochs, config.batch_size)
    optimizer = build_optimizer(config.optimizer, [{"params": list(backbone.parameters()), "lr": config.lr}],
                                config.weight_decay)
    scheduler = build_scheduler(config, optimizer, config.epochs * steps_per_epoch(len(pairs), config.batch_size))
    trainer = Trainer(backbone, CosinePairObjective(), optimizer, scheduler, train_settings(config, context))
    history = trainer.fit(pairs, None, resume=config.resume)

    backbone.requires_grad_(False)
    # tuned weights: embeddings no other run will want, so none go to the cache
    embedded = embed_splits(model, config, splits, context, with_val=False, use_cache=False)[0]
    model.head[-1], _, summary = fit_logistic_head(embedded.numpy(), splits.train.labels, len(splits.classes),
                                                   config.seed)
    metrics = {"pairs": {"count": len(pairs), "same_class": int(pairs.same.sum())}, "logistic": summary,
               "labels": logistic_label_use(splits, summary)}
    return MethodResult(model=model.cpu(), history=history, metrics=metrics)


register_method(MethodSpec("contrastive", "SetFit's recipe: the backbone tuned on pairs of labelled examples "
                           "(cosine-similarity loss), then a logistic head on its embeddings", ContrastiveConfig,
                           prepare_contrastive_splits, train_contrastive, CONTRASTIVE_RECIPE))
