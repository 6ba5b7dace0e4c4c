"""Folders of image or audio files: one class per sub-folder, ``train/``, ``val/`` and ``test/`` split folders each
holding class sub-folders, or loose files (unlabeled data)."""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path

from transferlab.data.class_names import sort_class_names
from transferlab.data.formats.files import (
    EXAMPLE_EXTENSIONS,
    Items,
    example_files_below,
    file_examples,
    is_example_name,
)
from transferlab.data.formats.request import SPLITS, LoadRequest, SplitLoader
from transferlab.errors import TransferlabError

__all__ = ["folder_loaders", "visible_subfolders"]


def folder_loaders(root: Path, request: LoadRequest) -> dict[str, SplitLoader]:
    """One loader per split of folder ``root``: its ``train``/``val``/``test`` sub-folders if it has ``train/``,
    else ``"all"``. Class names are shared by the splits (sorted over all of them).

    A single class folder is labeled data of one class (fine to evaluate on; training refuses it).

    Raises:
        TransferlabError: a folder without example files, or mixing loose files with class sub-folders (the message
            names the folder).
    """
    names = [folder.name for folder in visible_subfolders(root)]
    if "train" in names:
        ignored = sorted(set(names) - set(SPLITS))
        if ignored:
            warnings.warn(f"{root}: ignoring folders {ignored} beside the split folders train/, val/, test/")
        scans = {split: _scan_folder(root / split) for split in SPLITS if split in names}
    else:
        scans = {"all": _scan_folder(root)}
    classes = sort_class_names(label for items in scans.values() for _, label in items if label is not None)
    loaders = {}
    for split, items in scans.items():
        labeled = items[0][1] is not None
        loaders[split] = partial(file_examples, items, classes if labeled else [], split, request)
    return loaders


def visible_subfolders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` that are not hidden, sorted."""
    return sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))


def _scan_folder(folder: Path) -> Items:
    """List a folder's examples: one class per visible sub-folder, or unlabeled files if it has no sub-folders."""
    subfolders = visible_subfolders(folder)
    loose = sorted(path for path in folder.iterdir() if path.is_file() and is_example_name(path.name))
    if not subfolders:
        if not loose:
            raise TransferlabError(
                f"no images or audio files in {folder}: expected class sub-folders or files ending in "
                f"{' '.join(EXAMPLE_EXTENSIONS)}"
            )
        return [(path, None) for path in loose]
    if loose:
        raise TransferlabError(
            f"{folder} holds both example files (e.g. {loose[0].name!r}) and sub-folders; put every file in a "
            "class sub-folder, or remove the sub-folders for unlabeled data"
        )
    items: Items = []
    for subfolder in subfolders:
        files = example_files_below(subfolder)
        if not files:
            raise TransferlabError(
                f"class folder {subfolder} holds no images or audio (expected files ending in "
                f"{' '.join(EXAMPLE_EXTENSIONS)})"
            )
        items += [(path, subfolder.name) for path in files]
    return items
