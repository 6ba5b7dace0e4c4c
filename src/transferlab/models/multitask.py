"""`MultiTaskModel`: one shared backbone and one head per task (kind ``multitask``), and how it is evaluated."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from transferlab.artifacts import save_weights, write_model_info
from transferlab.backbones.base import Backbone
from transferlab.data.specs import manifest_columns
from transferlab.data.task_groups import TaskGroup, TaskGroupDataset, load_task_group
from transferlab.engine.distributed import make_loader
from transferlab.engine.inference import predict_logits
from transferlab.engine.precision import resolve_precision
from transferlab.errors import TransferlabError, suggest
from transferlab.evaluate import confusion_lines, predict_task_outputs
from transferlab.models.base import rebuild_saved, register_kind
from transferlab.models.classifier import TransferModel, build_saved_head
from transferlab.models.info import TASKS, HeadInfo, ModelInfo, read_info
from transferlab.tasks import ClassificationTask, task_from_dict

__all__ = ["MultiTaskModel", "evaluate_task_groups"]

_TASK_SUMMARY = {"accuracy": "accuracy", "macro_f1": "macro-F1", "micro_f1": "micro-F1",
                 "mean_average_precision": "mAP", "mae": "MAE", "rmse": "RMSE", "r2": "R^2"}


@register_kind
class MultiTaskModel(TransferModel):
    """One shared backbone and one head per task: ``forward(x)`` returns ``{task_name: outputs (B, n_outputs)}``.

    Args:
        backbone: any `Backbone`.
        heads: task name -> head module, in task order.
        tasks: the `transferlab.tasks.Task` of every head (same names, same order).
        head_settings: how the heads were built (kind, hidden sizes, dropout).
    """

    kind = "multitask"

    def __init__(self, backbone: Backbone, heads: dict[str, nn.Module], tasks: list, head_settings: dict | None = None):
        if [task.name for task in tasks] != list(heads):
            raise ValueError(f"heads {list(heads)} do not match tasks {[task.name for task in tasks]}")
        super().__init__(backbone, nn.Identity(), [], head_settings)
        del self.head
        self.heads = nn.ModuleDict(heads)
        self.tasks = list(tasks)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_heads(self.backbone(x))

    def forward_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every head's outputs from shared features ``(B, num_features)``."""
        return {name: head(features) for name, head in self.heads.items()}

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        """The backbone's named groups, then one ``head`` group holding every task head (they learn together)."""
        return [*self._backbone_groups(), ("head", [f"heads.{name}" for name, _ in self.heads.named_parameters()])]

    # --- the predictor contract ------------------------------------------------------------------------------

    def load_eval_data(self, spec, options):
        """The task group of ``spec``: every task whose label column the data holds, or ``options.task`` alone
        (any data labeled for it; a single classification task is assumed when no column matches)."""
        names = [t.name for t in self.tasks]
        task = options.task
        if task is not None and task not in names:
            raise TransferlabError(f"the model has no task '{task}'{suggest(task, names)}; "
                                   f"its tasks: {', '.join(names)}")
        found = manifest_columns(spec, options.columns) or []
        chosen = [t for t in self.tasks if (task is None or t.name == task) and t.label_column in found]
        if not chosen:
            if task is None:
                classification = [t for t in self.tasks if isinstance(t, ClassificationTask)]
                if len(classification) != 1:
                    raise TransferlabError(
                        f"{spec} holds none of the tasks' label columns "
                        f"({', '.join(t.label_column for t in self.tasks)}); name the task its labels belong to with "
                        f"--task (tasks: {', '.join(names)})"
                    )
                task = classification[0].name
            chosen = [t for t in self.tasks if t.name == task]
        return [load_task_group(spec, chosen, skip_bad_files=options.skip_bad_files, text_columns=options.columns)]

    def evaluate(self, data, *, precision="auto", num_workers=None):
        """``{"tasks": {name: metrics}, "score": mean task score}`` over task groups (`evaluate_task_groups`)."""
        metrics = evaluate_task_groups(self, data, precision=precision, num_workers=num_workers or 0)
        unlabeled = [name for name, values in metrics["tasks"].items() if not values["n"]]
        if metrics["tasks"] and len(unlabeled) == len(metrics["tasks"]):
            raise TransferlabError(f"{', '.join(group.name for group in data)} holds no labels the model knows for "
                                   f"task(s) {', '.join(unlabeled)} (see the warning above for the labels found)")
        return metrics

    def predict(self, data, *, precision="auto", num_workers=None):
        """``{"tasks": {name: prediction}}`` per example, each task in its own form (`Task.decode`)."""
        outputs = predict_task_outputs(self, data, precision=precision, num_workers=num_workers)
        return self.rows_from_predictions({task.name: task.predictions(torch.as_tensor(outputs[task.name])).numpy()
                                           for task in self.tasks})

    def prediction_outputs(self, batch):
        """One output per task, named after it: probabilities (classification, multi-label) or values in the
        column's units (regression), `Task.predictions`."""
        outputs = self(batch)
        return {task.name: task.predictions(outputs[task.name]) for task in self.tasks}

    def rows_from_predictions(self, predictions):
        decoded = {task.name: task.decode_predictions(predictions[task.name]) for task in self.tasks}
        count = len(next(iter(decoded.values())))
        return [{"tasks": {name: rows[i] for name, rows in decoded.items()}} for i in range(count)]

    def output_decisions(self):
        return {task.name: task.decision for task in self.tasks if task.decision is not None}

    def export_description(self):
        return {"tasks": [task.to_dict() for task in self.tasks],
                "outputs": {task.name: task.predictions_meaning for task in self.tasks}}

    def prediction_table(self, rows):
        """Per task its label (``a|b`` for multi-label) or value, then probabilities as ``TASK:p_CLASS`` columns."""
        columns = []
        for task in self.tasks:
            columns += [task.name, *[f"{task.name}:p_{c}" for c in getattr(task, "classes", [])
                                     if task.type != "regression"]]
        cells = []
        for row in rows:
            line = []
            for name, prediction in row["tasks"].items():
                if "value" in prediction:
                    line.append(f"{prediction['value']:.6g}")
                else:
                    line.append(prediction["label"] if "label" in prediction else "|".join(prediction["labels"]))
                line += [f"{p:.6f}" for p in prediction.get("probabilities", {}).values()]
            cells.append(line)
        return columns, cells

    def metric_lines(self, metrics, *, detail=False):
        lines = []
        for name, values in metrics["tasks"].items():
            shown = ", ".join(f"{label} {values[key]:.4f}" for key, label in _TASK_SUMMARY.items() if key in values)
            lines.append(f"task {name} ({values['n']} examples): {shown or 'no labeled examples'}")
        if detail:
            for name, values in metrics["tasks"].items():
                if "confusion_matrix" in values:
                    lines.append(f"task {name}, confusion matrix (rows: true, columns: predicted):")
                    lines += confusion_lines(values["classes"], values["confusion_matrix"])
        return lines

    @classmethod
    def headline_metrics(cls, metrics):
        """The mean task score first (what model selection maximises), then each task's own score metric (accuracy,
        micro-F1 or R^2: all higher-is-better)."""
        headline = {"score": metrics["score"]}
        for name, values in metrics["tasks"].items():
            key = next((key for key in ("accuracy", "micro_f1", "r2") if key in values), None)
            if key is not None:
                headline[f"{name} {key}"] = values[key]
        return headline

    def save(self, run_dir):
        save_weights(run_dir, self)
        if hasattr(self.preprocess, "save"):
            self.preprocess.save(run_dir)
        write_model_info(run_dir, self.kind, {**self._architecture(), "classes": [],
                                              "tasks": [task.to_dict() for task in self.tasks]})

    @classmethod
    def wrote(cls, info):
        return "tasks" in info

    @classmethod
    def from_run_dir(cls, run_dir, info):
        saved = read_info(MultiTaskInfo, run_dir, info)
        tasks = [task_from_dict(values) for values in saved.tasks]

        def build(backbone):
            heads = {task.name: build_saved_head(saved, task.num_outputs) for task in tasks}
            return cls(backbone, heads, tasks, saved.head.model_dump())

        return rebuild_saved(run_dir, saved, build)


