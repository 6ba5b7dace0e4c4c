"""What the VOC, COCO and YOLO readers share: one `ImageRecord` per annotated image, and `build_detection_data`,
which checks the images (header only), brings every box into the displayed image's pixel frame, clips, checks and
filters the boxes, and builds `DetectionData`.

Box rules (one place, every format):
    - a box that crosses the image border is clipped to the image; one warning per load counts them
      (`BoxReport.warn`);
    - a box reaching more than `OUTSIDE_MARGIN` of the image's width or height beyond the border, or lying wholly
      outside the image, is an error naming the file and the box (the annotation is for another image, or its
      coordinates are in another unit);
    - a box with zero or negative width or height (after clipping) is skipped; one warning names each file and box.

EXIF orientation: boxes refer to the image as displayed, with its EXIF orientation applied, which is what CVAT,
Roboflow (auto-orient) and Ultralytics YOLO (``exif_size``) assume. Some tools ignore the tag and label the stored
pixels (LabelImg, coco-annotator); for a 90-degree orientation (EXIF 5 to 8) this shows in the file: the size the
annotation records is the stored size, not the displayed one, and those boxes are then turned with the image. A
recorded size that matches neither is an error. (For a 180-degree turn or a mirror the two frames have the same
size; the boxes are taken as displayed.)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferlab.data.detection.container import DetectionData
from transferlab.data.formats.request import LoadRequest
from transferlab.data.hints import setting_hint
from transferlab.data.image_data import ImageReadError, max_image_pixels, open_image
from transferlab.errors import TransferlabError

__all__ = ["ImageRecord", "BoxReport", "build_detection_data", "OUTSIDE_MARGIN", "exif_boxes", "image_header"]

# how far (a share of the image's width or height) a box may reach beyond the border and still be clipped
OUTSIDE_MARGIN = 0.1

_ORIENTATION_TAG = 0x0112
_MAX_EXAMPLES = 5


@dataclass
class ImageRecord:
    """One image and its objects as an annotation file gives them.

    Attributes:
        image: the image file.
        annotation: the file that describes it (XML, JSON or TXT), named in messages.
        boxes: ``(n, 4)`` ``x1, y1, x2, y2``: pixels, or fractions of the displayed image's size when
            ``normalized`` (YOLO).
        names: the class name of each box.
        difficult: ``(n,)`` bool.
        where: each box's place in ``annotation`` for messages (``"object 2"``, ``"annotation id 17"``,
            ``"line 3"``).
        recorded_size: ``(width, height)`` the annotation records for the image, or ``None``.
        normalized: boxes are fractions of the image size.
    """

    image: Path
    annotation: Path
    boxes: np.ndarray
    names: list[str]
    difficult: np.ndarray
    where: list[str]
    recorded_size: tuple[int, int] | None = None
    normalized: bool = False


@dataclass
class BoxReport:
    """The boxes one load clipped or skipped, reported in one warning each (`warn`)."""

    clipped: int = 0
    clipped_example: str = ""
    skipped: list[str] = field(default_factory=list)

    def warn(self, name: str) -> None:
        if self.clipped:
            warnings.warn(f"clipped {self.clipped} box(es) that cross the image border to the image in {name} "
                          f"(e.g. {self.clipped_example})", stacklevel=3)
        if self.skipped:
            shown = "; ".join(self.skipped[:_MAX_EXAMPLES]) + ("; ..." if len(self.skipped) > _MAX_EXAMPLES else "")
            warnings.warn(f"skipped {len(self.skipped)} box(es) with zero or negative width or height in {name}: "
                          f"{shown}", stacklevel=3)


def image_header(path: Path, request: LoadRequest) -> tuple[tuple[int, int], int] | str:
    """``(stored (width, height), EXIF orientation)`` read from the file's header, or why it cannot be read."""
    try:
        limit = max_image_pixels(request.max_image_pixels)
        with open_image(path, limit) as image:  # PIL's verify must come first after opening: open it twice
            image.verify()
        with open_image(path, limit) as image:
            size = image.size
            orientation = int(image.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except ImageReadError as exc:
        return str(exc)
    except FileNotFoundError:
        return f"image file not found: {path}"
    except Exception as exc:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, struct.error) for a bad file
        return f"cannot read image {path}: {type(exc).__name__}: {exc}"
    return size, orientation if 1 <= orientation <= 8 else 1


