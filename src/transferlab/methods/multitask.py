"""Multi-task learning (SEED.md 3.3): one shared backbone, one head per task, task losses combined by a weighting.

Each training step draws a batch from every task group (the training manifest's rows, and each task that has its
own data), runs the backbone once over all of them, gives every head the rows labeled for its task, and hands the
per-task losses to the weighting (`transferlab.methods.weighting`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from transferlab.config import FitConfig
from transferlab.data.task_groups import MultiTaskSplits, TaskGroup, TaskGroupDataset
from transferlab.engine.batches import batch_length, concat_inputs
from transferlab.engine.distributed import make_loader
from transferlab.engine.domains import GroupBatches
from transferlab.engine.loop import Trainer, TrainSettings, predict_logits
from transferlab.engine.optim import build_optimizer, build_scheduler
from transferlab.methods.base import MethodResult, RunContext, register_method, train_settings
from transferlab.methods.finetune import build_backbone, freeze_and_rates
from transferlab.methods.losses import L2SP
from transferlab.methods.weighting import LossWeighting, build_weighting
from transferlab.model import MultiTaskModel, build_head
from transferlab.tasks import Task

__all__ = ["MultiTaskObjective", "TaskValidation", "build_multitask_model", "evaluate_task_groups", "train_multitask"]

log = logging.getLogger("transferlab")


class MultiTaskObjective(nn.Module):
    """Per-task losses from one backbone pass, combined by ``weighting``.

    ``forward(model, batch)`` takes ``batch = [(x_g (B_g, ...), {task: targets_g (B_g, ...)}) for each group g]``;
    task ``t``'s loss is its `Task.loss` over the rows of the groups labeled for it. Returns
    ``{"loss", "parts": {"<task>_loss", ...weighting parts}[, "backward"]}``.
    """

    def __init__(self, tasks: list[Task], weighting: LossWeighting, regularizers: dict[str, nn.Module] | None = None):
        super().__init__()
        self.tasks = list(tasks)
        self.weighting = weighting
        self.regularizers = regularizers or {}

    def forward(self, model: MultiTaskModel, batch) -> dict:
        inputs = [x for x, _ in batch]
        features = model.backbone(concat_inputs(inputs))
        per_group = features.split([batch_length(x) for x in inputs])
        losses = []
        for task in self.tasks:
            rows = [(group_features, targets[task.name]) for group_features, (_, targets) in zip(per_group, batch)
                    if task.name in targets]
            task_features = torch.cat([f for f, _ in rows])
            losses.append(task.loss(model.heads[task.name](task_features), torch.cat([t for _, t in rows])))
        losses = [loss.float() for loss in losses]
        shared = [p for p in model.backbone.parameters() if p.requires_grad]
        out = self.weighting(losses, features, shared)
        parts = {f"{task.name}_loss": loss.detach() for task, loss in zip(self.tasks, losses)}
        parts.update(out["parts"])
        backward, penalty = out.get("backward"), None
        for name, regularizer in self.regularizers.items():
            value = regularizer()
            parts[name] = value.detach()
            penalty = value if penalty is None else penalty + value
        total = out["loss"] if penalty is None else out["loss"] + penalty
        if backward is not None and penalty is not None:
            aggregate = backward

            def backward() -> None:  # the aggregated task gradients, plus the regularisers' own gradient
                aggregate()
                penalty.backward()

        return {"loss": total, "parts": parts, **({"backward": backward} if backward is not None else {})}


def evaluate_task_groups(model: MultiTaskModel, groups: list[TaskGroup], *, batch_size: int = 64,
                         precision: str = "fp32", device: torch.device | None = None, num_workers: int = 0,
                         only: list[str] | None = None) -> dict:
    """Every task's metrics on the groups that carry its labels: ``{"tasks": {name: metrics}, "score": mean}``.

    ``score`` averages the tasks' ``score`` (accuracy, micro-F1 or R^2): what model selection maximises.
    """
    device = device or torch.device("cpu")
    outputs: dict[str, list[np.ndarray]] = {}
    targets: dict[str, list[np.ndarray]] = {}
    for group in groups:
        wanted = [name for name in group.targets if only is None or name in only]
        if not wanted:
            continue
        loader = make_loader(TaskGroupDataset(group, model.preprocess), batch_size=batch_size, shuffle=False,
                             num_workers=num_workers)
        predicted, labels = predict_logits(model.to(device), loader, precision, device)
        for name in wanted:
            outputs.setdefault(name, []).append(predicted[name].numpy())
            targets.setdefault(name, []).append(labels[name].numpy())
    metrics = {}
    for task in model.tasks:
        if task.name in outputs:
            metrics[task.name] = task.metrics(np.concatenate(outputs[task.name]), np.concatenate(targets[task.name]))
    scores = [m["score"] for m in metrics.values() if m.get("n") and np.isfinite(m["score"])]
    return {"tasks": metrics, "score": float(np.mean(scores)) if scores else float("nan")}


class TaskValidation:
    """Validation for the loop: ``evaluate(model, settings)`` -> ``val_<task>_<metric>`` and ``val_score``."""

    def __init__(self, groups: list[TaskGroup]):
        self.groups = groups

    def evaluate(self, model: MultiTaskModel, settings: TrainSettings) -> dict[str, float]:
        result = evaluate_task_groups(model, self.groups, batch_size=settings.batch_size * 2,
                                      precision=settings.precision, device=settings.device,
                                      num_workers=settings.num_workers)
        row = {}
        for name, metrics in result["tasks"].items():
            for key, value in metrics.items():
                if key not in ("n", "score", "classes", "confusion_matrix"):
                    row[f"val_{name}_{key}"] = value
        row["val_score"] = result["score"]
        return row


def build_multitask_model(config: FitConfig, tasks: list[Task], *, pretrained: bool) -> MultiTaskModel:
    """The configured backbone with one head (``config.head`` kind) per task."""
    backbone = build_backbone(config, pretrained=pretrained)
    heads = {task.name: build_head(config.head, backbone.num_features, task.num_outputs, config.head_hidden,
                                   config.dropout) for task in tasks}
    return MultiTaskModel(backbone, heads, tasks)


@register_method("multitask")
def train_multitask(config: FitConfig, splits: MultiTaskSplits, context: RunContext) -> MethodResult:
    """Shared backbone, one head per task; freezing, head-only epochs and learning rates as in ``finetune``."""
    pretrained = config.pretrained or config.weights is not None
    model = build_multitask_model(config, splits.tasks, pretrained=pretrained)
    param_groups, unfreezing = freeze_and_rates(model, config, True)
    names = [task.name for task in splits.tasks]
    weights = [spec.weight for spec in config.tasks]
    weighting = build_weighting(config.weighting, names, weights, dwa_temperature=config.dwa_temperature,
                                gradnorm_alpha=config.gradnorm_alpha)
    if list(weighting.parameters()):  # learned task weights train with the head, without weight decay
        param_groups.append({"params": list(weighting.parameters()), "lr": config.lr, "weight_decay": 0.0,
                             "name": "loss_weighting"})
    optimizer = build_optimizer(config.optimizer, param_groups, config.weight_decay)
    preprocess = model.preprocess
    batches = GroupBatches(
        [TaskGroupDataset(group, preprocess, train=True, augment=config.augment) for group in splits.train],
        [min(config.batch_size, len(group)) for group in splits.train],
        config.steps_per_epoch,
    )
    scheduler = build_scheduler(config.scheduler, optimizer, config.epochs * len(batches))
    regularizers = {}
    if pretrained and (config.l2sp_alpha or config.l2sp_beta):
        regularizers["l2sp"] = L2SP(model, config.l2sp_alpha, config.l2sp_beta)
    objective = MultiTaskObjective(splits.tasks, weighting, regularizers)
    log.info("multi-task training: %d tasks (%s), weighting %s", len(names), ", ".join(names), config.weighting)
    trainer = Trainer(model, objective, optimizer, scheduler, train_settings(config, context),
                      [unfreezing, weighting.start_epoch])
    history = trainer.fit(batches, TaskValidation(splits.val) if splits.val else None, resume=config.resume)
    return MethodResult(model=model, history=history)
