"""COCO JSON: ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations`` (``image_id``,
``category_id``, ``bbox`` as ``[x, y, width, height]`` in pixels, ``iscrowd``) and ``categories`` (``id``,
``name``).

Where the files are: ``annotations/*.json`` (COCO's own ``instances_train2017.json``, CVAT's
``instances_default.json``) or JSON files in the folder itself (Roboflow's ``_annotations.coco.json``), or one JSON
file given directly. A file's split comes from its name (``train``, ``val``/``valid``, ``test``), else ``"all"``.
Images are looked up, relative to ``file_name``, beside the JSON file, in ``images/``, in a folder named like the
file (``val2017/`` for ``instances_val2017.json``), and in the dataset folder.

Category ids become class indices in id order (so ids need not be contiguous); names come from the categories.
``iscrowd`` boxes are kept as difficult. Images without annotations are negatives.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from transferlab.data.detection.records import ImageRecord
from transferlab.errors import TransferlabError

__all__ = ["is_coco_file", "coco_files", "read_coco"]

_SPLIT_WORD = re.compile(r"(?:^|[^a-z])(train|valid|val|test)(?![a-z])")
_SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "test": "test"}
_KEYS = ("images", "annotations", "categories")


def is_coco_file(path: Path) -> bool:
    """Whether ``path`` is a JSON file whose start names COCO's ``images`` and ``annotations`` (read cheaply)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as file:
        head = file.read(1 << 20)
    return '"images"' in head and ('"annotations"' in head or '"categories"' in head)


def coco_files(folder: Path) -> list[Path]:
    """The COCO JSON files of a dataset folder: in ``annotations/``, else in the folder itself."""
    for place in (folder / "annotations", folder):
        if place.is_dir():
            files = sorted(path for path in place.glob("*.json") if is_coco_file(path))
            if files:
                return files
    return []


