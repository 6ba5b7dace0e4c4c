"""Turn a data spec string, ``[kind:]location[@split]``, into data (`ImageData`, `TextData`, `AudioData`), one per
split.

Kinds:
    ``sklearn-digits``: scikit-learn's embedded 8x8 digits (no location), one split ``"all"``.
    ``mnist:DIR``: MNIST IDX files, gzipped or not, splits ``"train"`` and ``"test"``.
    ``usps:DIR``: the USPS digits of *The Elements of Statistical Learning* (``zip.train(.gz)``,
        ``zip.test(.gz)``), splits ``"train"`` and ``"test"``.
    ``[folder:]DIR``: class sub-folders of images or audio files (wav, flac, ogg, mp3) -> split ``"all"``;
        ``train/`` (and optionally ``val/``, ``test/``) sub-folders, each holding class sub-folders -> those splits;
        files and no sub-folders -> one unlabeled split ``"all"``.
    ``[csv:]FILE.csv``: a manifest with a ``path`` column (images or audio files) and an optional ``label``
        column, split ``"all"``.
    ``FILE.csv`` / ``FILE.tsv`` / ``FILE.jsonl`` with a text column: texts (`transferlab.data.text_tables`),
        split ``"all"``.

A trailing ``@train``, ``@val``, ``@test`` or ``@all`` keeps one split. It is read as a split selector only when the
whole string is not itself an existing path. Class names are sorted, by value when they are all integers, so digit
classes are ``"0"`` to ``"9"`` in numeric order.
"""

from __future__ import annotations

import csv
import logging
import gzip
import io
import os
import re
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.data.audio_data import AUDIO_EXTENSIONS, AudioData, AudioReadError, audio_problem
from transferlab.data.image_data import DOMAINS, ImageData, ImageReadError
from transferlab.data.text_data import TextData
from transferlab.data.text_tables import (
    TEXT_TABLE_SUFFIXES,
    TextColumns,
    is_text_table,
    read_text_table,
    resolve_text_column,
    table_columns,
)
from transferlab.errors import TransferlabError, suggest

__all__ = ["load_splits", "load_data", "manifest_columns", "read_manifest_columns", "sort_class_names", "KINDS", "SPLITS", "IMAGE_EXTENSIONS",
           "TextColumns"]

KINDS = ("sklearn-digits", "mnist", "usps", "folder", "csv")
SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_SPLIT_SELECTORS = SPLITS + ("all",)
_DIGIT_CLASSES = tuple(str(digit) for digit in range(10))
_CSV_COLUMNS = ("path", "label")
# At least two letters before the colon, so that a Windows drive ("C:\data") is not read as a kind.
_KIND_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9_-]+):(.*)", re.DOTALL)
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_IMAGES_MAGIC = 0x0803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x0801  # unsigned bytes, 1 dimension
_USPS_FILES = {"train": "zip.train", "test": "zip.test"}
_USPS_COLUMNS = 1 + 16 * 16

SplitLoader = Callable[[], ImageData]

log = logging.getLogger("transferlab")


def load_splits(spec: str, *, skip_bad_files: bool = False, domain: str = "target",
                columns: TextColumns | None = None) -> dict[str, ImageData]:
    """Load every split a data spec names (or the one its ``@split`` suffix picks).

    Args:
        spec: ``[kind:]location[@split]``, see the module docstring.
        skip_bad_files: drop image files that are unreadable (or, in a CSV, missing) and warn once listing them,
            instead of raising.
        domain: ``"source"`` or ``"target"``, stored on every returned `ImageData`.
        columns: the text and label columns of text tables (default: ``text``/``sentence`` and ``label``).

    Returns:
        Split name (``"train"``, ``"val"``, ``"test"`` or ``"all"``) -> `ImageData`, in that order.

    Raises:
        TransferlabError: the spec, a path or a file is wrong; `ImageReadError` for an unreadable image file.
    """
    split, request, loaders = _open(spec, skip_bad_files, domain, columns)
    return _run(loaders, [split] if split else list(loaders), request)


