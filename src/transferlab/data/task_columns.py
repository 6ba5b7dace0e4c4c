"""Label columns of a manifest as multi-task targets: infer each task's type, build it, encode its values.

Cell formats (an empty cell means "no label for this task" and is masked out of training and metrics):

- classification: one class name per cell, e.g. ``cat``;
- multilabel: class names separated by ``|``, e.g. ``cat|outdoor`` (a single name is a one-label set);
- regression: a finite number, e.g. ``3.25``.

Type inference, unless the task sets ``type``: any cell holding ``|`` makes a multilabel task; all cells numbers
makes a regression task, except integer codes with at most `MAX_INTEGER_CLASSES` distinct values, which are class
labels (digits ``0``-``9``, star ratings); anything else is classification. Cells that look like lists in another
format (``a;b``, ``a,b``, ``[a, b]``) are refused with a message naming the accepted one.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np

from transferlab.data.class_names import sort_class_names
from transferlab.errors import TransferlabError
from transferlab.tasks import ClassificationTask, MultiLabelTask, RegressionTask, Task

__all__ = ["build_task", "encode_targets", "infer_task_type", "MAX_INTEGER_CLASSES", "MULTILABEL_SEPARATOR"]

log = logging.getLogger("transferlab")

MAX_INTEGER_CLASSES = 20
MULTILABEL_SEPARATOR = "|"
_OTHER_LIST_FORMAT = re.compile(r"^\[.*\]$|[;,]")


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _first_list_like(cells: list[str]) -> tuple[int, str] | None:
    for row, cell in enumerate(cells, start=1):
        if cell and _OTHER_LIST_FORMAT.search(cell):
            return row, cell
    return None


def _type_hint(name: str, kind: str) -> str:
    """How to give task ``name`` the type ``kind``: on the command line and in YAML."""
    return f"--tasks {name}:{kind} (in YAML: tasks: [{{name: {name}, type: {kind}}}])"


def infer_task_type(name: str, cells: list[str], where: str) -> str:
    """``"classification"``, ``"multilabel"`` or ``"regression"`` from a column's non-empty cells."""
    filled = [cell for cell in cells if cell]
    if any(MULTILABEL_SEPARATOR in cell for cell in filled):
        return "multilabel"
    numbers = [_number(cell) for cell in filled]
    if all(value is not None for value in numbers):
        integers = all(value == round(value) for value in numbers)
        if integers and len(set(numbers)) <= MAX_INTEGER_CLASSES:
            log.info("task '%s': integer values with %d distinct codes, read as classes (to predict numbers, make "
                     "it a regression task: %s)", name, len(set(numbers)), _type_hint(name, "regression"))
            return "classification"
        return "regression"
    list_like = _first_list_like(cells)
    if list_like is not None:
        row, cell = list_like
        raise TransferlabError(
            f"column '{name}' of {where} looks like a multi-label list in an unsupported format (row {row}: {cell!r}); "
            f"write the labels separated by '{MULTILABEL_SEPARATOR}' (e.g. cat|dog), or, if the commas/semicolons "
            f"belong to the class names, make it a classification task: {_type_hint(name, 'classification')}"
        )
    return "classification"


def build_task(name: str, column: str | None, kind: str | None, cells: list[str], where: str) -> Task:
    """A task whose classes (or target mean and standard deviation) come from its training cells."""
    label = column or name
    if not any(cells):
        raise TransferlabError(f"column '{label}' of {where} (task '{name}') has no values")
    kind = kind or infer_task_type(label, cells, where)
    if kind == "regression":
        values = encode_targets(RegressionTask(name, column), cells, where)
        known = values[~np.isnan(values)]
        std = float(known.std()) if len(known) > 1 else 0.0
        return RegressionTask(name, column, mean=float(known.mean()), std=std if std > 0 else 1.0)
    if kind == "multilabel":
        _check_multilabel_cells(label, cells, where)
        names = {part for cell in cells if cell for part in cell.split(MULTILABEL_SEPARATOR)}
        return MultiLabelTask(name, column, classes=sort_class_names(names))
    if kind == "classification":
        classes = sort_class_names({cell for cell in cells if cell})
        if len(classes) < 2:
            raise TransferlabError(
                f"column '{label}' of {where} (task '{name}') has a single class ({classes[0]!r}); "
                "classification needs at least two"
            )
        return ClassificationTask(name, column, classes=classes)
    raise TransferlabError(f"unknown type {kind!r} for task '{name}'; expected classification, multilabel or regression")


def encode_targets(task: Task, cells: list[str], where: str) -> np.ndarray:
    """Targets of ``task`` from its column's cells (see the module docstring); errors name the row and value.

    Classes the task does not know (e.g. in validation data) become missing labels, with a warning.
    """
    label = task.label_column
    if isinstance(task, RegressionTask):
        values = np.full(len(cells), np.nan, dtype=np.float32)
        for row, cell in enumerate(cells, start=1):
            if not cell:
                continue
            value = _number(cell)
            if value is None:
                raise TransferlabError(
                    f"regression column '{label}' of {where} has a non-numeric value at row {row}: {cell!r} "
                    "(expected a finite number, or an empty cell for no label)"
                )
            values[row - 1] = value
        return values
    position = {name: index for index, name in enumerate(task.classes)}
    unknown: set[str] = set()
    if isinstance(task, MultiLabelTask):
        _check_multilabel_cells(label, cells, where)
        values = np.full((len(cells), len(task.classes)), np.nan, dtype=np.float32)
        for row, cell in enumerate(cells):
            if cell:
                values[row] = 0.0
                for part in cell.split(MULTILABEL_SEPARATOR):
                    if part in position:
                        values[row, position[part]] = 1.0
                    else:
                        unknown.add(part)
    else:
        values = np.full(len(cells), -1, dtype=np.int64)
        for row, cell in enumerate(cells):
            if cell in position:
                values[row] = position[cell]
            elif cell:
                unknown.add(cell)
    if unknown:
        log.warning("%s: column '%s' holds labels task '%s' was not trained on (%s); they are ignored", where, label,
                    task.name, ", ".join(sorted(unknown)[:5]))
    return values


def _check_multilabel_cells(label: str, cells: list[str], where: str) -> None:
    for row, cell in enumerate(cells, start=1):
        if not cell:
            continue
        parts = cell.split(MULTILABEL_SEPARATOR)
        if _OTHER_LIST_FORMAT.search(cell) or any(not part.strip() or part != part.strip() for part in parts):
            raise TransferlabError(
                f"multi-label column '{label}' of {where} has a value in an unknown format at row {row}: {cell!r}; "
                f"expected class names separated by '{MULTILABEL_SEPARATOR}' without spaces or empty names, "
                "e.g. cat|outdoor"
            )

