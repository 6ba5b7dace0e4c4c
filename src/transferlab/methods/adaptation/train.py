"""Unsupervised domain adaptation (SEED.md: transductive transfer): labeled source data, unlabeled target data.

Every method is the source cross-entropy plus ``trade_off`` times one adaptation loss (`modules`), trained
through the shared loop on batches that hold both domains; the checkpoint is chosen by a label-free scorer
(`selection`). Target labels, when the target data has them, are never seen by training or selection (unless the
scorer is ``oracle``); they only measure the selection gap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from transferlab.data.image_data import ImageData
from transferlab.data.torch_dataset import ImageDataset, build_transform, make_dataset
from transferlab.engine.batches import batch_length, concat_inputs
from transferlab.engine.domains import DomainPairLoader
from transferlab.engine.loop import Trainer
from transferlab.engine.optim import build_optimizer, build_scheduler
from transferlab.errors import TransferlabError
from transferlab.methods.adaptation.modules import AdaptationInputs
from transferlab.methods.adaptation.selection import (
    SCORERS,
    AdaptationValidation,
    collapsed,
    pick_epoch,
)
from transferlab.methods.base import MethodResult, RunContext, Splits, train_settings
from transferlab.methods.finetune import build_model, freeze_and_rates
from transferlab.methods.splits import (
    load_labeled,
    load_spec,
    same_examples,
    validation_and_test,
)
from transferlab.models import split_head

__all__ = ["AdaptationObjective", "LossFactory", "collapsed", "prepare_adaptation_splits", "selection_lines",
           "selection_report", "train_adaptation"]

# (settings, feature size, number of classes) -> the method's adaptation loss module, or None (source only)
LossFactory = Callable[[Any, int, int], nn.Module | None]

log = logging.getLogger("transferlab")

class AdaptationObjective(nn.Module):
    """``CE(h(f_s), y_s) + trade_off * adaptation(...)`` from one backbone pass over both domains. ``f`` is what the
    head's last linear layer reads (`transferlab.model.split_head`): the backbone features, or a bottleneck's.

    ``forward(model, batch)`` takes ``batch = [(x_s (B_s, ...), y_s (B_s,)), (x_t, ignored labels)]``; ``x_t`` may
    be ``(B_t, 2, ...)``: a plain and an augmented view (self-training's consistency variant). Training progress
    (for reversal schedules) is counted in a buffer, so a resumed run continues the schedule.
    Returns ``{"loss", "parts": {"source_ce", "transfer_loss", ...}}``.
    """

    def __init__(self, adaptation: nn.Module | None, trade_off: float, total_steps: int):
        super().__init__()
        self.adaptation = adaptation
        self.trade_off = trade_off
        self.total_steps = max(total_steps, 1)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, model, batch) -> dict:
        (source_x, source_y), (target_x, _) = batch
        two_views = torch.is_tensor(target_x) and target_x.dim() == source_x.dim() + 1  # TwoViews: (B, 2, C, H, W)
        views = [target_x[:, 0], target_x[:, 1]] if two_views else [target_x]
        inputs = [source_x, *views]
        neck, classifier = split_head(model.head)
        features = neck(model.backbone(concat_inputs(inputs)))
        logits = classifier(features)
        sizes = [batch_length(x) for x in inputs]
        f_s, f_t, *_ = features.split(sizes)
        logits_s, logits_t, *view_logits = logits.split(sizes)
        source_ce = F.cross_entropy(logits_s.float(), source_y)
        parts = {"source_ce": source_ce.detach()}
        total = source_ce
        if self.adaptation is not None:
            progress = min(1.0, float(self.step) / self.total_steps)
            out = self.adaptation(AdaptationInputs(f_s, f_t, logits_s, logits_t, progress,
                                                   view_logits[0] if view_logits else None))
            total = source_ce + self.trade_off * out["loss"]
            parts["transfer_loss"] = out["loss"].detach()
            parts.update({name: value.detach() for name, value in out["parts"].items()})
        self.step += 1
        return {"loss": total, "parts": parts}


class TwoViews(Dataset):
    """``(stack([plain, augmented]), label)``: the target images for self-training's consistency variant. The
    augmentation is timm's training transform without flips (digits and text do not survive mirroring)."""

    def __init__(self, data: ImageData, preprocess):
        if not isinstance(data, ImageData):
            raise TransferlabError(f"--consistency augments images; {data.name} is not image data (drop --consistency "
                                   "for plain self-training)")
        self.plain = ImageDataset(data, preprocess)
        self.augment = build_transform(preprocess, train=True, augment=True, hflip=0.0, scale=(0.5, 1.0))

    def __len__(self) -> int:
        return len(self.plain)

    def __getitem__(self, index: int):
        image = self.plain.image(index)  # decoded once for both views
        return torch.stack([self.plain.transform(image), self.augment(image)]), self.plain.label(index)


def selection_report(history: list[dict], scorer: str) -> dict:
    """Which epoch each scorer picks and, when target labels were there, the target accuracy it gets, next to the
    best epoch in hindsight: the selection gap in numbers. Collapsed epochs (`selection.collapsed`) are named."""
    labels = "report_target_accuracy" in history[-1] if history else False
    report = {"scorer": scorer, "oracle": scorer == "oracle"}
    by_scorer = {}
    for name in SCORERS:
        epoch = pick_epoch(history, f"val_{name}")
        if epoch is not None:
            by_scorer[name] = {"epoch": epoch + 1, **({"target_accuracy": history[epoch]["report_target_accuracy"]}
                                                     if labels else {})}
    report["selected_epoch"] = by_scorer[scorer]["epoch"]
    report["by_scorer"] = by_scorer
    skipped = [row["epoch"] for row in history if row.get("report_collapsed")]
    if skipped:
        report["collapsed_epochs"] = skipped
    chosen = history[report["selected_epoch"] - 1]
    if "report_target_top_class_share" in chosen:
        report["target_top_class_share_selected"] = chosen["report_target_top_class_share"]
        if collapsed(chosen["report_target_top_class_share"], chosen["report_source_share_of_that_class"]):
            report["warning"] = (
                f"every epoch collapsed; the chosen checkpoint (epoch {report['selected_epoch']}) puts "
                f"{chosen['report_target_top_class_share']:.0%} of the target predictions into one class that holds "
                f"{chosen['report_source_share_of_that_class']:.0%} of the source labels: the adaptation failed; "
                "compare with --method source-only, or lower --trade-off or --lr")
            log.warning(report["warning"])
        elif skipped:
            log.info("epochs %s collapsed (nearly all target predictions in one class) and were passed over",
                     ", ".join(map(str, skipped)))
    if labels:
        best = pick_epoch(history, "report_target_accuracy")
        report["target_accuracy_selected"] = by_scorer[scorer]["target_accuracy"]
        report["best_epoch_in_hindsight"] = best + 1
        report["target_accuracy_best_in_hindsight"] = history[best]["report_target_accuracy"]
    return report


def prepare_adaptation_splits(config) -> Splits:
    """Labeled source data (split into train and validation unless --val is given) and target data whose labels,
    if it has any, are expressed in the source classes (-1 for classes the source lacks) for reporting only."""
    source = load_labeled(config.source, config, "source", "source")
    target = load_spec(config.target, config, ("train", "all"))
    if same_examples(source, target):
        raise TransferlabError(f"source {config.source} and target {config.target} hold the same examples; "
                               "the target must be other data")
    if target.labels is not None:
        target = _target_labels_in_source_classes(target, source.classes)
    # the target test set may hold classes the source lacks: evaluation warns and scores the shared ones
    source, val, test, label_use = validation_and_test(source, config, align_test=False)
    if config.selection == "oracle" and (target.labels is None or not (target.labels >= 0).any()):
        raise TransferlabError(f"selection 'oracle' picks the checkpoint by target accuracy, but the target "
                               f"{config.target} has no labels of the source classes")
    return Splits(train=source, val=val, test=test, target=target, label_use=label_use)


def _target_labels_in_source_classes(target, classes: list[str]):
    shared = sorted(set(target.classes) & set(classes))
    if not shared:
        raise TransferlabError(
            f"target {target.name} shares no class with the source (target classes: {', '.join(target.classes[:5])}; "
            f"source classes: {', '.join(classes[:5])}); these methods need the same classes in both domains"
        )
    outside = sorted(set(target.classes) - set(classes))
    if outside:
        log.warning("target %s has classes the source lacks (%s); target accuracy is reported on the shared classes",
                    target.name, ", ".join(outside[:10]))
    position = {name: i for i, name in enumerate(classes)}
    labels = np.array([position.get(target.classes[label], -1) for label in target.labels], dtype=np.int64)
    return replace(target, classes=list(classes), labels=labels)


def train_adaptation(config, splits: Splits, context: RunContext, *, make_loss: LossFactory) -> MethodResult:
    """Source-supervised model plus the adaptation loss ``make_loss`` builds; checkpoint chosen by
    ``config.selection``."""
    if splits.target is None:
        raise ValueError("adaptation methods need target data (splits.target)")
    pretrained = config.pretrained or config.weights is not None
    model = build_model(config, splits.classes, pretrained=pretrained)
    param_groups, unfreezing = freeze_and_rates(model, config, pretrained)
    preprocess = model.preprocess
    unlabeled_target = replace(splits.target, labels=None)  # training never sees target labels
    target_data = (TwoViews(unlabeled_target, preprocess) if getattr(config, "consistency", False)
                   else make_dataset(unlabeled_target, preprocess, train=True, augment=config.augment))
    pairs = DomainPairLoader(make_dataset(splits.train, preprocess, train=True, augment=config.augment), target_data,
                             batch_size=config.batch_size, source_share=0.5, steps_per_epoch=config.steps_per_epoch)
    total_steps = config.epochs * len(pairs)
    adaptation = make_loss(config, split_head(model.head)[1].in_features, len(splits.classes))
    if adaptation is not None and list(adaptation.parameters()):
        param_groups.append({"params": list(adaptation.parameters()), "lr": config.lr, "name": "adaptation"})
    optimizer = build_optimizer(config.optimizer, param_groups, config.weight_decay)
    scheduler = build_scheduler(config, optimizer, total_steps)
    objective = AdaptationObjective(adaptation, getattr(config, "trade_off", 0.0), total_steps)
    validation = AdaptationValidation(splits.val, splits.target, config.selection, max_target=config.selection_samples,
                                      seed=config.seed, all_scorers=config.selection_all_scorers)
    log.info("%s: %s -> %s, trade-off %g, checkpoint chosen by %s%s", config.method, splits.train.name,
             splits.target.name, objective.trade_off, config.selection,
             " (ORACLE: reads target labels)" if config.selection == "oracle" else "")
    trainer = Trainer(model, objective, optimizer, scheduler, train_settings(config, context), [unfreezing])
    history = trainer.fit(pairs, validation, resume=config.resume)
    report = selection_report(history, config.selection)
    metrics = {"selection": report}
    if config.selection == "oracle":
        metrics["method"] = f"{config.method} (ORACLE selection: target labels)"
    return MethodResult(model=model, history=history, metrics=metrics, notes=selection_lines(report))


def selection_lines(report: dict) -> list[str]:
    """The checkpoint choice of an adaptation run and, with target labels, its gap to the best in hindsight."""
    name = f"ORACLE ({report['scorer']}: reads target labels)" if report["oracle"] else report["scorer"]
    lines = [f"checkpoint chosen by {name}: epoch {report['selected_epoch']}"]
    if report.get("collapsed_epochs") and "warning" not in report:
        lines[0] += (f" (passed over collapsed epochs {', '.join(map(str, report['collapsed_epochs']))}: nearly all "
                     "target predictions in one class)")
    if "target_accuracy_selected" in report:
        lines.append(f"target accuracy (labels used for reporting only): chosen {report['target_accuracy_selected']:.4f}, "
                     f"best in hindsight {report['target_accuracy_best_in_hindsight']:.4f} "
                     f"(epoch {report['best_epoch_in_hindsight']})")
    if "warning" in report:
        lines.append(f"warning: {report['warning']}")
    return lines

