"""``--method detection``: inductive transfer from an image classifier to an object detector (SEED.md's own example).

``transferlab fit --method detection --train raccoon/ --backbone efficientnet_lite0 [--detector fasterrcnn|fcos|
retinanet|ssdlite] [--freeze backbone] [--no-pretrained] [--weights CLASSIFICATION_RUN]``

The pieces, as for every method: the objective `detection_objective` (the torchvision detector's own losses, summed;
Faster R-CNN: RPN objectness and box regression + box classification and regression; FCOS: focal classification,
GIoU regression and centre-ness; RetinaNet: focal classification and L1 regression; SSDlite: hard-negative-mined
cross-entropy and smooth L1), the model `transferlab.models.DetectorModel` (any registry image backbone with a
feature pyramid, a neck and a torchvision detector), and one `MethodSpec`. The transfer knobs are the fine-tuning
recipe's (`transferlab.methods.finetune.freeze_and_rates`): ``--freeze`` by group, module name (``backbone``: the
head alone trains) or count, ``head_epochs`` of head-only training, discriminative learning rates; the backbone's
BatchNorm is frozen by default when it starts pretrained (detection batches of a few images give poor batch
statistics; torchvision's detectors freeze it the same way), trainable from scratch. ``--weights`` takes a weights
file or a run directory, e.g. a classification fine-tune of the same backbone: its fine-tuned backbone starts the
detector. Training goes through the shared loop (checkpoints, ``--resume``, early stopping on validation mAP,
bf16); the best epoch by validation mAP (0.5:0.95) is kept.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from transferlab.backbones import create_backbone
from transferlab.config import (
    AugmentSettings,
    FinetuneSettings,
    FitConfig,
    PretrainedSettings,
    TrainDataSettings,
    TrainingSettings,
)
from transferlab.data.detection import (
    DetectionData,
    DetectionDataset,
    align_detection_classes,
    collate_detection,
    detection_transform,
    is_detection_spec,
    load_detection_data,
    load_detection_splits,
)
from transferlab.data.detection.layout import FORMAT_LAYOUTS
from transferlab.data.formats.request import choose_split
from transferlab.data.splits import hold_out_indices
from transferlab.engine.distributed import steps_per_epoch
from transferlab.engine.loop import Trainer, TrainSettings
from transferlab.engine.optim import build_optimizer, build_scheduler
from transferlab.errors import TransferlabError
from transferlab.methods.base import MethodResult, MethodSpec, RunContext, Splits, register_method, train_settings
from transferlab.methods.finetune import freeze_and_rates
from transferlab.methods.freeze import batchnorm_parameter_names
from transferlab.models.detector import DetectorModel
from transferlab.models.detector_heads import DETECTORS, DetectorSettings

__all__ = ["DETECTION_RECIPE", "DetectionConfig", "DetectionValidation", "build_detection_model",
           "detection_objective", "prepare_detection_splits", "refuse_non_detection_data", "train_detection"]

log = logging.getLogger("transferlab")

# small batches: images of a few hundred pixels, thousands of anchors each
DETECTION_RECIPE = {"batch_size": 4}


class DetectionConfig(FitConfig, TrainDataSettings, TrainingSettings, FinetuneSettings, PretrainedSettings,
                      AugmentSettings):
    """``detection``: detection data (VOC, COCO, YOLO), an image CNN backbone, a torchvision detector on it."""

    train: str = Field(description="detection data spec: a PASCAL VOC, COCO JSON or YOLO folder (or voc:, coco:, "
                       "yolo: PATH to name the format; @split picks a split)")
    augment: bool = Field(True, description="detection: horizontal flips and SSD's random IoU crops, moving the boxes "
                          "with the image")

    detector: Literal[tuple(DETECTORS)] = Field(
        "fasterrcnn", description="fasterrcnn (Faster R-CNN + FPN), fcos, retinanet (both on an FPN with P6-P7) or "
        "ssdlite (no FPN; a fixed min_size x min_size input)")
    min_size: int = Field(384, ge=32, description="detection: shorter image side after resizing (ssdlite: the square "
                          "input side); torchvision's detectors use 800, 384 keeps CPU training fast")
    max_size: int = Field(640, ge=32, description="detection: longer image side at most, after resizing")
    fpn_channels: int = Field(128, ge=32, multiple_of=32,
                              description="detection: channels of the FPN maps and heads (torchvision: 256)")
    score_threshold: float = Field(0.5, ge=0, le=1, description="detection: boxes scoring less are left out of "
                                   "predictions (evaluation ranks them all); predict --score-threshold overrides it")
    frozen_batchnorm: bool | None = Field(
        None, description="detection: keep the backbone's BatchNorm layers fixed (statistics and affine); default: "
        "when the backbone starts pretrained")


def refuse_non_detection_data(spec: str, role: str) -> None:
    """Raise one line when ``spec`` is not detection data (e.g. class folders given to ``--method detection``)."""
    if not is_detection_spec(spec):
        raise TransferlabError(f"--method detection trains on boxes, and {role} data {spec!r} holds no detection "
                               f"annotations (expected {'; '.join(FORMAT_LAYOUTS.values())}); class folders and "
                               "labeled tables train a classifier (--method finetune)")


# --- the objective ----------------------------------------------------------------------------------------------


def detection_objective(model: DetectorModel, batch) -> dict:
    """The shared loop's objective: the detector's losses of a batch ``(images, targets)``, summed.

    ``L = sum_k L_k`` over the detector's own terms (see the module docstring), each already averaged as
    torchvision's references train them; the terms are the ``parts`` logged per epoch.

    Args:
        model: the detector, in train mode.
        batch: ``(images, targets)``: lists of ``(3, H, W)`` float images and ``{"boxes" (n, 4), "labels" (n,)}``.
    """
    images, targets = batch
    losses = model(images, targets)
    return {"loss": sum(losses.values()), "parts": losses, "examples": len(images)}


class DetectionValidation:
    """Validation for the shared loop: ``evaluate(model, settings)`` -> ``val_map``, ``val_map_50`` and
    ``val_score = val_map`` (mAP over IoU 0.5:0.95; higher is better: the epoch kept and early stopping)."""

    def __init__(self, data: DetectionData):
        self.data = data

    def evaluate(self, model: DetectorModel, settings: TrainSettings) -> dict[str, float]:
        metrics = model.evaluate(self.data, precision=settings.precision, num_workers=settings.num_workers)
        return {"val_map": metrics["map"], "val_map_50": metrics["map_50"], "val_score": metrics["map"]}


class TrainingImages(DetectionDataset):
    """`DetectionDataset` batched by `collate_detection` (lists: images differ in size)."""

    collate_fn = staticmethod(collate_detection)


# --- data -------------------------------------------------------------------------------------------------------


def prepare_detection_splits(config: DetectionConfig) -> Splits:
    """Train, validation and test `DetectionData` in one class order.

    Validation data is ``config.val``, else the data's own validation split, else a seeded random ``val_fraction``
    of the training images (`transferlab.data.splits.hold_out_indices`). Validation and test classes are put in the
    training order; a class with boxes there but none in training is an error naming a file.

    Raises:
        TransferlabError: data that is not detection data (one line), or bad data (the data layer's errors).
    """
    for role, spec in (("training", config.train), ("validation", config.val), ("test", config.test)):
        if spec is not None:
            refuse_non_detection_data(spec, role)
    options = dict(skip_bad_files=config.skip_bad_files)
    available = load_detection_splits(config.train, **options)
    train = available[choose_split(config.train, list(available), ("train", "all"))]
    if config.val is not None:
        val = align_detection_classes(train, load_detection_data(config.val, split_preference=("val", "test", "all"),
                                                                 **options))
    elif "val" in available:
        val = available["val"]
    else:
        train_index, val_index = hold_out_indices(len(train), config.val_fraction, config.seed, what="images")
        train, val = train.subset(train_index), train.subset(val_index)
        log.info("held out %d of %d training images for validation (seed %d)", len(val_index),
                 len(train_index) + len(val_index), config.seed)
    test = None
    if config.test is not None:
        test = align_detection_classes(train, load_detection_data(config.test,
                                                                  split_preference=("test", "val", "all"), **options))
    return Splits(train=train, val=val, test=test)


# --- the method -------------------------------------------------------------------------------------------------


def build_detection_model(config: DetectionConfig, classes: list[str]) -> DetectorModel:
    """``config.backbone`` (pretrained, random with ``pretrained: false``, or ``weights``: a file or a run
    directory's backbone) with a new neck and detector over ``classes``."""
    if config.image_size is not None:
        log.warning("image_size does not apply to detection (detectors resize every image themselves): set "
                    "min_size and max_size instead")
    backbone = create_backbone(config.backbone, weights=config.weights, pretrained=config.pretrained)
    settings = DetectorSettings(detector=config.detector, min_size=config.min_size, max_size=config.max_size,
                                fpn_channels=config.fpn_channels, score_threshold=config.score_threshold)
    return DetectorModel(backbone, classes, settings)


def train_detection(config: DetectionConfig, splits: Splits, context: RunContext) -> MethodResult:
    """Train the detector with the shared loop; the best epoch by validation mAP is kept."""
    model = build_detection_model(config, splits.classes)
    starts_pretrained = model.backbone.spec.get("weights_source", "random") != "random"
    frozen_batchnorm = starts_pretrained if config.frozen_batchnorm is None else config.frozen_batchnorm
    always_frozen = batchnorm_parameter_names(model.backbone, "backbone.") if frozen_batchnorm else set()
    param_groups, unfreezing = freeze_and_rates(model, config, transfer=True, always_frozen=always_frozen)
    optimizer = build_optimizer(config.optimizer, param_groups, config.weight_decay)
    steps = config.epochs * steps_per_epoch(len(splits.train), config.batch_size)
    scheduler = build_scheduler(config, optimizer, steps)
    transform = detection_transform(train=True) if config.augment else None
    train_images = TrainingImages(splits.train, transform, max_size=config.max_size, drop_difficult=True)
    validation = DetectionValidation(splits.val) if splits.val is not None else None
    trainer = Trainer(model, detection_objective, optimizer, scheduler, train_settings(config, context), [unfreezing])
    history = trainer.fit(train_images, validation, resume=config.resume)
    return MethodResult(model=model, history=history)


register_method(MethodSpec("detection", "object detection: a torchvision detector (Faster R-CNN, FCOS, RetinaNet, "
                                        "SSDlite) on a pretrained image backbone's feature pyramid",
                           DetectionConfig, prepare_detection_splits, train_detection, DETECTION_RECIPE))