def load_data(
    spec: str,
    *,
    split_preference: tuple[str, ...],
    skip_bad_files: bool = False,
    domain: str = "target",
    columns: TextColumns | None = None,
) -> ImageData:
    """Load one split of a data spec: the ``@split`` it names, else the first of ``split_preference`` it has.

    Only the chosen split is read. Data with a single split (e.g. a folder of class folders) gives that split
    whatever the preference.

    Args:
        spec: ``[kind:]location[@split]``, see the module docstring.
        split_preference: split names to try in order, e.g. ``("val", "test")`` for evaluation data.
        skip_bad_files: see `load_splits`.
        domain: see `load_splits`.
        columns: see `load_splits`.

    Raises:
        TransferlabError: as `load_splits`, or when the data has several splits and none is preferred (the message
            names the splits found).
    """
    if isinstance(split_preference, str):
        split_preference = (split_preference,)
    split, request, loaders = _open(spec, skip_bad_files, domain, columns)
    if split is None:
        split = choose_split(request.base, list(loaders), split_preference)
    return _run(loaders, [split], request)[split]


@dataclass
class _Request:
    """What every loader needs besides its location: the name to report, the domain and the bad-file policy."""

    base: str  # the spec without its @split suffix
    domain: str
    skip_bad_files: bool
    columns: TextColumns = field(default_factory=TextColumns)
    skipped: list[Path] = field(default_factory=list)

    def name(self, split: str) -> str:
        return self.base if split == "all" else f"{self.base}@{split}"


def _open(spec: str, skip_bad_files: bool, domain: str, columns: TextColumns | None = None
          ) -> tuple[str | None, _Request, dict[str, SplitLoader]]:
    if domain not in DOMAINS:
        raise TransferlabError(f"unknown domain {domain!r}; expected one of: {', '.join(DOMAINS)}")
    base, kind, location, split = _parse_spec(spec)
    request = _Request(base, domain, skip_bad_files, columns or TextColumns())
    loaders = _split_loaders(kind, location, request)
    if split is not None and split not in loaders:
        raise TransferlabError(f"split {split!r} not found in {base!r}; it has: {', '.join(loaders)}")
    return split, request, loaders


def _run(loaders: dict[str, SplitLoader], splits: list[str], request: _Request) -> dict[str, ImageData]:
    data = {split: loaders[split]() for split in splits}
    if request.skipped:
        files = ", ".join(str(path) for path in request.skipped)
        warnings.warn(f"skipped {len(request.skipped)} bad file(s) in {request.base}: {files}", stacklevel=3)
    return data


def choose_split(base: str, available: list[str], preference: Iterable[str]) -> str:
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


def _parse_spec(spec: str) -> tuple[str, str | None, str, str | None]:
    """Split a spec into ``(base, kind, location, split)``; ``kind`` is ``None`` for a plain path."""
    if not isinstance(spec, str) or not spec.strip():
        raise TransferlabError(f"empty data spec {spec!r}; expected [kind:]location[@split], e.g. 'mnist:DIR@test'")
    base, split = spec, None
    if "@" in spec and not _exists(spec):
        head, _, tail = spec.rpartition("@")
        if "/" not in tail and "\\" not in tail:
            if tail not in _SPLIT_SELECTORS:
                raise TransferlabError(
                    f"unknown split {tail!r} in data spec {spec!r}{suggest(tail, _SPLIT_SELECTORS)}; "
                    f"expected one of: {', '.join(_SPLIT_SELECTORS)}"
                )
            base, split = head, tail
    if _exists(base):
        return base, None, base, split
    match = _KIND_PREFIX.fullmatch(base)
    if match:
        kind = match.group(1)
        if kind not in KINDS:
            raise TransferlabError(
                f"unknown data kind {kind!r} in {spec!r}{suggest(kind, KINDS)}; "
                f"expected one of: {', '.join(KINDS)}, or a plain folder or .csv path"
            )
        return base, kind, match.group(2), split
    if base in KINDS:
        return base, base, "", split
    return base, None, base, split


def _exists(path: str) -> bool:
    return bool(path) and Path(path).expanduser().exists()


