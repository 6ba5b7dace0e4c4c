"""Joint training on labeled source and target data (SEED.md section 4): ``min_theta L_S(theta) + lambda L_T(theta)``.

One shared backbone sees a batch from each domain every step (`DomainPairLoader`). The label spaces may be shared
(one head; source labels are matched to target classes by name) or differ (one head per domain). The saved model
is the backbone with the target head: it predicts the target task.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.config import FitConfig
from transferlab.data.image_data import align_classes
from transferlab.data.torch_dataset import make_dataset
from transferlab.engine.batches import batch_length, concat_inputs
from transferlab.engine.domains import DomainPairLoader
from transferlab.engine.loop import Trainer
from transferlab.engine.optim import build_optimizer, build_scheduler
from transferlab.errors import TransferlabError
from transferlab.methods.base import MethodResult, RunContext, Splits, register_method, train_settings
from transferlab.methods.finetune import build_model, freeze_and_rates
from transferlab.model import build_head

__all__ = ["joint_loss", "JointObjective", "LambdaWarmup", "train_joint"]

log = logging.getLogger("transferlab")


def joint_loss(source_loss: torch.Tensor, target_loss: torch.Tensor, lam: float) -> torch.Tensor:
    """``L_S + lambda * L_T``: the seed's joint objective. Scalars in, scalar out."""
    return source_loss + lam * target_loss


class JointObjective(nn.Module):
    """Cross-entropy on both domains from one backbone pass, combined by `joint_loss`.

    ``forward(model, batch)`` takes ``batch = [(x_S (B_S, ...), y_S (B_S,)), (x_T (B_T, ...), y_T (B_T,))]``;
    the source logits come from ``source_head`` when the domains have separate heads, else from ``model.head``.
    Returns ``{"loss", "parts": {"source_ce", "target_ce", "lambda"}}``.
    """

    def __init__(self, lam: float, source_head: nn.Module | None = None):
        super().__init__()
        self.lam = lam
        self.source_head = source_head

    def forward(self, model, batch) -> dict:
        (source_x, source_y), (target_x, target_y) = batch
        features = model.backbone(concat_inputs([source_x, target_x]))
        source_features, target_features = features.split([batch_length(source_x), batch_length(target_x)])
        source_head = self.source_head if self.source_head is not None else model.head
        source_ce = F.cross_entropy(source_head(source_features).float(), source_y)
        target_ce = F.cross_entropy(model.head(target_features).float(), target_y)
        return {
            "loss": joint_loss(source_ce, target_ce, self.lam),
            "parts": {"source_ce": source_ce, "target_ce": target_ce, "lambda": torch.tensor(self.lam)},
        }


@dataclass
class LambdaWarmup:
    """Epoch hook: ``lambda_e = lambda * min(1, (e + 1) / warmup_epochs)`` (source-heavy first, then target-heavy)."""

    objective: JointObjective
    lam: float
    warmup_epochs: int

    def __call__(self, model: nn.Module, epoch: int) -> None:
        ramp = 1.0 if self.warmup_epochs == 0 else min(1.0, (epoch + 1) / self.warmup_epochs)
        self.objective.lam = self.lam * ramp


@register_method("joint")
def train_joint(config: FitConfig, splits: Splits, context: RunContext) -> MethodResult:
    """Shared backbone, target head (+ source head when label spaces differ), trained on both domains at once."""
    source = splits.source
    if source is None:
        raise TransferlabError("method 'joint' needs labeled source data (--source SPEC)")
    same_classes = set(source.classes) == set(splits.classes)
    separate = config.separate_heads if config.separate_heads is not None else not same_classes
    if not separate and not same_classes:
        raise TransferlabError(
            f"one shared head needs the same classes in both domains; source {source.name} has "
            f"{', '.join(sorted(set(source.classes) - set(splits.classes))[:5])} that the target lacks "
            "(drop --shared-head to give each domain its own head)"
        )
    log.info("joint training: %s, lambda %s", "one head per domain" if separate else "one shared head", config.lambda_)
    if not separate:
        source = align_classes(source, splits.classes)

    pretrained = config.pretrained or config.weights is not None
    model = build_model(config, splits.classes, pretrained=pretrained)
    if separate:  # trained with the model (and checkpointed with it); dropped before saving
        model.source_head = build_head(config.head, model.backbone.num_features, len(source.classes),
                                       config.head_hidden, config.dropout)
    param_groups, unfreezing = freeze_and_rates(model, config, pretrained)
    if separate:  # the source head learns at the head's rate
        param_groups.append({"params": list(model.source_head.parameters()), "lr": config.lr, "name": "source_head"})
    optimizer = build_optimizer(config.optimizer, param_groups, config.weight_decay)
    preprocess = model.preprocess
    pairs = DomainPairLoader(
        make_dataset(source, preprocess, train=True, augment=config.augment),
        make_dataset(splits.train, preprocess, train=True, augment=config.augment),
        batch_size=config.batch_size,
        source_share=config.source_share,
        steps_per_epoch=config.steps_per_epoch,
    )
    scheduler = build_scheduler(config.scheduler, optimizer, config.epochs * len(pairs))
    objective = JointObjective(config.lambda_, model.source_head if separate else None)
    hooks = [unfreezing, LambdaWarmup(objective, config.lambda_, config.lambda_warmup_epochs)]
    val_data = make_dataset(splits.val, preprocess) if splits.val is not None else None
    trainer = Trainer(model, objective, optimizer, scheduler, train_settings(config, context), hooks)
    history = trainer.fit(pairs, val_data, resume=config.resume)
    if separate:
        del model.source_head
    return MethodResult(model=model, history=history)
