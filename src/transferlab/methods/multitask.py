"""Multi-task learning (SEED.md 3.3): one shared backbone, one head per task, task losses combined by a weighting.

Each training step draws a batch from every task group (the training manifest's rows, and each task that has its
own data), runs the backbone once over all of them, gives every head the rows labeled for its task, and hands the
per-task losses to the weighting (`transferlab.methods.weighting`).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from transferlab.config import (
    AugmentSettings,
    ExampleSettings,
    FinetuneSettings,
    FitConfig,
    HeadSettings,
    L2SPSettings,
    LabelSettings,
    PretrainedSettings,
    SplitSettings,
    TaskSpec,
    TrainingSettings,
    parse_task_list,
)
from transferlab.data.task_groups import (
    MultiTaskSplits,
    TaskGroup,
    TaskGroupDataset,
    prepare_multitask_splits,
)
from transferlab.engine.batches import batch_length, concat_inputs
from transferlab.engine.domains import GroupBatches
from transferlab.engine.loop import Trainer, TrainSettings
from transferlab.engine.optim import build_optimizer, build_scheduler
from transferlab.methods.base import (
    MethodResult,
    MethodSpec,
    RunContext,
    register_method,
    train_settings,
)
from transferlab.methods.finetune import build_backbone, freeze_and_rates, head_settings
from transferlab.methods.losses import L2SP
from transferlab.methods.weighting import (
    MULTI_LOSS_WEIGHTINGS,
    WEIGHTINGS,
    LossWeighting,
    build_weighting,
)
from transferlab.models import MultiTaskModel, build_head
from transferlab.models.multitask import evaluate_task_groups
from transferlab.tasks import Task

__all__ = ["MultiTaskConfig", "MultiTaskObjective", "TaskValidation", "build_multitask_model", "train_multitask"]

log = logging.getLogger("transferlab")


class MultiTaskConfig(FitConfig, SplitSettings, LabelSettings, ExampleSettings, PretrainedSettings, HeadSettings,
                      TrainingSettings, AugmentSettings, FinetuneSettings, L2SPSettings):
    """``multitask``: one backbone, one head per task; task losses combined by a weighting."""

    train: str | None = Field(
        None, description="training manifest whose label columns the tasks read; optional when every task has "
        "data of its own"
    )
    tasks: list[TaskSpec] | None = Field(
        None, description="tasks: label columns of the train manifest ('a,b:regression') or task entries with data"
    )
    weighting: Literal[WEIGHTINGS] = Field("fixed", description="how task losses/gradients are combined: "
                                           + ", ".join(WEIGHTINGS))
    dwa_temperature: float = Field(2.0, gt=0, description="temperature T of dynamic weight averaging")
    gradnorm_alpha: float = Field(1.5, ge=0, description="restoring-force strength alpha of GradNorm")
    steps_per_epoch: int | None = Field(None, ge=1, description="steps per epoch; default: one pass over the largest "
                                        "task group")

    @field_validator("tasks", mode="before")
    @classmethod
    def _parse_tasks(cls, value):
        if isinstance(value, str):
            return parse_task_list(value)
        if isinstance(value, list):
            return [parse_task_list(item)[0] if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _check_tasks(self):
        if not self.tasks:
            raise ValueError("method 'multitask' needs tasks: --tasks COL1,COL2 (label columns of --train) or "
                             "task entries in the config")
        names = [task.name for task in self.tasks]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"task names must be unique; repeated: {', '.join(repeated)}")
        without_data = [task.name for task in self.tasks if task.data is None and self.train is None]
        if without_data:
            raise ValueError(f"task(s) {', '.join(without_data)} read a label column of the training manifest, but no "
                             "train data is set (--train FILE.csv), and they have no data of their own")
        for task in self.tasks:
            if task.data is None and (task.val or task.test):
                raise ValueError(f"task '{task.name}' sets val/test data but no data of its own; "
                                 "use --val/--test manifests for manifest columns")
        if len(self.tasks) == 1 and self.weighting in MULTI_LOSS_WEIGHTINGS:
            raise ValueError(f"weighting '{self.weighting}' balances several tasks, but only one task "
                             f"('{self.tasks[0].name}') is given; use weighting 'fixed' or add tasks")
        return self


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

    @property
    def computes_own_gradients(self) -> bool:
        """Jacobian descent fills the gradients itself (under torchrun each process aggregates the Jacobian of its
        own batch, and the aggregated gradients are averaged over the processes)."""
        return self.weighting.computes_own_gradients

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
                if key not in ("n", "score") and isinstance(value, (int, float)):  # not class lists, matrices
                    row[f"val_{name}_{key}"] = value
        row["val_score"] = result["score"]
        return row


def build_multitask_model(config: MultiTaskConfig, tasks: list[Task], *, pretrained: bool) -> MultiTaskModel:
    """The configured backbone with one head (``config.head`` kind) per task."""
    backbone = build_backbone(config, pretrained=pretrained)
    heads = {task.name: build_head(config.head, backbone.num_features, task.num_outputs, config.head_hidden,
                                   config.dropout) for task in tasks}
    return MultiTaskModel(backbone, heads, tasks, head_settings(config))


def train_multitask(config: MultiTaskConfig, splits: MultiTaskSplits, context: RunContext) -> MethodResult:
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
    scheduler = build_scheduler(config, optimizer, config.epochs * len(batches))
    regularizers = {}
    if pretrained and (config.l2sp_alpha or config.l2sp_beta):
        regularizers["l2sp"] = L2SP(model, config.l2sp_alpha, config.l2sp_beta)
    objective = MultiTaskObjective(splits.tasks, weighting, regularizers)
    log.info("multi-task training: %d tasks (%s), weighting %s", len(names), ", ".join(names), config.weighting)
    trainer = Trainer(model, objective, optimizer, scheduler, train_settings(config, context),
                      [unfreezing, weighting.start_epoch])
    history = trainer.fit(batches, TaskValidation(splits.val) if splits.val else None, resume=config.resume)
    return MethodResult(model=model, history=history)


register_method(MethodSpec("multitask", "one shared backbone, one head per task (classification, multi-label, "
                           "regression), task losses combined by a weighting", MultiTaskConfig,
                           prepare_multitask_splits, train_multitask))
