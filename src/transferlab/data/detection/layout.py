"""Recognising detection data: the grammar of a detection data spec, ``[voc:|coco:|yolo:]location[@split]``, and
which format a folder or file holds, from its layout alone (nothing but folder listings and, for a JSON file, its
first megabyte is read)."""

from __future__ import annotations

import re
from pathlib import Path

from transferlab.data.detection.coco import coco_files, is_coco_file
from transferlab.data.detection.voc import is_voc_folder
from transferlab.data.detection.yolo import is_yolo_folder
from transferlab.data.formats.request import SPLITS
from transferlab.errors import TransferlabError, suggest

__all__ = ["DETECTION_KINDS", "SPLIT_FOLDERS", "detect_format", "is_detection_spec", "parse_detection_spec",
           "split_folders", "FORMAT_LAYOUTS"]

DETECTION_KINDS = ("voc", "coco", "yolo")

# the layout of each format, as messages describe it
FORMAT_LAYOUTS = {
    "voc": "PASCAL VOC: images/ + annotations/*.xml, or JPEGImages/ + Annotations/",
    "coco": "COCO: annotations/*.json (or a .json file) + the images",
    "yolo": "YOLO: images/ + labels/*.txt + data.yaml or classes.txt",
}

# split folder name -> split (Roboflow names its validation folder valid/)
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "test": "test"}

_SPLIT_SELECTORS = SPLITS + ("all",)
_KIND_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9_-]+):(.*)", re.DOTALL)


def detect_format(path: Path) -> str | None:
    """``"voc"``, ``"coco"`` or ``"yolo"`` for a folder (or COCO JSON file) laid out as that format, also when
    the layout is repeated in ``train/``, ``val/`` (``valid/``), ``test/`` split folders; else ``None``."""
    path = Path(path).expanduser()
    if path.is_file():
        return "coco" if is_coco_file(path) else None
    if not path.is_dir():
        return None
    if is_voc_folder(path):
        return "voc"
    if coco_files(path):
        return "coco"
    if is_yolo_folder(path):
        return "yolo"
    for folder in split_folders(path).values():
        found = detect_format(folder)
        if found is not None:
            return found
    return None


def split_folders(folder: Path) -> dict[str, Path]:
    """The split folders of ``folder`` (``train/``, ``val/`` or ``valid/``, ``test/``), by split, in that order."""
    found = {}
    for name, split in SPLIT_FOLDERS.items():
        if (folder / name).is_dir() and split not in found:
            found[split] = folder / name
    return found


def is_detection_spec(spec: str) -> bool:
    """Whether a data spec names detection data: a ``voc:``, ``coco:`` or ``yolo:`` kind, or a location laid out
    as one of them (`detect_format`). Never raises; a spec that does not parse is not detection data."""
    try:
        _, kind, location, _ = parse_detection_spec(spec)
    except TransferlabError:
        return False
    return kind is not None or detect_format(Path(location)) is not None


def parse_detection_spec(spec: str) -> tuple[str, str | None, str, str | None]:
    """``(base, kind, location, split)`` of a detection data spec; ``kind`` is ``None`` for a plain path.

    Raises:
        TransferlabError: an empty spec, an unknown split or an unknown kind (the message names the valid ones).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise TransferlabError(f"empty data spec {spec!r}; expected [voc:|coco:|yolo:]location[@split]")
    base, split = spec, None
    if "@" in spec and not _exists(spec):
        head, _, tail = spec.rpartition("@")
        if "/" not in tail and "\\" not in tail:
            if tail not in _SPLIT_SELECTORS:
                raise TransferlabError(f"unknown split {tail!r} in data spec {spec!r}{suggest(tail, _SPLIT_SELECTORS)}; "
                                       f"expected one of: {', '.join(_SPLIT_SELECTORS)}")
            base, split = head, tail
    if _exists(base):
        return base, None, base, split
    match = _KIND_PREFIX.fullmatch(base)
    if match:
        kind = match.group(1)
        if kind not in DETECTION_KINDS:
            raise TransferlabError(f"unknown detection data kind {kind!r} in {spec!r}{suggest(kind, DETECTION_KINDS)}; "
                                   f"expected one of: {', '.join(DETECTION_KINDS)}, or a plain folder or .json path")
        return base, kind, match.group(2), split
    return base, None, base, split


def _exists(path: str) -> bool:
    return bool(path) and Path(path).expanduser().exists()