class MultiTaskInfo(ModelInfo):
    """``model.json`` of a ``multitask`` run: its heads and tasks (each checked by its type's schema)."""

    head: HeadInfo = Field(description="how the heads were built")
    tasks: list[dict] = Field(min_length=1, description="the tasks, one per head")

    def parts(self):
        return [*super().parts(), *((f"tasks.{index}", TASKS[task["type"]], task)
                                    for index, task in enumerate(self.tasks))]

    @model_validator(mode="after")
    def _tasks_have_types_and_names(self):
        for index, task in enumerate(self.tasks):
            if not isinstance(task.get("type"), str) or task["type"] not in TASKS:
                raise ValueError(f"'tasks.{index}.type' must be one of {', '.join(TASKS)}, got {task.get('type')!r}")
        names = [task.get("name") for task in self.tasks]
        if len(set(map(str, names))) != len(names):
            raise ValueError(f"task names must differ, got {names}")
        return self


def evaluate_task_groups(model: MultiTaskModel, groups: list[TaskGroup], *, batch_size: int = 64,
                         precision: str = "fp32", device: torch.device | None = None, num_workers: int = 0,
                         only: list[str] | None = None) -> dict:
    """Every task's metrics on the groups that carry its labels: ``{"tasks": {name: metrics}, "score": mean}``.

    ``score`` averages the tasks' ``score`` (accuracy, micro-F1 or R^2): what model selection maximises.
    """
    device = device or torch.device("cpu")
    precision = resolve_precision(precision, device)
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
