"""Train only a model's head on embeddings of its frozen backbone: each image is embedded once (and cached), not
every epoch. Used by ``features`` with a torch head and by fine-tuning runs whose whole backbone stays frozen."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from transferlab.config import FitConfig
from transferlab.embeddings import extract_features
from transferlab.engine.distributed import steps_per_epoch
from transferlab.engine.loop import Trainer
from transferlab.engine.optim import build_optimizer, build_scheduler
from transferlab.methods.base import RunContext, Splits, train_settings
from transferlab.methods.losses import ClassificationObjective
from transferlab.models import TransferModel

__all__ = ["embed_splits", "train_head_on_embeddings"]


def embed_splits(model: TransferModel, config: FitConfig, splits: Splits, context: RunContext, *,
                 with_val: bool = True, engine: str = "torch", use_cache: bool = True):
    """``(train, val)`` embeddings of ``model.backbone`` (``val`` is ``None`` without validation data or
    ``with_val``), cached unless ``use_cache`` is off; ``engine``: see `transferlab.embeddings.extract_features`."""
    options = dict(precision=context.precision, device=context.device, num_workers=context.num_workers,
                   batch_size=config.batch_size, progress=context.progress, engine=engine, use_cache=use_cache)
    train = extract_features(model.backbone, splits.train, **options)
    val = extract_features(model.backbone, splits.val, **options) if splits.val is not None and with_val else None
    return train, val


def train_head_on_embeddings(
    model: TransferModel,
    config: FitConfig,
    splits: Splits,
    context: RunContext,
    embeddings: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> list[dict]:
    """Train ``model.head`` through the shared loop on ``(embedding, label)`` pairs; return the history.

    ``embeddings``: ``(train, val)`` features already extracted with ``model.backbone``; extracted here otherwise.
    """
    train_x, val_x = embeddings if embeddings is not None else embed_splits(model, config, splits, context)
    head = model.head
    optimizer = build_optimizer(config.optimizer, [{"params": list(head.parameters()), "lr": config.lr}],
                                config.weight_decay)
    steps = config.epochs * steps_per_epoch(len(train_x), config.batch_size)
    trainer = Trainer(head, ClassificationObjective(), optimizer, build_scheduler(config, optimizer, steps),
                      train_settings(config, context))
    val_data = TensorDataset(val_x, torch.from_numpy(splits.val.labels)) if val_x is not None else None
    history = trainer.fit(TensorDataset(train_x, torch.from_numpy(splits.train.labels)), val_data,
                          resume=config.resume)
    model.cpu()
    return history
