"""Detection data specs -> `DetectionData`, one per split: the format's reader lists the annotated images (every
annotation file is parsed up front, so class names are shared by the splits), and each split's images are checked
and its boxes normalised when that split is loaded (`transferlab.data.detection.records`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from transferlab.data.class_names import sort_class_names
from transferlab.data.detection.coco import coco_files, read_coco
from transferlab.data.detection.container import DetectionData, align_detection_classes
from transferlab.data.detection.layout import FORMAT_LAYOUTS, detect_format, parse_detection_spec, split_folders
from transferlab.data.detection.records import BoxReport, ImageRecord, build_detection_data
from transferlab.data.detection.voc import is_voc_folder, read_voc
from transferlab.data.detection.yolo import is_yolo_folder, read_yolo
from transferlab.data.formats.files import is_example_name
from transferlab.data.formats.request import LoadRequest, SplitLoader, choose_split, run_loaders
from transferlab.data.image_data import DOMAINS
from transferlab.errors import TransferlabError

__all__ = ["load_detection_splits", "load_detection_data"]

_READERS = {"voc": read_voc, "coco": read_coco, "yolo": read_yolo}


def load_detection_splits(spec: str, *, skip_bad_files: bool = False, domain: str = "target",
                          max_image_pixels: int | None = None) -> dict[str, DetectionData]:
    """Load every split a detection data spec names (or the one its ``@split`` suffix picks).

    When ``"train"`` is loaded with other splits, those are checked against it (`align_detection_classes`). One
    warning counts the boxes clipped to their image, one names the degenerate boxes skipped, one the bad files
    skipped.

    Args:
        spec: ``[voc:|coco:|yolo:]location[@split]`` (see `transferlab.data.detection`).
        skip_bad_files: drop unreadable images (and warn once, listing them) instead of raising.
        domain: ``"source"`` or ``"target"``, stored on the returned data.
        max_image_pixels: images with more pixels are bad files; ``None``: the environment's limit or the default.

    Returns:
        Split name (``"train"``, ``"val"``, ``"test"`` or ``"all"``) -> `DetectionData`, in that order.

    Raises:
        TransferlabError: see `transferlab.data.detection` (bad input), each in one line naming the file.
    """
    split, request, loaders, report = _open(spec, skip_bad_files, domain, max_image_pixels)
    data = run_loaders(loaders, [split] if split else list(loaders), request)
    report.warn(request.base)
    if "train" in data:
        data = {name: split_data if name == "train" else align_detection_classes(data["train"], split_data)
                for name, split_data in data.items()}
    return data


def load_detection_data(spec: str, *, split_preference: tuple[str, ...], skip_bad_files: bool = False,
                        domain: str = "target", max_image_pixels: int | None = None) -> DetectionData:
    """Load one split: the ``@split`` the spec names, else the first of ``split_preference`` the data has (data with
    one split gives it whatever the preference). Only that split's images are read.

    Args:
        spec: see `load_detection_splits`.
        split_preference: split names to try in order, e.g. ``("val", "test")`` for evaluation data.
        skip_bad_files: see `load_detection_splits`.
        domain: see `load_detection_splits`.
        max_image_pixels: see `load_detection_splits`.

    Raises:
        TransferlabError: as `load_detection_splits`, or several splits and none preferred.
    """
    if isinstance(split_preference, str):
        split_preference = (split_preference,)
    split, request, loaders, report = _open(spec, skip_bad_files, domain, max_image_pixels)
    split = split or choose_split(request.base, list(loaders), split_preference)
    data = run_loaders(loaders, [split], request)[split]
    report.warn(request.base)
    return data


def _open(spec: str, skip_bad_files: bool, domain: str, max_image_pixels: int | None
          ) -> tuple[str | None, LoadRequest, dict[str, SplitLoader], BoxReport]:
    if domain not in DOMAINS:
        raise TransferlabError(f"unknown domain {domain!r}; expected one of: {', '.join(DOMAINS)}")
    base, kind, location, split = parse_detection_spec(spec)
    request = LoadRequest(base, domain, skip_bad_files, max_image_pixels=max_image_pixels)
    classes, records = _read(kind, Path(location).expanduser(), base)
    if split is not None and split not in records:
        raise TransferlabError(f"split {split!r} not found in {base!r}; it has: {', '.join(records)}")
    report = BoxReport()
    loaders = {name: partial(build_detection_data, split_records, classes, name, request, report)
               for name, split_records in records.items()}
    return split, request, loaders, report


def _read(kind: str | None, path: Path, base: str) -> tuple[list[str], dict[str, list[ImageRecord]]]:
    """Class names and the records of each split at ``path`` (see `transferlab.data.detection`)."""
    if not str(path) or not path.exists():
        raise TransferlabError(f"no such file or folder: {str(path)!r} (from data spec {base!r})")
    found = detect_format(path)
    if kind is None and found is None:
        raise TransferlabError(_not_detection_data(path))
    kind = kind or found
    if path.is_file() and kind != "coco":
        raise TransferlabError(f"{kind} data must be a folder, but {path} is a file")
    reader = _READERS[kind]
    folders = split_folders(path) if path.is_dir() and not _holds_layout(kind, path) else {}
    if not folders:
        classes, records = reader(path)
    else:
        classes, records = _read_split_folders(kind, folders, path)
    if classes is None:  # VOC: the names used, over every split
        classes = sort_class_names(name for split in records.values() for record in split for name in record.names)
    return classes, records


def _holds_layout(kind: str, folder: Path) -> bool:
    """Whether ``folder`` itself (not a split folder below it) is laid out as format ``kind``."""
    if kind == "coco":
        return bool(coco_files(folder))
    return is_voc_folder(folder) if kind == "voc" else is_yolo_folder(folder)


def _read_split_folders(kind: str, folders: dict[str, Path], root: Path
                        ) -> tuple[list[str] | None, dict[str, list[ImageRecord]]]:
    """Read each split folder (``train/``, ``val/``, ...) as a dataset of its own; class lists are merged in order."""
    classes: list[str] | None = None
    records = {}
    for split, folder in folders.items():
        folder_classes, folder_records = read_yolo(folder, root) if kind == "yolo" else _READERS[kind](folder)
        if len(folder_records) != 1:
            raise TransferlabError(f"split folder {folder} has splits of its own ({', '.join(folder_records)}); "
                                   "expected one set of images per split folder")
        records[split] = next(iter(folder_records.values()))
        if folder_classes is not None:
            classes = list(dict.fromkeys((classes or []) + list(folder_classes)))
    return classes, records


def _not_detection_data(path: Path) -> str:
    """Why ``path`` is not detection data, and what is expected, in one line."""
    layouts = "; ".join(FORMAT_LAYOUTS.values())
    if path.is_dir() and (path / "images").is_dir() and (path / "labels").is_dir():
        return (f"{path} has images/ and labels/ but no .txt label files in labels/; expected YOLO labels "
                "(labels/NAME.txt for images/NAME.jpg, one 'class cx cy w h' a line)")
    if path.is_dir():
        inner = split_folders(path).get("train", path)
        classes = sorted(sub for sub in inner.iterdir() if sub.is_dir() and not sub.name.startswith("."))
        if classes and any(is_example_name(file.name) for file in classes[0].iterdir()):
            names = ", ".join(sub.name for sub in classes[:5]) + (", ..." if len(classes) > 5 else "")
            return (f"{path} holds class folders ({names}): classification data, not detection annotations; leave "
                    f"out --method detection to train a classifier, or give detection data ({layouts})")
    return f"no detection annotations found in {path}; expected {layouts}"