def _split_loaders(kind: str | None, location: str, request: _Request) -> dict[str, SplitLoader]:
    """Check the location and return one loader per split it holds (cheap: reading happens in the loaders)."""
    if kind == "sklearn-digits":
        if location:
            raise TransferlabError(f"'sklearn-digits' takes no location, got {location!r} in {request.base!r}")
        return {"all": partial(_read_sklearn_digits, request)}
    if not location:
        raise TransferlabError(f"data spec {request.base!r} has no location; expected {kind or 'folder'}:PATH")
    path = Path(location).expanduser()
    if not path.exists():
        hint = suggest(location, KINDS) if kind is None else ""
        raise TransferlabError(f"no such file or folder: {str(path)!r} (from data spec {request.base!r}){hint}")
    if kind in ("mnist", "usps", "folder") and not path.is_dir():
        raise TransferlabError(f"{kind} data must be a folder, but {path} is a file")
    if kind == "csv" and path.is_dir():
        raise TransferlabError(f"csv data must be a .csv file, but {path} is a folder")
    if kind == "mnist":
        return {split: partial(_read_mnist_split, path, split, request) for split in _MNIST_FILES}
    if kind == "usps":
        return {split: partial(_read_usps_split, path, split, request) for split in _USPS_FILES}
    if path.is_dir():
        if kind is None and not _visible_subfolders(path) and _looks_like_digit_files(path):
            raise TransferlabError(f"{path} holds MNIST or USPS files, not images; use 'mnist:{path}' or 'usps:{path}'")
        return _folder_loaders(path, request)
    if is_text_table(path, request.columns):
        return {"all": partial(_text_data, path, request)}
    if path.suffix.lower() == ".csv" and "path" not in (header := table_columns(path)) and any(header):
        text = f"'{request.columns.text}'" if request.columns.text else "'text' or 'sentence'"
        raise TransferlabError(f"{path} has no 'path' column (an image or audio manifest) and no text column ({text}; "
                               f"name it with --text-column); its columns: {', '.join(header)}")
    if kind == "csv" or path.suffix.lower() == ".csv":
        return _csv_loaders(path, request)
    raise TransferlabError(
        f"{path} is a file but not a .csv manifest or a text table (.csv, .tsv, .jsonl); expected a folder of images "
        f"or audio, such a file, or a kind prefix ({', '.join(KINDS)})"
    )


# --- digit sets held in memory -------------------------------------------------------------------------------


def _digit_data(request: _Request, split: str, pixels: np.ndarray, labels: np.ndarray) -> ImageData:
    return ImageData(
        name=request.name(split),
        classes=list(_DIGIT_CLASSES),
        labels=labels.astype(np.int64),
        pixels=pixels,
        domain=request.domain,
    )


def _read_sklearn_digits(request: _Request) -> ImageData:
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    return _digit_data(request, "all", pixels, digits.target)


def _read_mnist_split(root: Path, split: str, request: _Request) -> ImageData:
    images_path, labels_path = (_find_data_file(root, name, "mnist") for name in _MNIST_FILES[split])
    images = _read_idx(images_path, _IDX_IMAGES_MAGIC)
    labels = _read_idx(labels_path, _IDX_LABELS_MAGIC)
    if len(labels) != len(images):
        raise TransferlabError(
            f"{labels_path} holds {len(labels)} labels for the {len(images)} images of {images_path}"
        )
    if labels.size and labels.max() > 9:
        raise TransferlabError(f"{labels_path} holds label {labels.max()}; MNIST labels are digits 0-9")
    return _digit_data(request, split, images, labels)


