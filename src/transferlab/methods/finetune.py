"""Fine-tuning (SEED.md 3.1) and its two relatives, composed from the same pieces:

- ``finetune``: pretrained backbone + new head; freeze what the user names; train the head alone for
  ``head_epochs``, then unfreeze with discriminative learning rates; optional L2-SP toward the pretrained weights.
- ``scratch``: the same architecture randomly initialised and trained end to end (the baseline).
- ``seed-recipe``: SEED.md section 5 (frozen VGG16 body, Flatten -> Dense(1024, ReLU) -> Dense(classes), Adam):
  finetune with the recipe `SEED_RECIPE`.
"""

from __future__ import annotations

import logging

from transferlab.backbones import create_backbone
from transferlab.config import (
    AugmentSettings,
    ExampleSettings,
    FinetuneSettings,
    FitConfig,
    HeadSettings,
    L2SPSettings,
    LabelSettings,
    PretrainedSettings,
    TrainDataSettings,
    TrainingSettings,
)
from transferlab.data.torch_dataset import make_dataset
from transferlab.engine.distributed import steps_per_epoch
from transferlab.engine.loop import Trainer
from transferlab.engine.optim import build_optimizer, build_scheduler
from transferlab.methods.base import (
    MethodResult,
    MethodSpec,
    RunContext,
    Splits,
    register_method,
    train_settings,
)
from transferlab.methods.embedded_head import train_head_on_embeddings
from transferlab.methods.freeze import (
    GradualUnfreezing,
    discriminative_param_groups,
    frozen_parameter_names,
    set_requires_grad,
)
from transferlab.methods.losses import L2SP, ClassificationObjective
from transferlab.methods.splits import prepare_labeled_splits
from transferlab.models import TransferModel, build_head

log = logging.getLogger("transferlab")

__all__ = ["FinetuneConfig", "ScratchConfig", "SEED_RECIPE", "build_backbone", "build_model", "freeze_and_rates",
           "train_end_to_end"]


class ScratchConfig(FitConfig, TrainDataSettings, LabelSettings, ExampleSettings, HeadSettings, TrainingSettings,
                    AugmentSettings):
    """``scratch``: the same architecture randomly initialised, everything trained at one learning rate."""


class FinetuneConfig(ScratchConfig, PretrainedSettings, FinetuneSettings, L2SPSettings):
    """``finetune`` (and ``seed-recipe``): pretrained backbone, freezing, head-only epochs, discriminative rates."""


# SEED.md section 5: VGG16 body (frozen) -> Flatten -> Dense(1024, relu) -> Dense(num_classes, softmax), Adam.
SEED_RECIPE = {"backbone": "torchvision:vgg16", "pool": "flatten", "head": "mlp", "head_hidden": [1024],
               "freeze": "all", "head_epochs": 0, "optimizer": "adam", "weight_decay": 0.0, "scheduler": "constant"}


def build_backbone(config: FitConfig, *, pretrained: bool):
    """The configured backbone: pretrained (packaged, hub or ``--weights``) or randomly initialised."""
    return create_backbone(
        config.backbone,
        weights=config.weights if pretrained else None,
        pretrained=pretrained,
        pool=config.pool,
        image_size=config.image_size,
        max_length=config.max_length,
        max_seconds=config.max_seconds,
    )


def build_model(config: FitConfig, classes: list[str], *, pretrained: bool) -> TransferModel:
    backbone = build_backbone(config, pretrained=pretrained)
    head = build_head(config.head, backbone.num_features, len(classes), config.head_hidden, config.dropout)
    return TransferModel(backbone, head, classes, head_settings(config))


def head_settings(config: FitConfig) -> dict:
    """How the head was built, saved with the model: kind, hidden sizes, dropout."""
    return {"kind": config.head, "hidden": list(config.head_hidden), "dropout": config.dropout}


