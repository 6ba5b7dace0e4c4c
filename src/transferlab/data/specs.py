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

Detection data (``voc:``, ``coco:``, ``yolo:`` or a folder laid out as one of them) is refused with a one-line error
pointing to ``--method detection``; `transferlab.data.detection` reads it.

This module is the grammar and the dispatch; each format is read by its own module of `transferlab.data.formats`
(digits, folders, manifests) or by `transferlab.data.text_tables`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from transferlab.data.audio_data import AUDIO_EXTENSIONS
from transferlab.data.class_names import sort_class_names
from transferlab.data.detection.layout import DETECTION_KINDS, FORMAT_LAYOUTS, detect_format
from transferlab.data.examples import Examples
from transferlab.data.formats.digits import looks_like_digit_files, mnist_loaders, sklearn_digits_loaders, usps_loaders
from transferlab.data.formats.files import (
    EXAMPLE_EXTENSIONS,
    IMAGE_EXTENSIONS,
    Items,
    example_files_below,
    file_examples,
)
from transferlab.data.formats.folders import folder_loaders, visible_subfolders
from transferlab.data.formats.manifests import csv_loaders, manifest_label_columns, read_label_columns
from transferlab.data.formats.request import SPLITS, LoadRequest, SplitLoader, choose_split, run_loaders
from transferlab.data.hints import setting_hint
from transferlab.data.image_data import DOMAINS
from transferlab.data.text_data import TextData
from transferlab.data.text_tables import (
    TEXT_TABLE_SUFFIXES,
    TextColumns,
    is_text_table,
    read_text_table,
    resolve_text_column,
    table_columns,
    text_table_data,
)
from transferlab.errors import TransferlabError, suggest

__all__ = ["load_splits", "load_data", "choose_split", "examples_from_paths", "manifest_columns",
           "read_manifest_columns", "sort_class_names", "KINDS", "SPLITS", "IMAGE_EXTENSIONS", "AUDIO_EXTENSIONS",
           "TextColumns"]

KINDS = ("sklearn-digits", "mnist", "usps", "folder", "csv")

_SPLIT_SELECTORS = SPLITS + ("all",)
# At least two letters before the colon, so that a Windows drive ("C:\data") is not read as a kind.
_KIND_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9_-]+):(.*)", re.DOTALL)

log = logging.getLogger("transferlab")


def load_splits(spec: str, *, skip_bad_files: bool = False, domain: str = "target",
                columns: TextColumns | None = None, max_image_pixels: int | None = None) -> dict[str, Examples]:
    """Load every split a data spec names (or the one its ``@split`` suffix picks).

    Args:
        spec: ``[kind:]location[@split]``, see the module docstring.
        skip_bad_files: drop image or audio files that are unreadable (or, in a CSV, missing) and warn once listing
            them, instead of raising.
        domain: ``"source"`` or ``"target"``, stored on every returned container.
        columns: the text and label columns of text tables (default: ``text``/``sentence`` and ``label``).
        max_image_pixels: image files with more pixels are bad files (an error naming the file and the limit, or
            skipped with ``skip_bad_files``); ``None``: the ``TRANSFERLAB_MAX_IMAGE_PIXELS`` environment variable,
            else `transferlab.data.image_data.DEFAULT_MAX_IMAGE_PIXELS`.

    Returns:
        Split name (``"train"``, ``"val"``, ``"test"`` or ``"all"``) -> `ImageData`, `TextData` or `AudioData`,
        in that order.

    Raises:
        TransferlabError: the spec, a path or a file is wrong; `ImageReadError` or `AudioReadError` for an
            unreadable file.
    """
    split, request, loaders = _open(spec, skip_bad_files, domain, columns, max_image_pixels)
    return run_loaders(loaders, [split] if split else list(loaders), request)


def load_data(
    spec: str,
    *,
    split_preference: tuple[str, ...],
    skip_bad_files: bool = False,
    domain: str = "target",
    columns: TextColumns | None = None,
    max_image_pixels: int | None = None,
) -> Examples:
    """Load one split of a data spec: the ``@split`` it names, else the first of ``split_preference`` it has.

    Only the chosen split is read. Data with a single split (e.g. a folder of class folders) gives that split
    whatever the preference.

    Args:
        spec: ``[kind:]location[@split]``, see the module docstring.
        split_preference: split names to try in order, e.g. ``("val", "test")`` for evaluation data.
        skip_bad_files: see `load_splits`.
        domain: see `load_splits`.
        columns: see `load_splits`.
        max_image_pixels: see `load_splits`.

    Raises:
        TransferlabError: as `load_splits`, or when the data has several splits and none is preferred (the message
            names the splits found).
    """
    if isinstance(split_preference, str):
        split_preference = (split_preference,)
    split, request, loaders = _open(spec, skip_bad_files, domain, columns, max_image_pixels)
    if split is None:
        split = choose_split(request.base, list(loaders), split_preference)
    return run_loaders(loaders, [split], request)[split]


def _open(spec: str, skip_bad_files: bool, domain: str, columns: TextColumns | None = None,
          max_image_pixels: int | None = None) -> tuple[str | None, LoadRequest, dict[str, SplitLoader]]:
    if domain not in DOMAINS:
        raise TransferlabError(f"unknown domain {domain!r}; expected one of: {', '.join(DOMAINS)}")
    base, kind, location, split = _parse_spec(spec)
    request = LoadRequest(base, domain, skip_bad_files, columns or TextColumns(), max_image_pixels)
    loaders = _split_loaders(kind, location, request)
    if split is not None and split not in loaders:
        raise TransferlabError(f"split {split!r} not found in {base!r}; it has: {', '.join(loaders)}")
    return split, request, loaders


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
        if kind in DETECTION_KINDS:
            raise TransferlabError(f"{spec!r} names {kind} detection data, which a classifier cannot train on; use "
                                   "--method detection")
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


