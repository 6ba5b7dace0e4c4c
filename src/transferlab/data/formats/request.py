"""What every format's loaders share: the load request (name, domain, bad-file policy), the split names, one
place that runs the loaders and warns once about the bad files they skipped, and the choice of one split."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from transferlab.data.examples import Examples
from transferlab.data.text_tables import TextColumns
from transferlab.errors import TransferlabError

__all__ = ["SPLITS", "LoadRequest", "SplitLoader", "run_loaders", "choose_split"]

SPLITS = ("train", "val", "test")

SplitLoader = Callable[[], Examples]


@dataclass
class LoadRequest:
    """What every loader needs besides its location.

    Attributes:
        base: the data spec without its ``@split`` suffix, used to name the data in messages and reports.
        domain: ``"source"`` or ``"target"``, stored on the loaded data.
        skip_bad_files: drop unreadable (or missing) files and warn once, instead of raising.
        columns: the text and label columns of text tables.
        max_image_pixels: image files with more pixels are bad files; ``None``: the environment's limit or the
            default (`transferlab.data.image_data.max_image_pixels`).
        skipped: the bad files skipped so far, filled in by the loaders.
    """

    base: str
    domain: str
    skip_bad_files: bool
    columns: TextColumns = field(default_factory=TextColumns)
    max_image_pixels: int | None = None
    skipped: list[Path] = field(default_factory=list)

    def name(self, split: str) -> str:
        """The name of one split of the data: the spec for ``"all"``, else ``spec@split``."""
        return self.base if split == "all" else f"{self.base}@{split}"


def run_loaders(loaders: dict[str, SplitLoader], splits: list[str], request: LoadRequest) -> dict[str, Examples]:
    """Call the loaders of ``splits`` in order; warn once, listing them, about the bad files they skipped."""
    data = {split: loaders[split]() for split in splits}
    if request.skipped:
        files = ", ".join(str(path) for path in request.skipped)
        warnings.warn(f"skipped {len(request.skipped)} bad file(s) in {request.base}: {files}", stacklevel=3)
    return data


def choose_split(base: str, available: list[str], preference: Iterable[str]) -> str:
    """The first of ``preference`` that is ``available``, else the only available split.

    Args:
        base: the data spec without ``@split``, for the message.
        available: the splits the data has.
        preference: split names in order of preference.

    Raises:
        TransferlabError: several splits and none preferred; the message names them and the ``@SPLIT`` syntax.
    """
    preference = tuple(preference)
    for split in preference:
        if split in available:
            return split
    if len(available) == 1:
        return available[0]
    raise TransferlabError(
        f"{base!r} has splits {', '.join(available)} but none of the wanted ones ({', '.join(preference)}); "
        f"pick one with '{base}@SPLIT'"
    )
