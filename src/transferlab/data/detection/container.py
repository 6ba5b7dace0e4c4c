"""`DetectionData`: images with boxes, one domain, backed by files; and `align_detection_classes`, which puts
validation or test data in the training data's class order."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transferlab.data.digests import file_digest
from transferlab.data.image_data import (
    DECODING,
    DOMAINS,
    ImageReadError,
    max_image_pixels,
    open_image,
)
from transferlab.data.image_modes import to_model_mode
from transferlab.errors import TransferlabError

__all__ = ["DETECTION_DECODING", "DetectionData", "align_detection_classes"]

# how a detection image's bytes become pixels: classification's decoding, after EXIF orientation is applied (so a
# cache keyed on `DetectionData.content_digest` never mixes the two)
DETECTION_DECODING = DECODING + b"exif orientation applied\n"

_PER_IMAGE = ("paths", "sizes", "boxes", "labels", "difficult")


@dataclass
class DetectionData:
    """Images of one domain with their objects' boxes; an image may have none (a negative).

    Coordinates are pixels of the image as displayed, i.e. after its EXIF orientation is applied (what
    `load_image` returns), ``x1 <= x < x2`` and ``y1 <= y < y2`` with ``0 <= x1 < x2 <= width`` and
    ``0 <= y1 < y2 <= height``.

    Attributes:
        name: where the data came from (the spec the user gave, with ``@split``), for messages and reports.
        classes: class names; ``labels`` index into it (0-based, no background class).
        paths: image files, one per image.
        sizes: ``(width, height)`` of each image as displayed (EXIF orientation applied).
        boxes: per image, ``(n, 4)`` float32 ``x1, y1, x2, y2`` in pixels.
        labels: per image, ``(n,)`` int64 class indices.
        difficult: per image, ``(n,)`` bool: VOC ``<difficult>1</difficult>`` or COCO ``iscrowd``; such boxes are
            neither matched nor missed when evaluating, as in VOC and COCO evaluation.
        domain: ``"source"`` or ``"target"``.
        max_image_pixels: files with more pixels are refused before decoding; ``None``: `max_image_pixels()`.
    """

    name: str
    classes: list[str]
    paths: list[Path]
    sizes: list[tuple[int, int]]
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    difficult: list[np.ndarray]
    domain: str = "target"
    max_image_pixels: int | None = None
    _digests: dict[int, str] = field(default_factory=dict, repr=False, compare=False)
    noun = "images"

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {self.domain!r}")
        count = len(self.paths)
        for name in _PER_IMAGE[1:]:
            if len(getattr(self, name)) != count:
                raise ValueError(f"{len(getattr(self, name))} {name} for {count} images in {self.name}")
        self.boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in self.boxes]
        self.labels = [np.asarray(v, dtype=np.int64).reshape(-1) for v in self.labels]
        self.difficult = [np.asarray(v, dtype=bool).reshape(-1) for v in self.difficult]
        for index, (boxes, labels, difficult) in enumerate(zip(self.boxes, self.labels, self.difficult, strict=True)):
            if not len(boxes) == len(labels) == len(difficult):
                raise ValueError(f"image {self.paths[index]} has {len(boxes)} boxes, {len(labels)} labels and "
                                 f"{len(difficult)} difficult flags in {self.name}")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def has_labels(self) -> bool:
        return True

    @property
    def box_count(self) -> int:
        """How many boxes all images hold together."""
        return sum(len(boxes) for boxes in self.boxes)

    def describe(self) -> str:
        """One line: ``"raccoon: 200 images (0 without objects), 217 boxes (0 difficult), 1 class, target domain"``."""
        negatives = sum(len(boxes) == 0 for boxes in self.boxes)
        difficult = sum(int(flags.sum()) for flags in self.difficult)
        classes = f"{len(self.classes)} class{'es' if len(self.classes) != 1 else ''}"
        return (f"{self.name}: {len(self)} images ({negatives} without objects), {self.box_count} boxes "
                f"({difficult} difficult), {classes}, {self.domain} domain")

    def subset(self, indices) -> DetectionData:
        """The images at ``indices`` (in that order), with their boxes."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        return replace(self, _digests={}, **{name: [getattr(self, name)[i] for i in indices] for name in _PER_IMAGE})

    def load_image(self, index: int, max_size: int | None = None) -> Image.Image:
        """Image ``index`` as an 8-bit RGB PIL image, EXIF orientation applied (the frame its boxes refer to).

        Grayscale, transparent and high-bit-depth images become RGB as for classification
        (`transferlab.data.image_modes`: transparency composited on white, 16-bit scaled).

        Args:
            index: which image.
            max_size: when given, a JPEG may be decoded at a reduced scale (PIL draft mode) that keeps its longer
                side at least ``max_size`` pixels; scale the boxes by the returned size over ``sizes[index]``.

        Raises:
            ImageReadError: the file is missing, unreadable or above the pixel limit; the message names it.
        """
        path = self.paths[index]
        try:
            with open_image(path, max_image_pixels(self.max_image_pixels)) as image:
                if max_size is not None and image.format == "JPEG":
                    image.draft("RGB", _draft_request(image.size, max_size))
                image.load()
                image = ImageOps.exif_transpose(image)
        except ImageReadError:
            raise
        except FileNotFoundError:
            raise ImageReadError(f"image file not found: {path}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageReadError(f"cannot read image {path}: {exc}") from None
        return to_model_mode(image, "RGB")

    def content_digest(self, index: int) -> str:
        """SHA-1 of the image file's bytes and of `DETECTION_DECODING` (the image only, not its boxes)."""
        return file_digest(self._digests, index, self.paths[index], tag=DETECTION_DECODING, error=ImageReadError,
                           noun="image")


def _draft_request(size: tuple[int, int], max_size: int) -> tuple[int, int]:
    """The size to ask PIL's draft for so that the longer side stays at least ``max_size``."""
    scale = min(1.0, max_size / max(size))
    return max(1, int(size[0] * scale)), max(1, int(size[1] * scale))


def align_detection_classes(train: DetectionData, other: DetectionData) -> DetectionData:
    """``other`` (validation or test data) with its labels in ``train``'s class order, matched by name.

    Raises:
        TransferlabError: ``other`` has a box of a class that no box of ``train`` has; the message names the class
            and a file of ``other`` that has it.
    """
    seen = {train.classes[label] for labels in train.labels for label in labels}
    for path, labels in zip(other.paths, other.labels, strict=True):
        unseen = sorted({other.classes[label] for label in labels} - seen)
        if unseen:
            known = ", ".join(name for name in train.classes if name in seen) or "none"
            raise TransferlabError(
                f"{path} (in {other.name}) has a box of class {unseen[0]!r}, which the training data "
                f"{train.name} never shows (classes with boxes there: {known})"
            )
    if other.classes == train.classes:
        return other
    position = np.array([train.classes.index(name) if name in train.classes else -1 for name in other.classes],
                        dtype=np.int64)
    labels = [position[labels] if len(labels) else labels for labels in other.labels]
    return replace(other, classes=list(train.classes), labels=labels, _digests=dict(other._digests))