def _read_usps_split(root: Path, split: str, request: _Request) -> ImageData:
    path = _find_data_file(root, _USPS_FILES[split], "usps")
    try:
        rows = np.loadtxt(io.StringIO(_read_bytes(path).decode("ascii")), dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TransferlabError(f"cannot parse USPS file {path}: {exc}") from None
    if rows.shape[0] == 0 or rows.shape[1] != _USPS_COLUMNS:
        raise TransferlabError(f"USPS file {path} must hold lines of a label and 256 pixel values, got {rows.shape}")
    labels, values = rows[:, 0], rows[:, 1:]
    if not np.all((labels == np.round(labels)) & (labels >= 0) & (labels <= 9)):
        raise TransferlabError(f"USPS file {path} has labels that are not digits 0-9")
    if values.min() < -1.001 or values.max() > 1.001:
        raise TransferlabError(f"USPS file {path} has pixel values outside [-1, 1] ({values.min()}..{values.max()})")
    pixels = np.rint((values + 1) / 2 * 255).clip(0, 255).astype(np.uint8).reshape(-1, 16, 16)
    return _digit_data(request, split, pixels, labels)


def _looks_like_digit_files(folder: Path) -> bool:
    names = [_MNIST_FILES["train"][0], _MNIST_FILES["test"][0], *_USPS_FILES.values()]
    return any((folder / name).is_file() or (folder / f"{name}.gz").is_file() for name in names)


def _find_data_file(root: Path, name: str, kind: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise TransferlabError(f"{kind} folder {root} has no {name} or {name}.gz")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise TransferlabError(f"cannot read {path}: {exc}") from None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (the MNIST format) whose magic number must be ``magic``."""
    raw = _read_bytes(path)
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        found_text = "none (file too short)" if found is None else f"{found:#010x}"
        raise TransferlabError(
            f"{path} is not the expected IDX file: magic number {found_text}, expected {magic:#010x}"
        )
    header = 4 + 4 * (magic & 0xFF)
    shape = tuple(int.from_bytes(raw[start : start + 4], "big") for start in range(4, header, 4))
    if len(raw) != header + int(np.prod(shape)):
        raise TransferlabError(f"{path} is truncated or too long: its header announces shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


# --- image files: folders and CSV manifests --------------------------------------------------------------------

# One (file, class name) pair per example; the class name is None for unlabeled data.
_Items = list[tuple[Path, str | None]]


def _folder_loaders(root: Path, request: _Request) -> dict[str, SplitLoader]:
    names = [folder.name for folder in _visible_subfolders(root)]
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
        loaders[split] = partial(_file_data, items, classes if labeled else [], split, request)
    return loaders


def _scan_folder(folder: Path) -> _Items:
    """List a folder's images: one class per visible sub-folder, or unlabeled images if it has no sub-folders."""
    subfolders = _visible_subfolders(folder)
    loose = sorted(path for path in folder.iterdir() if path.is_file() and _is_example_name(path.name))
    if not subfolders:
        if not loose:
            raise TransferlabError(
                f"no images or audio files in {folder}: expected class sub-folders or files ending in "
                f"{' '.join(IMAGE_EXTENSIONS + AUDIO_EXTENSIONS)}"
            )
        return [(path, None) for path in loose]
    if loose:
        raise TransferlabError(
            f"{folder} holds both image files (e.g. {loose[0].name!r}) and sub-folders; put every image in a "
            "class sub-folder, or remove the sub-folders for unlabeled data"
        )
    if len(subfolders) < 2:
        raise TransferlabError(
            f"{folder} has a single class folder ({subfolders[0].name!r}); labeled data needs at least two classes"
        )
    items: _Items = []
    for subfolder in subfolders:
        files = _images_below(subfolder)
        if not files:
            raise TransferlabError(
                f"class folder {subfolder} holds no images or audio (expected files ending in "
                f"{' '.join(IMAGE_EXTENSIONS + AUDIO_EXTENSIONS)})"
            )
        items += [(path, subfolder.name) for path in files]
    return items


def _visible_subfolders(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))


def _is_example_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS + AUDIO_EXTENSIONS)


def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def _images_below(folder: Path) -> list[Path]:
    """Image and audio files anywhere below ``folder``, skipping hidden files and folders, sorted."""
    found = []
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [Path(directory, name) for name in files if _is_example_name(name)]
    return sorted(found)


