"""How the methods prepare their data: labeled training data with a validation hold-out, N labels per class, test
data, and labeled source data beside it. Each method's ``prepare`` step composes these."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from transferlab.data import (
    Examples,
    align_classes,
    choose_split,
    keep_classes,
    load_data,
    load_splits,
    require_two_classes,
    take_per_class,
)
from transferlab.data.detection import is_detection_spec
from transferlab.data.splits import hold_out_indices
from transferlab.data.text_tables import table_columns, text_columns_of
from transferlab.errors import TransferlabError
from transferlab.methods.base import Splits

__all__ = ["load_labeled", "load_spec", "load_training_data", "prepare_labeled_splits", "refuse_detection_data",
           "require_labels", "same_examples", "validation_and_test"]

log = logging.getLogger("transferlab")


def require_labels(data: Examples, role: str) -> Examples:
    """``data`` if it has labels; else an error naming it (and, for a text table, its columns)."""
    if data.labels is None:
        hint = ""
        if getattr(data, "texts", None) is not None and Path(data.name).is_file():
            hint = (f" (no label column; its columns: {', '.join(table_columns(Path(data.name)))}; name the label "
                    "column with --label-column)")
        raise TransferlabError(f"{role} data {data.name} has no labels; {role} data needs class labels{hint}")
    return data


def same_examples(a: Examples, b: Examples) -> bool:
    """Whether two datasets hold the same examples (same files, pixels or texts, in the same order)."""
    if len(a) != len(b) or type(a) is not type(b):
        return False
    if getattr(a, "texts", None) is not None:
        return a.texts == b.texts
    if a.paths is not None and b.paths is not None:
        return [p.resolve() for p in a.paths] == [p.resolve() for p in b.paths]
    return a.pixels is not None and b.pixels is not None and np.array_equal(a.pixels, b.pixels)


def refuse_detection_data(spec: str, method: str) -> None:
    """One line when a classification method is given detection data (boxes), pointing to ``--method detection``."""
    if is_detection_spec(spec):
        raise TransferlabError(f"{spec!r} is object-detection data (boxes), which method '{method}' cannot train on: "
                               "train a detector with --method detection")


def load_spec(spec: str, config, preference: tuple[str, ...], domain: str = "target") -> Examples:
    """One split of a data spec with the run's reading options (bad files, text columns, kept classes)."""
    refuse_detection_data(spec, config.method)
    data = load_data(spec, split_preference=preference, skip_bad_files=config.skip_bad_files, domain=domain,
                     columns=text_columns_of(config), max_image_pixels=config.max_image_pixels)
    return keep_classes(data, config.classes)


def load_labeled(spec: str, config, role: str, domain: str = "target") -> Examples:
    """The training split of ``spec`` (its ``train`` part, or all of it), which must be labeled, with two classes."""
    return require_two_classes(require_labels(load_spec(spec, config, ("train", "all"), domain), role), role)


def validation_and_test(train: Examples, config, own_val: Examples | None = None, *, align_test: bool = True,
                        hold_out: bool = True) -> tuple[Examples, Examples | None, Examples | None, dict]:
    """``(train, val, test, label_use)`` of a labeled training set.

    The label budget comes first: with ``labels_per_class`` N, N labeled examples per class are drawn, and any
    validation data held out for model selection comes out of those N, so a run never selects its model on more
    labels than it was given. Validation data is --val when given (an explicit choice, reported as extra labels);
    else the data's own validation split when there is no budget; else, with ``hold_out``, a seeded stratified
    hold-out of the training labels (`hold_out_indices`); without ``hold_out`` (methods that select by
    cross-validation on the training labels), none. With too few labels to hold out one per class, training runs
    without model selection (a warning says so). Validation (and, with ``align_test``, test) labels are put in
    ``train``'s class order; unknown classes are errors. ``label_use`` says how many labels went where.
    """
    budget = config.labels_per_class
    if budget is not None:
        train = train.subset(take_per_class(train.labels, budget, config.seed))
    val, selection_by = None, "none"
    if config.val is not None:
        val, selection_by = load_spec(config.val, config, ("val", "test", "all")), f"--val {config.val}"
    elif own_val is not None and budget is None:
        val, selection_by = own_val, f"the validation split of {config.train}"
    elif hold_out:
        if own_val is not None:
            log.info("labels_per_class %d: the validation split of %s is left aside (its labels are beyond the "
                     "budget); validation is held out of the %d training labels", budget, config.train, len(train))
        train, val = _held_out(train, config)
        selection_by = f"held out of the training labels (seed {config.seed})" if val is not None else "none"
    if val is not None:
        val = align_classes(require_labels(val, "validation"), train.classes)
    test = None
    if config.test is not None:
        test = require_labels(load_spec(config.test, config, ("test", "val", "all")), "test")
        if align_test:
            test = align_classes(test, train.classes)
    label_use = {"train": len(train), "selection": len(val) if val is not None else 0, "selection_by": selection_by,
                 **({"budget_per_class": budget} if budget is not None else {})}
    return train, val, test, label_use


def _held_out(train: Examples, config) -> tuple[Examples, Examples | None]:
    """``(train, val)``: a seeded stratified ``val_fraction`` of ``train`` held out; with a label budget too small
    to hold out one example per class, ``(train, None)`` and a warning."""
    try:
        train_index, val_index = hold_out_indices(len(train), config.val_fraction, config.seed, strata=train.labels)
    except TransferlabError as err:
        if config.labels_per_class is None:
            raise
        warnings.warn(f"{config.labels_per_class} labels per class leave none to hold out for validation ({err}); "
                      "training without model selection: the last epoch is kept", stacklevel=3)
        return train, None
    log.info("held out %d of %d training labels for validation (seed %d)", len(val_index),
             len(train_index) + len(val_index), config.seed)
    return train.subset(train_index), train.subset(val_index)


def load_training_data(config) -> tuple[Examples, Examples | None]:
    """``(train, own_val)``: the labeled training split of ``config.train`` and its own validation split, if any."""
    refuse_detection_data(config.train, config.method)
    available = load_splits(config.train, skip_bad_files=config.skip_bad_files, columns=text_columns_of(config),
                            max_image_pixels=config.max_image_pixels)
    available = {name: keep_classes(data, config.classes) for name, data in available.items()}
    train = require_labels(available[choose_split(config.train, list(available), ("train", "all"))], "training")
    train = require_two_classes(train, "training")
    return train, available.get("val")


def prepare_labeled_splits(config, *, hold_out: bool = True) -> Splits:
    """Train/val/test of a single-task classification run from ``config.train`` (and --val, --test); see
    `validation_and_test`."""
    train, own_val = load_training_data(config)
    train, val, test, label_use = validation_and_test(train, config, own_val, hold_out=hold_out)
    return Splits(train=train, val=val, test=test, label_use=label_use)