def _split_loaders(kind: str | None, location: str, request: LoadRequest) -> dict[str, SplitLoader]:
    """Check the location and return one loader per split it holds (cheap: reading happens in the loaders)."""
    if kind == "sklearn-digits":
        if location:
            raise TransferlabError(f"'sklearn-digits' takes no location, got {location!r} in {request.base!r}")
        return sklearn_digits_loaders(request)
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
        return mnist_loaders(path, request)
    if kind == "usps":
        return usps_loaders(path, request)
    if kind in (None, "folder") and (detected := detect_format(path)) is not None:
        raise TransferlabError(f"{path} is detection data ({FORMAT_LAYOUTS[detected]}), not images by class; use "
                               "--method detection")
    if path.is_dir():
        if kind is None and not visible_subfolders(path) and looks_like_digit_files(path):
            raise TransferlabError(f"{path} holds MNIST or USPS files, not images; use 'mnist:{path}' or 'usps:{path}'")
        return folder_loaders(path, request)
    if is_text_table(path, request.columns):
        return {"all": partial(text_table_data, path, request.columns, name=request.base, domain=request.domain)}
    if path.suffix.lower() == ".csv" and "path" not in (header := table_columns(path)) and any(header):
        text = f"'{request.columns.text}'" if request.columns.text else "'text' or 'sentence'"
        raise TransferlabError(f"{path} has no 'path' column (an image or audio manifest) and no text column ({text}; "
                               f"name it with {setting_hint('text_column', 'NAME')}); its columns: {', '.join(header)}")
    if kind == "csv" or path.suffix.lower() == ".csv":
        return csv_loaders(path, request)
    raise TransferlabError(
        f"{path} is a file but not a .csv manifest or a text table (.csv, .tsv, .jsonl); expected a folder of images "
        f"or audio, such a file, or a kind prefix ({', '.join(KINDS)})"
    )


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
    return manifest_label_columns(path)


def read_manifest_columns(
    spec: str, columns: list[str], *, skip_bad_files: bool = False, text_columns: TextColumns | None = None,
    max_image_pixels: int | None = None,
) -> tuple[Examples, dict[str, list[str]]]:
    """Examples of a CSV manifest or text table (unlabeled `ImageData`, `AudioData` or `TextData`) and the cells of
    the named label columns, row-aligned.

    Empty cells stay ``""`` (no label). Rows whose file is missing or unreadable are dropped with a warning when
    ``skip_bad_files`` is set, else raise `ImageReadError` or `AudioReadError` naming the file (images above
    ``max_image_pixels`` too, see `load_splits`).

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
    request = LoadRequest(base, "target", skip_bad_files, text_columns or TextColumns(), max_image_pixels)
    if is_text_table(path, request.columns):
        texts, cells, _ = read_text_table(path, request.columns, label_columns=list(columns))
        return TextData(name=base, classes=[], labels=None, texts=texts), cells
    read = partial(read_label_columns, path, columns, request)
    return run_loaders({"all": read}, ["all"], request)["all"]  # warns once about skipped bad files


def examples_from_paths(paths: Iterable[Path | str], *, skip_bad_files: bool = False,
                        columns: TextColumns | None = None, max_image_pixels: int | None = None) -> Examples:
    """Unlabeled data from image or audio files and folders (searched recursively), in the order given, from one
    text table (CSV/TSV/JSONL with a text column; its label column, if any, is ignored), or from one CSV manifest
    (the files of its ``path`` column; its label columns are ignored).

    Used by ``transferlab predict``. Unreadable files raise an error naming the file, or are skipped with one
    warning listing them when ``skip_bad_files`` is set; so are images above ``max_image_pixels`` (see
    `load_splits`).

    Raises:
        TransferlabError: no inputs, an input that does not exist, or a folder without image or audio files (the
            message names the extensions looked for).
    """
    paths = [Path(path) for path in paths]
    if not paths:
        raise TransferlabError("no inputs given")
    if len(paths) == 1 and paths[0].is_file() and manifest_columns(str(paths[0]), columns) is not None:
        # a text table or a CSV manifest: its texts or files, whatever label columns it has
        return read_manifest_columns(str(paths[0]), [], skip_bad_files=skip_bad_files, text_columns=columns,
                                     max_image_pixels=max_image_pixels)[0]
    request = LoadRequest(base=str(paths[0]) if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more",
                          domain="target", skip_bad_files=skip_bad_files, max_image_pixels=max_image_pixels)
    items: Items = []
    for path in paths:
        if path.is_dir():
            files = example_files_below(path)
            if not files:
                raise TransferlabError(f"no images or audio files in folder {path} (expected files ending in "
                                       f"{' '.join(EXAMPLE_EXTENSIONS)})")
        elif path.is_file():
            files = [path]
        else:
            raise TransferlabError(f"input not found: {path}")
        items += [(file, None) for file in files]
    return run_loaders({"all": partial(file_examples, items, [], "all", request)}, ["all"], request)["all"]
