"""PASCAL VOC: one XML file per image (``<filename>``, ``<size>``, ``<object>`` with ``<name>``, ``<difficult>``,
``<bndbox>``), in ``annotations/`` beside ``images/`` or in VOC's own ``Annotations/`` beside ``JPEGImages/``.

``ImageSets/Main/train.txt``, ``val.txt`` and ``test.txt`` (one image id a line), when present, give the splits;
otherwise every XML file is in split ``"all"``, and images that no XML file names are negatives (images without
objects; LabelImg writes no file for them).

Coordinates are read as written, as the pixel edges of the box: CVAT and Roboflow write them so; VOC's own
1-based integer convention is within a pixel of it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from transferlab.data.detection.records import ImageRecord
from transferlab.data.formats.files import IMAGE_EXTENSIONS, is_example_name
from transferlab.data.formats.request import SPLITS
from transferlab.errors import TransferlabError

__all__ = ["ANNOTATION_FOLDERS", "IMAGE_FOLDERS", "is_voc_folder", "read_voc"]

ANNOTATION_FOLDERS = ("annotations", "Annotations")
IMAGE_FOLDERS = ("images", "JPEGImages")
_COORDINATES = ("xmin", "ymin", "xmax", "ymax")


def is_voc_folder(folder: Path) -> bool:
    """Whether ``folder`` has an annotations folder holding XML files."""
    return _annotation_folder(folder) is not None


def read_voc(folder: Path) -> tuple[None, dict[str, list[ImageRecord]]]:
    """The records of each split of a VOC folder (class names: ``None``, the union of the names used).

    Raises:
        TransferlabError: no image folder, an XML file that does not parse (file and line) or lacks a field, an
            image it names that does not exist, an id in an ImageSets list without its XML file.
    """
    annotations = _annotation_folder(folder)
    if annotations is None:
        raise TransferlabError(f"{folder} has no annotations/ (or Annotations/) folder of XML files: not PASCAL VOC")
    images = next((folder / name for name in IMAGE_FOLDERS if (folder / name).is_dir()), None)
    if images is None:
        raise TransferlabError(f"{folder} has annotations but no image folder; expected {' or '.join(IMAGE_FOLDERS)}/")
    lists = folder / "ImageSets" / "Main"
    split_lists = {split: lists / f"{split}.txt" for split in SPLITS if (lists / f"{split}.txt").is_file()}
    if split_lists:
        return None, {split: [_read_xml(xml, images) for xml in _listed_xml(path, annotations)]
                      for split, path in split_lists.items()}
    records = [_read_xml(xml, images) for xml in sorted(annotations.glob("*.xml"))]
    named = {record.image.resolve() for record in records}
    negatives = [
        ImageRecord(image=path, annotation=path, boxes=np.zeros((0, 4)), names=[], difficult=np.zeros(0, bool),
                    where=[])
        for path in sorted(images.iterdir()) if is_example_name(path.name) and path.resolve() not in named
        and path.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return None, {"all": sorted(records + negatives, key=lambda record: str(record.image))}


def _annotation_folder(folder: Path) -> Path | None:
    for name in ANNOTATION_FOLDERS:
        candidate = folder / name
        if candidate.is_dir() and any(candidate.glob("*.xml")):
            return candidate
    return None


def _listed_xml(listing: Path, annotations: Path) -> list[Path]:
    """The XML files of the image ids in an ImageSets list."""
    files = []
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
        image_id = line.split()[0] if line.split() else ""
        if not image_id:
            continue
        xml = annotations / f"{image_id}.xml"
        if not xml.is_file():
            raise TransferlabError(f"{listing} line {number} names image {image_id!r}, but {xml} does not exist")
        files.append(xml)
    return files


def _read_xml(xml: Path, images: Path) -> ImageRecord:
    """One VOC annotation file as a record."""
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        line, column = exc.position
        raise TransferlabError(f"cannot parse {xml} (line {line}, column {column + 1}): not valid XML "
                               f"({str(exc).split(':')[0]})") from None
    if root.tag != "annotation":
        raise TransferlabError(f"{xml} is not a PASCAL VOC annotation: its root element is <{root.tag}>, expected "
                               "<annotation>")
    boxes, names, difficult, where = [], [], [], []
    for number, obj in enumerate(root.findall("object"), start=1):
        place = f"object {number}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise TransferlabError(f"{xml}: {place} has no <name>; expected its class name")
        box = obj.find("bndbox")
        if box is None:
            raise TransferlabError(f"{xml}: {place} ({name!r}) has no <bndbox>; expected xmin, ymin, xmax, ymax")
        boxes.append([_number(box, key, xml, f"{place} ({name!r})") for key in _COORDINATES])
        names.append(name)
        difficult.append((obj.findtext("difficult") or "0").strip().lower() in ("1", "true"))
        where.append(place)
    return ImageRecord(image=_image_file(root, xml, images), annotation=xml,
                       boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4), names=names,
                       difficult=np.array(difficult, dtype=bool), where=where, recorded_size=_recorded_size(root, xml))


def _number(element: ET.Element, key: str, xml: Path, place: str) -> float:
    text = (element.findtext(key) or "").strip()
    try:
        return float(text)
    except ValueError:
        shown = f"{text!r}" if text else "missing"
        raise TransferlabError(f"{xml}: {place} <{key}> is {shown}; expected a number of pixels") from None


def _recorded_size(root: ET.Element, xml: Path) -> tuple[int, int] | None:
    """The ``<size>`` the file records, or ``None`` when it has none (or zeros, as some tools write)."""
    size = root.find("size")
    if size is None or not (size.findtext("width") or "").strip():
        return None
    width, height = (_number(size, key, xml, "<size>") for key in ("width", "height"))
    return (int(width), int(height)) if width > 0 and height > 0 else None


def _image_file(root: ET.Element, xml: Path, images: Path) -> Path:
    """The image ``<filename>`` names in the image folder (the XML file's name with an image extension when the
    filename is missing or has no extension)."""
    filename = (root.findtext("filename") or "").strip()
    stem = Path(filename).name if filename else xml.stem
    candidates = [images / stem] if Path(stem).suffix else []
    candidates += [images / f"{stem}{extension}" for extension in IMAGE_EXTENSIONS if not Path(stem).suffix]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise TransferlabError(f"{xml} names image {filename or stem!r}, which is not in {images}")
    return found
