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
from pydantic import BaseModel, Field, model_validator
from torch import nn

from transferlab.data.image_data import align_classes
from transferlab.data.torch_dataset import make_dataset
from transferlab.engine.batches import batch_length, concat_inputs
from transferlab.engine.domains import DomainPairLoader
from transferlab.engine.loop import Trainer
from transferlab.engine.optim import build_optimizer, build_scheduler
from transferlab.errors import TransferlabError
from transferlab.methods.base import (
    MethodResult,
    MethodSpec,
    RunContext,
    Splits,
    register_method,
    train_settings,
)
from transferlab.methods.finetune import FinetuneConfig, build_model, freeze_and_rates
from transferlab.methods.splits import (
    load_labeled,
    load_training_data,
    same_examples,
    validation_and_test,
)
from transferlab.models import build_head

__all__ = ["JointConfig", "JointObjective", "LambdaWarmup", "SourceSettings", "joint_loss", "prepare_joint_splits",
           "train_joint"]

log = logging.getLogger("transferlab")


class SourceSettings(BaseModel):
    """Labeled source-domain data and how many steps an epoch of two domains takes."""

    source: str = Field(description="labeled source-domain data spec")
    steps_per_epoch: int | None = Field(None, ge=1, description="steps per epoch; default: one pass over the larger domain")


class JointConfig(FinetuneConfig, SourceSettings):
    """``joint``: ``L_S + lambda L_T`` on labeled source and target data."""

    lambda_: float = Field(1.0, alias="lambda", ge=0, description="weight of the target loss: L_S + lambda * L_T")
    lambda_warmup_epochs: int = Field(
        0, ge=0, description="ramp lambda linearly from lambda/N to lambda over the first N epochs (source-heavy first)"
    )
    source_share: float = Field(0.5, gt=0, lt=1, description="share of each joint batch drawn from the source")
    separate_heads: bool | None = Field(
        None, description="one head per domain; default: only when the class names of the two domains differ",
        json_schema_extra={"flag": "--separate-heads/--shared-head"},
    )

    @model_validator(mode="after")
    def _both_domains_fit_in_a_batch(self):
        if self.batch_size < 2:
            raise ValueError(f"method 'joint' draws both domains in every batch: batch_size must be at least 2, got "
                             f"{self.batch_size}")
        return self


def prepare_joint_splits(config: JointConfig) -> Splits:
    """The target task's train/val/test (as for ``finetune``) and the labeled source data, which must differ."""
    train, own_val = load_training_data(config)
    source = load_labeled(config.source, config, "source", "source")
    if same_examples(source, train):
        raise TransferlabError(
            f"source {config.source} and target {config.train} hold the same examples; the source must be other data"
        )
    train, val, test, label_use = validation_and_test(train, config, own_val)
    return Splits(train=train, val=val, test=test, source=source, label_use=label_use)


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


def train_joint(config: JointConfig, splits: Splits, context: RunContext) -> MethodResult:
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
    scheduler = build_scheduler(config, optimizer, config.epochs * len(pairs))
    objective = JointObjective(config.lambda_, model.source_head if separate else None)
    hooks = [unfreezing, LambdaWarmup(objective, config.lambda_, config.lambda_warmup_epochs)]
    val_data = make_dataset(splits.val, preprocess) if splits.val is not None else None
    trainer = Trainer(model, objective, optimizer, scheduler, train_settings(config, context), hooks)
    history = trainer.fit(pairs, val_data, resume=config.resume)
    if separate:
        del model.source_head
    return MethodResult(model=model, history=history)


register_method(MethodSpec("joint", "L_S + lambda L_T: one backbone trained on labeled source and target data at once",
                           JointConfig, prepare_joint_splits, train_joint))
