"""YOLO txt: ``images/`` and ``labels/`` side by side, ``labels/a/b.txt`` for ``images/a/b.jpg``, one object a line
as ``class cx cy w h`` (class index from 0, centre and size as fractions of the image's width and height; a
polygon ``class x1 y1 x2 y2 ...`` gives its bounding box).

Class names come from a ``data.yaml`` / ``dataset.yaml`` (``names`` as a list or as ``{index: name}``) or a
``classes.txt`` / ``obj.names`` (one name a line), in the dataset folder or in ``labels/``; else from another
``*.yaml`` there with ``names``. Splits:
``images/train/`` (``val/``, ``valid/``, ``test/``) with matching ``labels/`` folders, as Ultralytics lays them out;
otherwise one split ``"all"``. An image without a label file, or with an empty one, is a negative.

The fractions are turned into pixels of the image as displayed (EXIF orientation applied, as Ultralytics does),
whose size is read from the file's header without decoding it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from transferlab.data.detection.records import ImageRecord
from transferlab.data.formats.files import IMAGE_EXTENSIONS
from transferlab.errors import TransferlabError

__all__ = ["is_yolo_folder", "read_yolo", "yolo_class_names"]

_NAME_FILES = ("data.yaml", "dataset.yaml", "classes.txt", "obj.names")
_SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "test": "test"}


def is_yolo_folder(folder: Path) -> bool:
    """Whether ``folder`` has an ``images/`` folder and a ``labels/`` folder holding ``.txt`` files."""
    labels = folder / "labels"
    return (folder / "images").is_dir() and labels.is_dir() and next(labels.rglob("*.txt"), None) is not None


def read_yolo(folder: Path, names_folder: Path | None = None) -> tuple[list[str], dict[str, list[ImageRecord]]]:
    """Class names and the records of each split of a YOLO folder.

    Args:
        folder: the folder holding ``images/`` and ``labels/``.
        names_folder: another folder to look in for the class names (the dataset's root, when ``folder`` is one
            of its split folders).

    Raises:
        TransferlabError: no class names, a names file that does not parse, a label line that is not
            ``class cx cy w h`` or names a class index out of range (file and line), a label file without an image.
    """
    if not ((folder / "images").is_dir() and (folder / "labels").is_dir()):
        raise TransferlabError(f"{folder} has no images/ and labels/ folders side by side: not YOLO data")
    names = yolo_class_names(folder, names_folder)
    images, labels = folder / "images", folder / "labels"
    split_folders = {_SPLIT_FOLDERS[path.name]: path.name for path in sorted(images.iterdir())
                     if path.is_dir() and path.name in _SPLIT_FOLDERS}
    if split_folders:
        order = sorted(split_folders, key=("train", "val", "test").index)
        return names, {split: _records(images / split_folders[split], labels / split_folders[split], names)
                       for split in order}
    return names, {"all": _records(images, labels, names)}


def yolo_class_names(folder: Path, names_folder: Path | None = None) -> list[str]:
    """The class names of a YOLO dataset (see the module docstring for where they are looked for)."""
    places = [folder, folder / "labels"] + ([names_folder] if names_folder is not None else [])
    for place in places:
        for file_name in _NAME_FILES:
            path = place / file_name
            if path.is_file():
                return _yaml_names(path) if path.suffix == ".yaml" else _line_names(path)
        for path in sorted(place.glob("*.yaml")):  # another Ultralytics dataset file, e.g. coco128.yaml
            if _yaml_names(path, required=False):
                return _yaml_names(path)
    raise TransferlabError(f"no class names for YOLO data {folder}: expected {' or '.join(_NAME_FILES)} (in "
                           f"{folder} or {folder / 'labels'})")


def _line_names(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or not all(names):
        raise TransferlabError(f"{path} has {'an empty line' if names else 'no class names'}; expected one class "
                               "name a line")
    return names


def _yaml_names(path: Path, required: bool = True) -> list[str]:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise TransferlabError(f"cannot parse {path}{where}: not valid YAML "
                               f"({getattr(exc, 'problem', None) or exc})") from None
    names = content.get("names") if isinstance(content, dict) else None
    if isinstance(names, dict) and all(isinstance(key, int) for key in names):
        if sorted(names) != list(range(len(names))):
            raise TransferlabError(f"{path}: 'names' has indices {sorted(names)}; expected 0 to {len(names) - 1}")
        names = [names[index] for index in range(len(names))]
    if not required and not names:
        return []
    if not isinstance(names, list) or not names:
        raise TransferlabError(f"{path} has no 'names' list; expected e.g. names: [cat, dog] or names: {{0: cat}}")
    return [str(name) for name in names]


def _records(images: Path, labels: Path, names: list[str]) -> list[ImageRecord]:
    image_files = sorted(path for path in images.rglob("*")
                         if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."))
    expected = {labels / path.relative_to(images).with_suffix(".txt") for path in image_files}
    orphans = sorted(path for path in labels.rglob("*.txt") if path not in expected and path.name not in _NAME_FILES)
    if orphans:
        image = images / orphans[0].relative_to(labels).with_suffix(".jpg")
        raise TransferlabError(f"label file {orphans[0]} has no image (expected {image} or another image extension)")
    return [_record(path, labels / path.relative_to(images).with_suffix(".txt"), names) for path in image_files]


def _record(image: Path, label_file: Path, names: list[str]) -> ImageRecord:
    boxes, classes, where = [], [], []
    lines = label_file.read_text(encoding="utf-8").splitlines() if label_file.is_file() else []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(field) for field in fields]
        except ValueError:
            values = []
        odd_polygon = len(values) >= 7 and len(values) % 2 == 1
        if not (len(values) == 5 or odd_polygon) or values[0] != int(values[0]):
            raise TransferlabError(f"{label_file} line {number}: {line.strip()!r}; expected 'class cx cy w h' (a class "
                                   "index and four fractions of the image size)")
        index = int(values[0])
        if not 0 <= index < len(names):
            raise TransferlabError(f"{label_file} line {number}: class index {index}, but there are {len(names)} "
                                   f"class names ({', '.join(names)}); expected 0 to {len(names) - 1}")
        boxes.append(_corners(values[1:]))
        classes.append(names[index])
        where.append(f"line {number}")
    return ImageRecord(image=image, annotation=label_file if label_file.is_file() else image,
                       boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4), names=classes,
                       difficult=np.zeros(len(boxes), dtype=bool), where=where, normalized=True)


def _corners(values: list[float]) -> list[float]:
    """``x1, y1, x2, y2`` fractions of ``cx cy w h`` or of a polygon's points."""
    if len(values) == 4:
        cx, cy, width, height = values
        return [cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2]
    xs, ys = values[0::2], values[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]
