"""Class names as every data format orders them: sorted, by value when they are all integers."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["sort_class_names"]


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
