"""Multi-task data: groups of examples (images, texts or audio), each labeled for some of the tasks.

A task's labels come from a column of the training manifest (all such tasks share one group: the manifest's
examples) or from a dataset of its own (one group per such task). `prepare_multitask_splits` loads every group's
training, validation and test data for a `FitConfig` with ``method: multitask``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from transferlab.config import FitConfig, TaskSpec
from transferlab.data.class_names import require_two_classes
from transferlab.data.examples import Examples
from transferlab.data.specs import load_data, manifest_columns, read_manifest_columns
from transferlab.data.splits import hold_out_indices, take_per_class
from transferlab.data.task_columns import build_task, encode_targets
from transferlab.data.text_tables import TextColumns, text_columns_of
from transferlab.data.torch_dataset import DATA_MODALITY, make_dataset
from transferlab.errors import TransferlabError
from transferlab.tasks import ClassificationTask, Task

__all__ = ["TaskGroup", "TaskGroupDataset", "MultiTaskSplits", "prepare_multitask_splits", "load_task_group"]

log = logging.getLogger("transferlab")


@dataclass
class TaskGroup:
    """Examples plus, for each task they are labeled for, one encoded target per example (see `transferlab.tasks`).

    Attributes:
        examples: the examples (`ImageData`, `TextData` or `AudioData`); their own labels, if any, are not used.
        targets: task name -> ``(N,)`` or ``(N, C)`` encoded targets, row-aligned with ``examples``.
    """

    examples: Examples
    targets: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def name(self) -> str:
        return self.examples.name

    def subset(self, indices) -> TaskGroup:
        """The group of the examples at ``indices`` (in that order), with their targets."""
        indices = np.asarray(indices, dtype=np.int64)
        return TaskGroup(self.examples.subset(indices),
                         {name: values[indices] for name, values in self.targets.items()})


class TaskGroupDataset(Dataset):
    """Yields ``(inputs, {task_name: target})`` with the backbone's preprocessing."""

    def __init__(self, group: TaskGroup, preprocess, *, train: bool = False, augment: bool = False):
        self.group = group
        self.examples = make_dataset(group.examples, preprocess, train=train, augment=augment)

    def __len__(self) -> int:
        return len(self.group)

    def __getitem__(self, index: int):
        inputs, _ = self.examples[index]
        return inputs, {name: torch.as_tensor(values[index]) for name, values in self.group.targets.items()}

    def collate_fn(self, items: list):
        """Batches inputs as the examples' dataset does (padding text and audio), targets task by task."""
        own = getattr(self.examples, "collate_inputs", None)
        inputs = own([x for x, _ in items]) if own else torch.stack([x for x, _ in items])
        targets = {name: torch.stack([t[name] for _, t in items]) for name in items[0][1]}
        return inputs, targets


@dataclass
class MultiTaskSplits:
    """The tasks (in config order) and the groups of training, validation and test data that carry their labels."""

    tasks: list[Task]
    train: list[TaskGroup]
    val: list[TaskGroup]
    test: list[TaskGroup]

    @property
    def label_use(self) -> dict:
        return {}

    @property
    def num_train(self) -> int:
        return sum(map(len, self.train))

    @property
    def modality(self) -> str:
        return DATA_MODALITY.get(type(self.train[0].examples), "image")

    def describe(self) -> str:
        return "; ".join(f"{group.name}: {len(group)} examples for {', '.join(group.targets)}" for group in self.train)


def prepare_multitask_splits(config: FitConfig) -> MultiTaskSplits:
    """Load every task's data; hold out validation data where none is given; keep N labels per class if asked."""
    tasks: dict[str, Task] = {}
    train, val, test = [], [], []
    column_specs = [spec for spec in config.tasks if spec.data is None]
    if column_specs:
        examples, cells = read_manifest_columns(config.train, [spec.label_column for spec in column_specs],
                                                **_reading(config))
        examples, cells = _keep_class_rows(examples, cells, config.classes)
        for spec in column_specs:
            tasks[spec.name] = build_task(spec.name, spec.column, spec.type, cells[spec.label_column], config.train)
        group_tasks = [tasks[spec.name] for spec in column_specs]
        group = TaskGroup(examples, {task.name: encode_targets(task, cells[task.label_column], config.train)
                                   for task in group_tasks})
        if config.val is not None:
            val.append(load_task_group(config.val, group_tasks, **_reading(config)))
        else:
            group, held_out = _hold_out(group, group_tasks, config.val_fraction, config.seed)
            val.append(held_out)
        if config.test is not None:
            test.append(load_task_group(config.test, group_tasks, **_reading(config)))
        train.append(_keep_per_class(group, group_tasks, column_specs, config))
    for spec in (spec for spec in config.tasks if spec.data is not None):
        task, group = _own_data_group(spec, config)
        tasks[spec.name] = task
        if spec.val is not None:
            val.append(load_task_group(spec.val, [task], split=("val", "test", "all"), **_reading(config)))
        else:
            group, held_out = _hold_out(group, [task], config.val_fraction, config.seed)
            val.append(held_out)
        if spec.test is not None:
            test.append(load_task_group(spec.test, [task], split=("test", "val", "all"), **_reading(config)))
        train.append(_keep_per_class(group, [task], [spec], config))
    ordered = [tasks[spec.name] for spec in config.tasks]
    for group in train:
        log.info("multitask data %s: %d examples for task(s) %s", group.name, len(group), ", ".join(group.targets))
    return MultiTaskSplits(tasks=ordered, train=train, val=val, test=test)


