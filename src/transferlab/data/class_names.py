"""Class names as every data format orders them (sorted, by value when they are all integers), and the one check
that labeled data can train a classifier."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from transferlab.errors import TransferlabError

__all__ = ["sort_class_names", "require_two_classes"]


def sort_class_names(names: Iterable[str]) -> list[str]:
    """Sorted unique class names; names that are all integers sort by value ("2" before "10").

    Args:
        names: class names, repeats allowed (e.g. one per example).

    Returns:
        Each name once, so that digit classes come out ``"0"`` to ``"9"`` and ``"10"`` after ``"9"``.
    """
    names = set(names)
    if all(name.isascii() and name.isdigit() for name in names):
        return sorted(names, key=lambda name: (int(name), name))
    return sorted(names)


def require_two_classes(data, role: str):
    """``data`` (labeled `ImageData`, `TextData` or `AudioData`) if it has examples of at least two classes, as
    training a classifier needs; data of one class loads fine, for evaluation.

    Raises:
        TransferlabError: examples of a single class; the message names the data, its ``role`` and the class.
    """
    present = np.unique(data.labels)
    if len(present) < 2:
        only = f" ({data.classes[present[0]]!r})" if len(present) else ""
        raise TransferlabError(f"{role} data {data.name} has examples of a single class{only}; training a classifier "
                               "needs at least two classes (evaluating on one class is fine)")
    return data
