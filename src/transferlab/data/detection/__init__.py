"""Object-detection data: images with labeled boxes, read from PASCAL VOC, COCO JSON or YOLO txt.

Public interface:
    ``load_detection_splits(spec, *, skip_bad_files=False, domain="target", max_image_pixels=None)
    -> dict[str, DetectionData]``: every split of a data spec (or the one ``@split`` names).
    ``load_detection_data(spec, *, split_preference, skip_bad_files=False, domain="target",
    max_image_pixels=None) -> DetectionData``: one split, the ``@split`` named or the first preferred one found.
    ``is_detection_spec(spec) -> bool``: whether a spec names detection data (its kind, or its layout).
    ``detect_format(path) -> "voc" | "coco" | "yolo" | None``: the format a folder or file is laid out in.
    ``align_detection_classes(train, other) -> DetectionData``: ``other`` in ``train``'s class order; raises for
    a class with boxes in ``other`` but none in ``train``.
    `DetectionData`: the container (``classes``, ``paths``, ``sizes``, per-image ``boxes`` (n, 4) float32 xyxy
    pixels, ``labels`` (n,) int64, ``difficult`` (n,) bool; ``subset``, ``describe``, ``load_image``,
    ``content_digest``).
    ``DetectionDataset(data, transform=None, *, max_size=None, drop_difficult=False)``,
    ``detection_transform(*, train, size=None, ...)`` and ``collate_detection(batch)``: tensors for torchvision
    detectors (`transferlab.data.detection.dataset`).

Data specs, ``[voc:|coco:|yolo:]location[@split]``; without a kind the format is recognised from the layout:
    ``voc``: a folder with ``images/`` + ``annotations/*.xml``, or ``JPEGImages/`` + ``Annotations/``; splits from
        ``ImageSets/Main/{train,val,test}.txt`` when present.
    ``coco``: a folder with ``annotations/*.json`` (or JSON files in the folder) and the images, or a JSON file;
        a file's split comes from its name (``instances_val2017.json`` -> ``val``).
    ``yolo``: a folder with ``images/`` + ``labels/`` (``images/train/`` + ``labels/train/`` ... for splits) and
        the class names in ``data.yaml`` (``names``) or ``classes.txt``.
    Any of them may also sit in ``train/``, ``val/`` (or ``valid/``), ``test/`` split folders. Otherwise a
    single split, ``"all"``.

Conventions (details in `transferlab.data.detection.records`):
    - Boxes are ``x1, y1, x2, y2`` in pixels of the image as displayed: EXIF orientation applied, as CVAT,
      Roboflow and Ultralytics read them. An annotation that records the stored size of a 90-degree-rotated image
      (a tool that ignored EXIF) has its boxes turned with the image.
    - Class indices are 0-based with no background class (`transferlab.data.detection.dataset` says how
      torchvision's detectors differ). VOC classes are the names used, sorted; COCO's are the categories in id
      order; YOLO's the names file in order. Splits of one spec share the class list.
    - Images without objects are kept (negatives). VOC ``difficult`` and COCO ``iscrowd`` boxes are kept, flagged
      ``difficult``.
    - A box crossing the border is clipped (one warning per load counts them); one reaching more than 10% of the
      image's size beyond it, or lying wholly outside, is an error; a box of zero or negative width or height is
      skipped with a warning naming file and box.

Bad input raises `transferlab.errors.TransferlabError` in one line naming the file: an annotation naming a
missing image, XML/JSON/YAML that does not parse (with the line), a malformed field, a class in val/test that
training never shows, a box too far outside its image, a recorded image size that does not fit the image, no boxes
left in a split, class folders (classification data) given as detection data. Unreadable images raise
`transferlab.data.ImageReadError`, or with ``skip_bad_files`` are dropped with one warning listing them.
"""

from transferlab.data.detection.container import DetectionData, align_detection_classes
from transferlab.data.detection.dataset import DetectionDataset, collate_detection, detection_transform
from transferlab.data.detection.layout import DETECTION_KINDS, detect_format, is_detection_spec
from transferlab.data.detection.loading import load_detection_data, load_detection_splits

__all__ = [
    "DetectionData",
    "DetectionDataset",
    "DETECTION_KINDS",
    "align_detection_classes",
    "collate_detection",
    "detect_format",
    "detection_transform",
    "is_detection_spec",
    "load_detection_data",
    "load_detection_splits",
]
