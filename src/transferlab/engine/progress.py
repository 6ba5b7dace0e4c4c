"""Progress bars that suit where the output goes: drawn on a terminal, absent in a file or CI log (where the loop's
one line per epoch and the commands' summaries say what happened, instead of thousands of carriage-return frames)."""

from __future__ import annotations

from tqdm.auto import tqdm

from transferlab.engine.distributed import is_main_process

__all__ = ["progress_bar"]


def progress_bar(iterable=None, *, enabled: bool, **options) -> tqdm:
    """``tqdm(iterable, **options)`` shown only when ``enabled``, on the main process, and stderr is a terminal."""
    return tqdm(iterable, leave=False, disable=None if enabled and is_main_process() else True, **options)