def _csv_loaders(csv_path: Path, request: _Request) -> dict[str, SplitLoader]:
    items, labeled = _read_manifest(csv_path, request)
    classes = sort_class_names(label for _, label in items) if labeled else []
    if labeled and len(classes) < 2:
        raise TransferlabError(
            f"{csv_path} has a single class ({classes[0]!r}); labeled data needs at least two classes"
        )
    return {"all": partial(_file_data, items, classes, "all", request)}


def _read_manifest(csv_path: Path, request: _Request) -> tuple[_Items, bool]:
    """Read a ``path[,label]`` manifest as (file, label) pairs, checking that every file exists; also say if it has
    labels."""
    paths, cells = _read_table(csv_path, request, allowed=_CSV_COLUMNS, labels_required=True)
    labels = cells.get("label")
    return [(path, None if labels is None else labels[i]) for i, path in enumerate(paths)], labels is not None


def _read_table(
    csv_path: Path, request: _Request, *, allowed: tuple[str, ...] | None, labels_required: bool
) -> tuple[list[Path], dict[str, list[str]]]:
    """Read a manifest: a ``path`` column (relative paths are relative to the CSV) and label columns.

    Returns the existing files and, per label column, one stripped cell per kept row. With ``allowed``, other
    columns are refused; without ``labels_required``, empty label cells are kept as ``""`` (no label).
    """
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.reader(stream)
            columns = _check_csv_header(csv_path, next(reader, []), allowed)
            return _manifest_rows(csv_path, reader, columns, request, labels_required)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TransferlabError(f"cannot read CSV {csv_path}: {exc}") from None


def _check_csv_header(csv_path: Path, header: list[str], allowed: tuple[str, ...] | None) -> list[str]:
    columns = [column.strip() for column in header]
    if not any(columns):
        raise TransferlabError(f"CSV {csv_path} is empty; expected a header line with a 'path' column")
    for column in columns if allowed is not None else ():
        if column not in allowed:
            raise TransferlabError(
                f"CSV {csv_path} has unknown column {column!r}{suggest(column, allowed)}; "
                "accepted columns: path (required), label (optional); several label columns are tasks of "
                "--method multitask (--tasks COL1,COL2)"
            )
    if len(set(columns)) != len(columns):
        raise TransferlabError(f"CSV {csv_path} repeats a column in its header: {', '.join(columns)}")
    if "path" not in columns:
        raise TransferlabError(f"CSV {csv_path} has no 'path' column (its columns: {', '.join(columns)})")
    return columns


def _manifest_rows(
    csv_path: Path, reader, columns: list[str], request: _Request, labels_required: bool
) -> tuple[list[Path], dict[str, list[str]]]:
    paths: list[Path] = []
    cells: dict[str, list[str]] = {column: [] for column in columns if column != "path"}
    rows = 0
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        rows += 1
        where = f"{csv_path} row {rows} (line {reader.line_num})"
        if len(row) != len(columns):
            raise TransferlabError(f"{where} has {len(row)} fields, expected {len(columns)}: {', '.join(columns)}")
        values = dict(zip(columns, (cell.strip() for cell in row)))
        for column, value in values.items():
            if not value and (column == "path" or labels_required):
                raise TransferlabError(f"{where} has an empty {column}")
        path = Path(values["path"]).expanduser()
        path = path if path.is_absolute() else csv_path.parent / path
        if path.is_file():
            paths.append(path)
            for column in cells:
                cells[column].append(values[column])
        elif request.skip_bad_files:
            request.skipped.append(path)
        else:
            raise ImageReadError(f"{where}: image file not found: {path}")
    if rows == 0:
        raise TransferlabError(f"CSV {csv_path} has a header but no rows")
    if not paths:
        raise ImageReadError(f"none of the files listed in {csv_path} exists")
    return paths, cells


def _manifest_file(spec: str) -> tuple[str, Path, str | None] | None:
    """``(base, file, split)`` when ``spec`` names an existing CSV manifest or text table, else ``None``."""
    base, kind, location, split = _parse_spec(spec)
    path = Path(location).expanduser()
    if not (kind == "csv" or (kind is None and path.suffix.lower() in TEXT_TABLE_SUFFIXES)) or not path.is_file():
        return None
    return base, path, split