def read_coco(location: Path) -> tuple[list[str], dict[str, list[ImageRecord]]]:
    """Class names and the records of each split of a COCO dataset folder or JSON file.

    Raises:
        TransferlabError: no COCO file, a file that does not parse (file and line) or lacks a field, an
            annotation naming an image or category the file does not have, an image not found, two files for one
            split, or categories whose ids and names disagree between files.
    """
    files = [location] if location.is_file() else coco_files(location)
    if not files:
        raise TransferlabError(f"no COCO JSON file in {location} or {location / 'annotations'} (expected a .json file "
                               "with 'images', 'annotations' and 'categories')")
    categories: dict[int, str] = {}
    splits: dict[str, list[ImageRecord]] = {}
    origin: dict[str, Path] = {}
    for path in files:
        split = _split_of(path)
        if split in splits:
            raise TransferlabError(f"{origin[split]} and {path} are both split {split!r}; name the files after their "
                                   "split (train, val, test) or give one of them as coco:FILE")
        content = _parse(path)
        file_categories = _categories(content, path)
        for category_id, name in file_categories.items():
            if categories.setdefault(category_id, name) != name:
                raise TransferlabError(f"{path} names category id {category_id} {name!r}, but another file of the "
                                       f"dataset names it {categories[category_id]!r}")
        splits[split], origin[split] = _records(content, file_categories, path, _image_folders(path, location)), path
    names = [categories[category_id] for category_id in sorted(categories)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TransferlabError(f"{files[0]}: category name {duplicates[0]!r} has several ids; expected one id per name")
    return names, {split: splits[split] for split in sorted(splits, key=_split_order)}


def _split_of(path: Path) -> str:
    match = _SPLIT_WORD.search(path.stem.lower())
    if match is None and path.parent.name.lower() in _SPLIT_NAMES:  # Roboflow: train/_annotations.coco.json
        return _SPLIT_NAMES[path.parent.name.lower()]
    return _SPLIT_NAMES[match.group(1)] if match else "all"


def _split_order(split: str) -> int:
    return ("train", "val", "test", "all").index(split)


def _parse(path: Path) -> dict:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TransferlabError(f"cannot parse {path} (line {exc.lineno}, column {exc.colno}): not valid JSON "
                               f"({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise TransferlabError(f"cannot read {path}: not UTF-8 text ({exc.reason})") from None
    missing = [key for key in _KEYS if not isinstance(content, dict) or not isinstance(content.get(key), list)]
    if missing:
        raise TransferlabError(f"{path} is not COCO detection JSON: no list {missing[0]!r}; expected an object with "
                               f"lists {', '.join(repr(key) for key in _KEYS)}")
    return content


def _categories(content: dict, path: Path) -> dict[int, str]:
    categories = {}
    for number, category in enumerate(content["categories"], start=1):
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or not category.get("name"):
            raise TransferlabError(f"{path}: category {number} ({str(category)[:80]}) needs an integer 'id' and a "
                                   "'name'")
        categories[category["id"]] = str(category["name"])
    return categories


def _image_folders(path: Path, location: Path) -> list[Path]:
    """Where the images of COCO file ``path`` may be (see the module docstring)."""
    root = location if location.is_dir() else path.parent
    if path.parent.name == "annotations":
        root = path.parent.parent
    named = path.stem.split("_")[-1]
    candidates = [path.parent, root / "images", root / named, root / "images" / named, root]
    return list(dict.fromkeys(folder for folder in candidates if folder.is_dir()))


def _records(content: dict, categories: dict[int, str], path: Path, folders: list[Path]) -> list[ImageRecord]:
    images: dict[object, dict] = {}
    for number, image in enumerate(content["images"], start=1):
        if not isinstance(image, dict) or "id" not in image or not image.get("file_name"):
            raise TransferlabError(f"{path}: image {number} ({str(image)[:80]}) needs an 'id' and a 'file_name'")
        images[image["id"]] = image
    objects: dict[object, list[dict]] = {image_id: [] for image_id in images}
    for number, annotation in enumerate(content["annotations"], start=1):
        if not isinstance(annotation, dict):
            raise TransferlabError(f"{path}: annotation {number} is not an object: {str(annotation)[:80]}")
        label = f"annotation id {annotation.get('id', f'? (number {number})')}"
        if annotation.get("image_id") not in images:
            raise TransferlabError(f"{path}: {label} names image id {annotation.get('image_id')!r}, which is not in "
                                   "its 'images'")
        if annotation.get("category_id") not in categories:
            raise TransferlabError(f"{path}: {label} names category id {annotation.get('category_id')!r}; the "
                                   f"categories are {', '.join(f'{k} ({v})' for k, v in categories.items())}")
        objects[annotation["image_id"]].append({**annotation, "_label": label})
    records = [_record(image, objects[image_id], categories, path, folders) for image_id, image in images.items()]
    return sorted(records, key=lambda record: str(record.image))


def _record(image: dict, objects: list[dict], categories: dict[int, str], path: Path, folders: list[Path]
            ) -> ImageRecord:
    found = next((folder / image["file_name"] for folder in folders if (folder / image["file_name"]).is_file()), None)
    if found is None:
        raise TransferlabError(f"{path} names image {image['file_name']!r} (image id {image['id']}), which is not in "
                               f"{' or '.join(str(folder) for folder in folders) or path.parent}")
    boxes = []
    for annotation in objects:
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise TransferlabError(f"{path}: {annotation['_label']} has bbox {bbox!r}; expected [x, y, width, height] "
                                   "in pixels")
        x, y, width, height = (float(v) for v in bbox)
        boxes.append([x, y, x + width, y + height])
    width, height = image.get("width"), image.get("height")
    recorded = (int(width), int(height)) if isinstance(width, int) and isinstance(height, int) and width > 0 else None
    return ImageRecord(
        image=found, annotation=path, boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        names=[categories[annotation["category_id"]] for annotation in objects],
        difficult=np.array([bool(annotation.get("iscrowd", 0)) for annotation in objects], dtype=bool),
        where=[annotation["_label"] for annotation in objects], recorded_size=recorded,
    )