def _keep_class_rows(examples: Examples, cells: dict[str, list[str]], classes: list[str] | None
                     ) -> tuple[Examples, dict[str, list[str]]]:
    """With ``--classes``: drop the rows whose cell, in a column holding any of ``classes``, is another class."""
    if classes is None:
        return examples, cells
    keep = np.ones(len(examples), dtype=bool)
    for values in cells.values():
        if set(values) & set(classes):
            keep &= np.array([value == "" or value in classes for value in values])
    rows = np.flatnonzero(keep)
    if len(rows) < len(examples):
        log.info("kept %d of %d rows of %s: classes %s", len(rows), len(examples), examples.name, ", ".join(classes))
    return examples.subset(rows), {name: [values[i] for i in rows] for name, values in cells.items()}


def _reading(config: FitConfig) -> dict:
    """How a run reads its data files: the keyword arguments of `load_task_group` and `read_manifest_columns`."""
    return {"skip_bad_files": config.skip_bad_files, "text_columns": text_columns_of(config),
            "max_image_pixels": config.max_image_pixels}


def load_task_group(spec: str, tasks: list[Task], *, skip_bad_files: bool = False,
                    split: tuple[str, ...] = ("test", "val", "all"),
                    text_columns: TextColumns | None = None, max_image_pixels: int | None = None) -> TaskGroup:
    """Labeled data for already-built ``tasks``: a CSV manifest holding their label columns, or, for one
    classification task, any class-labeled data spec (class names matched to the task's; unknown ones ignored).
    Bad files and ``max_image_pixels`` as in `transferlab.data.load_splits`."""
    columns = manifest_columns(spec, text_columns)
    wanted = [task.label_column for task in tasks]
    if columns is not None and all(column in columns for column in wanted) or not _single_classification(tasks):
        examples, cells = read_manifest_columns(spec, wanted, skip_bad_files=skip_bad_files,
                                                text_columns=text_columns, max_image_pixels=max_image_pixels)
        return TaskGroup(examples, {task.name: encode_targets(task, cells[column], spec)
                                  for task, column in zip(tasks, wanted, strict=True)})
    task = tasks[0]
    data = load_data(spec, split_preference=split, skip_bad_files=skip_bad_files, columns=text_columns,
                     max_image_pixels=max_image_pixels)
    if data.labels is None:
        raise TransferlabError(f"data {data.name} for task '{task.name}' has no labels")
    names = [data.classes[label] for label in data.labels]
    return TaskGroup(data, {task.name: encode_targets(task, names, data.name)})


def _single_classification(tasks: list[Task]) -> bool:
    return len(tasks) == 1 and isinstance(tasks[0], ClassificationTask)


def _own_data_group(spec: TaskSpec, config: FitConfig) -> tuple[Task, TaskGroup]:
    """A task with its own data: a class-labeled data spec, or (with ``column``) a manifest column of any type."""
    if spec.column is not None:
        examples, cells = read_manifest_columns(spec.data, [spec.column], **_reading(config))
        task = build_task(spec.name, spec.column, spec.type, cells[spec.column], spec.data)
        return task, TaskGroup(examples, {task.name: encode_targets(task, cells[spec.column], spec.data)})
    if spec.type not in (None, "classification"):
        raise TransferlabError(
            f"task '{spec.name}' is {spec.type} but its data {spec.data!r} gives class labels; name the label column "
            "of a CSV manifest with 'column'"
        )
    data = load_data(spec.data, split_preference=("train", "all"), skip_bad_files=config.skip_bad_files,
                     columns=text_columns_of(config), max_image_pixels=config.max_image_pixels)
    if data.labels is None:
        raise TransferlabError(f"data {data.name} of task '{spec.name}' has no labels")
    require_two_classes(data, f"task '{spec.name}':")
    task = ClassificationTask(spec.name, None, classes=list(data.classes))
    return task, TaskGroup(data, {task.name: data.labels})


def _hold_out(group: TaskGroup, tasks: list[Task], fraction: float, seed: int) -> tuple[TaskGroup, TaskGroup]:
    """Split off validation data: stratified by the first fully labeled classification task, else at random."""
    strata = next((group.targets[task.name] for task in tasks
                   if isinstance(task, ClassificationTask) and (group.targets[task.name] >= 0).all()), None)
    train_index, val_index = hold_out_indices(len(group), fraction, seed, strata=strata,
                                              what=f"example(s) in {group.name}")
    log.info("held out %d of %d examples of %s for validation (seed %d)", len(val_index), len(group), group.name,
             seed)
    return group.subset(train_index), group.subset(val_index)


def _keep_per_class(group: TaskGroup, tasks: list[Task], specs: list[TaskSpec], config: FitConfig) -> TaskGroup:
    """Keep N labels per class of every classification task (others become missing); drop rows left unlabeled."""
    targets = dict(group.targets)
    changed = False
    for task, spec in zip(tasks, specs, strict=True):
        n = spec.labels_per_class or config.labels_per_class
        if n is None or not isinstance(task, ClassificationTask):
            continue
        labels = targets[task.name]
        labeled = np.flatnonzero(labels >= 0)
        keep = labeled[take_per_class(labels[labeled], n, config.seed)]
        reduced = np.full_like(labels, -1)
        reduced[keep] = labels[keep]
        targets[task.name] = reduced
        changed = True
    if not changed:
        return group
    has_label = np.zeros(len(group), dtype=bool)
    for task in tasks:
        has_label |= task.valid(torch.as_tensor(targets[task.name])).numpy()
    return TaskGroup(group.examples, targets).subset(np.flatnonzero(has_label))