def manifest_columns(spec: str, text_columns: TextColumns | None = None) -> list[str] | None:
    """The label columns of a CSV manifest (its header without ``path``) or text table (without the text column),
    or ``None`` if ``spec`` is neither."""
    manifest = _manifest_file(spec)
    if manifest is None:
        return None
    path = manifest[1]
    if is_text_table(path, text_columns):
        header = table_columns(path)
        text = resolve_text_column(path, header, text_columns or TextColumns())
        return [column for column in header if column != text]
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            header = next(csv.reader(stream), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TransferlabError(f"cannot read CSV {path}: {exc}") from None
    return [column.strip() for column in header if column.strip() != "path"]


def read_manifest_columns(
    spec: str, columns: list[str], *, skip_bad_files: bool = False, text_columns: TextColumns | None = None
) -> tuple[ImageData | TextData, dict[str, list[str]]]:
    """Examples of a CSV manifest or text table (unlabeled `ImageData` / `TextData`) and the cells of the named
    label columns, row-aligned.

    Empty cells stay ``""`` (no label). Rows whose image is missing or unreadable are dropped with a warning when
    ``skip_bad_files`` is set, else raise `ImageReadError`.

    Raises:
        TransferlabError: ``spec`` is not a CSV manifest or text table, or lacks one of ``columns`` (the message
            lists the columns it has).
    """
    manifest = _manifest_file(spec)
    if manifest is None:
        raise TransferlabError(
            f"multitask label columns need a CSV manifest (path plus one column per task) or a text table, but "
            f"{spec!r} is neither"
        )
    base, path, split = manifest
    if split not in (None, "all"):
        raise TransferlabError(f"a CSV manifest has one split ('all'), not {split!r} (in {spec!r})")
    request = _Request(base, "target", skip_bad_files, text_columns or TextColumns())
    if is_text_table(path, request.columns):
        texts, cells, _ = read_text_table(path, request.columns, label_columns=list(columns))
        return TextData(name=base, classes=[], labels=None, texts=texts), cells

    def read() -> tuple[ImageData, dict[str, list[str]]]:
        paths, cells = _read_table(path, request, allowed=None, labels_required=False)
        missing = [column for column in columns if column not in cells]
        if missing:
            raise TransferlabError(
                f"CSV {path} has no column {', '.join(repr(c) for c in missing)} for the task(s) asked; "
                f"its columns: path, {', '.join(cells) or '(no label columns)'}"
            )
        kept = [index for _, index in _readable([(p, i) for i, p in enumerate(paths)], request)]
        if not kept:
            raise ImageReadError(f"no readable images in {base}")
        images = ImageData(name=base, classes=[], labels=None, paths=[paths[i] for i in kept])
        return images, {column: [cells[column][i] for i in kept] for column in columns}

    return _run({"all": read}, ["all"], request)["all"]  # _run warns once about skipped bad files


def sort_class_names(names: Iterable[str]) -> list[str]:
    """Sorted unique class names; names that are all integers sort by value ("2" before "10")."""
    names = set(names)
    if all(name.isascii() and name.isdigit() for name in names):
        return sorted(names, key=lambda name: (int(name), name))
    return sorted(names)


def _file_data(items: _Items, classes: list[str], split: str, request: _Request) -> ImageData | AudioData:
    """Check the files (header-level) and build file-backed `ImageData` (or `AudioData`) from the readable ones."""
    audio = [_is_audio(path) for path, _ in items]
    if any(audio) and not all(audio):
        example = next(path for (path, _), is_audio in zip(items, audio) if not is_audio)
        raise TransferlabError(f"{request.name(split)} mixes audio files with images (e.g. {example}); "
                               "use one kind of data per spec")
    container, error, noun = (AudioData, AudioReadError, "audio files") if all(audio) else (ImageData, ImageReadError, "images")
    kept = _readable(items, request, audio=all(audio))
    if not kept:
        raise error(f"no readable {noun} in {request.name(split)}")
    lost = {label for _, label in items} - {label for _, label in kept}
    if lost:
        raise error(f"no readable {noun} left for class(es) {sorted(lost)} in {request.name(split)}")
    index = {name: position for position, name in enumerate(classes)}
    return container(
        name=request.name(split),
        classes=list(classes),
        labels=np.array([index[label] for _, label in kept], dtype=np.int64) if classes else None,
        paths=[path for path, _ in kept],
        domain=request.domain,
    )


def _text_data(path: Path, request: _Request) -> TextData:
    """A text table as `TextData`: labeled when it has the label column (every row must then have a label)."""
    texts, cells, header = read_text_table(path, request.columns)
    labels = cells.get(request.columns.label)
    if labels is None:
        log.info("%s has no label column %r (columns: %s): unlabeled texts", path, request.columns.label,
                 ", ".join(header))
        return TextData(name=request.base, classes=[], labels=None, texts=texts, domain=request.domain)
    empty = sum(1 for label in labels if not label)
    if empty:
        raise TransferlabError(f"{path} has {empty} text(s) with an empty {request.columns.label!r} label; "
                               "label every row, or drop the label column for unlabeled data")
    classes = sort_class_names(labels)
    if len(classes) < 2:
        raise TransferlabError(f"{path} has a single class ({classes[0]!r}) in column {request.columns.label!r}; "
                               "labeled data needs at least two classes")
    index = {name: position for position, name in enumerate(classes)}
    return TextData(name=request.base, classes=classes, labels=np.array([index[label] for label in labels]),
                    texts=texts, domain=request.domain)


def _readable(items: _Items, request: _Request, *, audio: bool = False) -> _Items:
    """The items whose file is a readable image (or, with ``audio``, non-empty audio); bad files raise, or are
    recorded as skipped with ``skip_bad_files``."""
    kept = []
    for path, label in items:
        problem = audio_problem(path) if audio else _image_problem(path)
        if problem is None:
            kept.append((path, label))
        elif request.skip_bad_files:
            request.skipped.append(path)
        elif audio:
            raise AudioReadError(f"{problem}; fix or remove it, or set skip_bad_files to skip bad files")
        else:
            raise ImageReadError(
                f"cannot read image {path}: {problem}; fix or remove it, or set skip_bad_files to skip bad files"
            )
    return kept


def _image_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable image (a cheap header-level check with PIL's ``verify``), or ``None``."""
    try:
        with Image.open(path) as image:
            image.verify()
    except FileNotFoundError:
        return "file not found"
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, struct.error, ...) for a bad file
        return f"{type(exc).__name__}: {exc}"
    return None


def examples_from_paths(paths: Iterable[Path | str], *, skip_bad_files: bool = False,
                        columns: TextColumns | None = None) -> ImageData | AudioData | TextData:
    """Unlabeled data from image or audio files and folders (searched recursively), in the order given, or from one
    text table (CSV/TSV/JSONL with a text column; its label column, if any, is ignored).

    Used by ``transferlab predict``. Unreadable files raise an error naming the file, or are skipped with one
    warning listing them when ``skip_bad_files`` is set.
    """
    paths = [Path(path) for path in paths]
    if not paths:
        raise TransferlabError("no inputs given")
    if len(paths) == 1 and paths[0].is_file() and is_text_table(paths[0], columns):
        texts, _, _ = read_text_table(paths[0], columns or TextColumns(), label_columns=[])
        return TextData(name=str(paths[0]), classes=[], labels=None, texts=texts)
    request = _Request(base=str(paths[0]) if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more",
                       domain="target", skip_bad_files=skip_bad_files)
    items: _Items = []
    for path in paths:
        if path.is_dir():
            files = _images_below(path)
            if not files:
                raise TransferlabError(f"no images or audio files in folder {path} (expected files ending in "
                                       f"{' '.join(IMAGE_EXTENSIONS + AUDIO_EXTENSIONS)})")
        elif path.is_file():
            files = [path]
        else:
            raise TransferlabError(f"input not found: {path}")
        items += [(file, None) for file in files]
    return _run({"all": lambda: _file_data(items, [], "all", request)}, ["all"], request)["all"]
