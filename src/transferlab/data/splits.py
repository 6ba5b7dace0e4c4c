"""Index splits: the one validation hold-out every method uses (stratified where there are labels), a stratified
train/validation split, and ``n`` labeled examples per class."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.model_selection import train_test_split

from transferlab.data.hints import setting_hint
from transferlab.errors import TransferlabError

__all__ = ["hold_out_indices", "stratified_split", "take_per_class"]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split example indices into training and validation sets that keep the class proportions.

    The validation set gets ``round(fraction * N)`` examples, chosen by scikit-learn's ``train_test_split`` with
    ``stratify``. Every class keeps at least one training example: a class with a single example goes to training
    only (with a warning), and a class the proportional split would leave without training examples gets one back
    from validation (so the validation set can be a little smaller than asked).

    Args:
        labels: ``(N,)`` class labels, e.g. ``ImageData.labels``.
        fraction: share of the examples that go to validation, strictly between 0 and 1.
        seed: random seed; the same labels, fraction and seed give the same split.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 index arrays that together hold every index ``0..N-1`` once.

    Raises:
        TransferlabError: no labels, ``fraction`` out of range, or too few examples for a validation set with every
            class stratified and one training example per class left.
    """
    labels = _checked_labels(labels, "stratified_split")
    _check_fraction(fraction)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    single = counts[inverse] == 1
    if np.any(single):
        names = ", ".join(str(label) for label in classes[counts == 1])
        warnings.warn(f"class(es) {names} have a single example; it stays in the training set", stacklevel=2)
    splittable = np.flatnonzero(~single)
    n_classes = int(np.sum(counts > 1))
    n_total = len(labels)
    n_val = max(1, round(fraction * n_total))
    if n_classes == 0:
        raise TransferlabError(f"cannot make a validation set from {n_total} examples: every class has one example")
    if n_val < n_classes:
        raise TransferlabError(
            f"validation fraction {fraction} of {n_total} examples gives {n_val} validation examples, fewer than the "
            f"{n_classes} classes to stratify; use a fraction of at least {n_classes / n_total:.3g}"
        )
    if n_val > len(splittable) - n_classes:
        raise TransferlabError(
            f"validation fraction {fraction} of {n_total} examples leaves fewer training examples than the "
            f"{n_classes} classes; use a smaller fraction"
        )
    train, val = train_test_split(splittable, test_size=n_val, stratify=labels[splittable], random_state=seed)
    train, val = _one_training_example_per_class(train, val, labels)
    train = np.concatenate([train, np.flatnonzero(single)])
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


def hold_out_indices(count: int, fraction: float, seed: int, strata: np.ndarray | None = None,
                     what: str = "examples") -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)`` for a validation hold-out of ``round(fraction * count)`` examples (at least one).

    With ``strata`` (``(count,)`` class labels) the split is `stratified_split`; without, a seeded random choice
    that leaves at least one training example. Every method's validation split goes through here.

    Args:
        count: how many examples there are; indices run ``0..count-1``.
        fraction: share of the examples that go to validation, strictly between 0 and 1.
        seed: random seed; the same arguments give the same split.
        strata: ``(count,)`` class labels to stratify by, or ``None`` for a random hold-out.
        what: what the examples are, for messages (e.g. ``"texts"`` or ``"examples in train.csv"``).

    Returns:
        ``(train_idx, val_idx)``: sorted int64 index arrays that together hold every index ``0..count-1`` once.

    Raises:
        TransferlabError: ``fraction`` out of range, fewer than two examples (``what`` names them in the message),
            or a stratified split that cannot be made.
    """
    if strata is not None:
        return stratified_split(strata, fraction, seed)
    _check_fraction(fraction)
    if count < 2:
        raise TransferlabError(f"{count} {what}: too few to hold out validation data; give validation data with "
                               f"{setting_hint('val', 'SPEC')}")
    n_val = min(count - 1, max(1, round(count * fraction)))
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)


def take_per_class(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Pick ``n`` examples of every class at random: the labeled subset of an n-shot experiment.

    A class with fewer than ``n`` examples keeps all of them, and one warning names every such class with its
    count; the result then holds fewer than ``n`` times the number of classes.

    Args:
        labels: ``(N,)`` class labels, e.g. ``ImageData.labels``.
        n: examples to keep per class (at least 1).
        seed: random seed; the same labels, n and seed give the same indices.

    Returns:
        Sorted int64 indices into ``labels``.

    Raises:
        TransferlabError: no labels, or ``n`` is not a positive integer.
    """
    labels = _checked_labels(labels, "take_per_class")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise TransferlabError(f"examples per class must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    chosen, short = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < n:
            short.append(f"{label} ({len(members)})")
            chosen.append(members)
        else:
            chosen.append(rng.choice(members, size=n, replace=False))
    if short:
        warnings.warn(
            f"fewer than {n} examples in class(es) {', '.join(short)}; keeping all of them", stacklevel=2
        )
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _check_fraction(fraction: float) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
        raise TransferlabError(f"validation fraction must be strictly between 0 and 1, got {fraction!r}")


def _checked_labels(labels: np.ndarray | None, caller: str) -> np.ndarray:
    if labels is None:
        raise TransferlabError(f"{caller} needs labeled data, but the labels are None")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise TransferlabError(f"{caller} needs a non-empty 1-D array of labels, got shape {labels.shape}")
    return labels


def _one_training_example_per_class(train: np.ndarray, val: np.ndarray, labels: np.ndarray):
    """Move one validation example back to training for each class that has none in training."""
    missing = np.setdiff1d(labels[val], labels[train])
    if missing.size == 0:
        return train, val
    moved = np.array([val[np.flatnonzero(labels[val] == label)[0]] for label in missing])
    return np.concatenate([train, moved]), np.setdiff1d(val, moved)