def displayed_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The ``(width, height)`` of an image of stored ``size`` once its EXIF ``orientation`` is applied."""
    return (size[1], size[0]) if orientation >= 5 else size


def exif_boxes(boxes: np.ndarray, size: tuple[int, int], orientation: int) -> np.ndarray:
    """``(n, 4)`` xyxy boxes of a stored image of ``size`` in the frame of the image PIL's ``exif_transpose``
    makes of it (EXIF ``orientation`` 1 to 8)."""
    width, height = size
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    corners = {  # (new x of the two corners, new y of the two corners)
        1: ((x1, x2), (y1, y2)),
        2: ((width - x2, width - x1), (y1, y2)),
        3: ((width - x2, width - x1), (height - y2, height - y1)),
        4: ((x1, x2), (height - y2, height - y1)),
        5: ((y1, y2), (x1, x2)),
        6: ((height - y2, height - y1), (x1, x2)),
        7: ((height - y2, height - y1), (width - x2, width - x1)),
        8: ((y1, y2), (width - x2, width - x1)),
    }[orientation]
    (a, b), (c, d) = corners
    return np.stack([a, c, b, d], axis=1)


def build_detection_data(records: list[ImageRecord], classes: list[str], split: str, request: LoadRequest,
                         report: BoxReport) -> DetectionData:
    """`DetectionData` of the records whose image can be read (see the module docstring for the box rules).

    Raises:
        ImageReadError: an unreadable image (unless ``request.skip_bad_files``: then recorded in
            ``request.skipped``), or no readable image left.
        TransferlabError: a box too far outside its image, a recorded size that does not fit the image, or no
            boxes at all in the split.
    """
    name = request.name(split)
    position = {class_name: i for i, class_name in enumerate(classes)}
    paths, sizes, boxes, labels, difficult = [], [], [], [], []
    for record in records:
        header = image_header(record.image, request)
        if isinstance(header, str):
            if request.skip_bad_files:
                request.skipped.append(record.image)
                continue
            raise ImageReadError(f"{header} (named by {record.annotation}); fix or remove it, or skip bad files with "
                                 f"{setting_hint('skip_bad_files', 'true')}")
        size, pixel_boxes, kept = _image_boxes(record, *header, report)
        paths.append(record.image)
        sizes.append(size)
        boxes.append(pixel_boxes[kept])
        labels.append(np.array([position[record.names[i]] for i in kept], dtype=np.int64))
        difficult.append(record.difficult[kept])
    if not paths:
        raise ImageReadError(f"no readable images in {name}")
    data = DetectionData(name=name, classes=list(classes), paths=paths, sizes=sizes, boxes=boxes, labels=labels,
                         difficult=difficult, domain=request.domain, max_image_pixels=request.max_image_pixels)
    if data.box_count == 0:
        raise TransferlabError(f"{name} has {len(data)} images but not one box left (e.g. {paths[0]} has none): "
                               "nothing to train or evaluate on; check that the annotations belong to these images")
    return data


def _image_boxes(record: ImageRecord, stored: tuple[int, int], orientation: int, report: BoxReport
                 ) -> tuple[tuple[int, int], np.ndarray, list[int]]:
    """The displayed image's size, ``record.boxes`` as clipped float32 pixel boxes of it, and the indices of the
    boxes to keep."""
    size = displayed_size(stored, orientation)
    boxes = np.array(record.boxes, dtype=np.float64).reshape(-1, 4)
    if record.normalized:
        boxes = boxes * np.array([size[0], size[1], size[0], size[1]])
    elif record.recorded_size is not None and record.recorded_size != size:
        if orientation >= 5 and record.recorded_size == stored:
            boxes = exif_boxes(boxes, stored, orientation)
        else:
            raise TransferlabError(
                f"{record.annotation} records image {record.image.name} as {_wxh(record.recorded_size)} but the "
                f"image is {_wxh(size)}" + (f" (stored {_wxh(stored)}, EXIF orientation {orientation})"
                                            if orientation != 1 else "") + "; the annotation is for another image"
            )
    width, height = size
    kept = []
    for index, box in enumerate(boxes):
        shown = f"{record.annotation}: {record.where[index]} [{', '.join(f'{v:g}' for v in box)}]"
        clipped = _clipped_box(box, width, height, shown)
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            report.skipped.append(shown)
            continue
        if not np.array_equal(clipped, box):
            report.clipped += 1
            report.clipped_example = report.clipped_example or shown
        boxes[index] = clipped
        kept.append(index)
    return size, boxes.astype(np.float32), kept


def _clipped_box(box: np.ndarray, width: int, height: int, shown: str) -> np.ndarray:
    """``box`` clipped to the image; raise for a box too far outside it (see the module docstring)."""
    if not np.all(np.isfinite(box)):
        raise TransferlabError(f"{shown}: not a finite number; expected pixel coordinates")
    x1, y1, x2, y2 = box
    low_x, high_x = -OUTSIDE_MARGIN * width, (1 + OUTSIDE_MARGIN) * width
    low_y, high_y = -OUTSIDE_MARGIN * height, (1 + OUTSIDE_MARGIN) * height
    beyond = min(x1, x2) < low_x or max(x1, x2) > high_x or min(y1, y2) < low_y or max(y1, y2) > high_y
    outside = x2 > x1 and y2 > y1 and (x1 >= width or x2 <= 0 or y1 >= height or y2 <= 0)
    if beyond or outside:
        how = "lies wholly outside" if outside and not beyond else f"reaches more than {OUTSIDE_MARGIN:.0%} beyond"
        raise TransferlabError(f"{shown} {how} the {width}x{height} image; expected x in 0..{width} and y in "
                               f"0..{height} pixels")
    return np.array([np.clip(x1, 0, width), np.clip(y1, 0, height), np.clip(x2, 0, width), np.clip(y2, 0, height)])


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
