"""Error types for mistakes a user can fix: the command line prints these in one line, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["TransferlabError", "suggest"]


class TransferlabError(ValueError):
    """A problem with the user's input (a path, a value, a file), stated so the user can fix it."""


def suggest(value: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ``" (did you mean 'x'?)"`` hint naming the closest valid choices, or ``""`` when none is close."""
    close = difflib.get_close_matches(value, list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