def freeze_and_rates(model: TransferModel, config: FitConfig, transfer: bool, always_frozen: set[str] = frozenset()
                     ) -> tuple[list[dict], GradualUnfreezing]:
    """Freeze what ``config.freeze`` names (and the parameters ``always_frozen`` names, e.g. a detector's frozen
    BatchNorm) and return the optimizer's parameter groups (discriminative learning rates) with the
    gradual-unfreezing hook. Without ``transfer`` (``scratch``) only ``always_frozen`` is frozen and every group
    gets ``config.lr``; a backbone without pretrained weights (e.g. ``lenet`` without ``--weights``) keeps the
    requested freezing but gets no head-only epochs and one learning rate, as there is nothing to protect."""
    random_start = model.backbone.spec.get("weights_source", "random") == "random"
    if transfer and random_start:
        log.info("the backbone starts from random weights: no head-only epochs, one learning rate for all groups")
    groups = model.parameter_groups()
    frozen = (frozen_parameter_names(config.freeze, groups) if transfer else set()) | set(always_frozen)
    set_requires_grad(model, frozen, False)
    backbone_trainable = {name for _, names in groups[:-1] for name in names} - frozen
    protect = transfer and not random_start
    unfreezing = GradualUnfreezing(backbone_trainable, config.head_epochs if protect else 0)
    ratio = config.layer_lr_ratio if protect else 1.0
    return discriminative_param_groups(model, groups, config.lr, ratio, frozen), unfreezing


def train_end_to_end(config: FitConfig, splits: Splits, context: RunContext, *, transfer: bool = True
                     ) -> MethodResult:
    """Train backbone and head through the shared loop; what is frozen and when is the only difference. Without
    ``transfer`` (scratch): random init, everything trains at one learning rate."""
    model = build_model(config, splits.classes, pretrained=transfer and (config.pretrained or config.weights is not None))
    param_groups, unfreezing = freeze_and_rates(model, config, transfer)
    if not any(p.requires_grad for p in model.backbone.parameters()) and not (config.augment or config.l2sp_beta):
        # the backbone never trains (e.g. the seed recipe): embed each image once instead of every epoch
        log.info("the whole backbone is frozen: training the head on cached embeddings")
        return MethodResult(model=model, history=train_head_on_embeddings(model, config, splits, context))
    optimizer = build_optimizer(config.optimizer, param_groups, config.weight_decay)
    steps = config.epochs * steps_per_epoch(len(splits.train), config.batch_size)
    scheduler = build_scheduler(config, optimizer, steps)

    regularizers = {}
    if transfer and (config.l2sp_alpha or config.l2sp_beta):
        regularizers["l2sp"] = L2SP(model, config.l2sp_alpha, config.l2sp_beta)
    objective = ClassificationObjective(regularizers)

    preprocess = model.preprocess
    train_data = make_dataset(splits.train, preprocess, train=True, augment=config.augment)
    val_data = make_dataset(splits.val, preprocess) if splits.val is not None else None
    trainer = Trainer(model, objective, optimizer, scheduler, train_settings(config, context), [unfreezing])
    history = trainer.fit(train_data, val_data, resume=config.resume)
    return MethodResult(model=model, history=history)


def train_scratch(config: ScratchConfig, splits: Splits, context: RunContext) -> MethodResult:
    return train_end_to_end(config, splits, context, transfer=False)


register_method(MethodSpec("finetune", "pretrained backbone + new head, freezing and discriminative learning rates",
                           FinetuneConfig, prepare_labeled_splits, train_end_to_end))
register_method(MethodSpec("scratch", "the same architecture from random weights: the baseline", ScratchConfig,
                           prepare_labeled_splits, train_scratch))
register_method(MethodSpec("seed-recipe", "SEED.md's recipe: frozen VGG16, Flatten -> Dense(1024) -> Dense, Adam",
                           FinetuneConfig, prepare_labeled_splits, train_end_to_end, SEED_RECIPE))
