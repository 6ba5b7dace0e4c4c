"""CSV manifests of image or audio files: a ``path`` column (relative paths are relative to the CSV) and either an
optional ``label`` column (class-labeled data) or several label columns (the tasks of ``--method multitask``)."""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

from transferlab.data.audio_data import AudioData
from transferlab.data.class_names import sort_class_names
from transferlab.data.csv_fields import allow_long_csv_fields
from transferlab.data.formats.files import Items, file_examples, file_kind, kind_of_files, readable_items
from transferlab.data.formats.request import LoadRequest, SplitLoader
from transferlab.data.hints import setting_hint
from transferlab.data.image_data import ImageData
from transferlab.errors import TransferlabError, suggest

__all__ = ["csv_loaders", "manifest_label_columns", "read_label_columns"]

_CSV_COLUMNS = ("path", "label")


def csv_loaders(csv_path: Path, request: LoadRequest) -> dict[str, SplitLoader]:
    """The one split, ``"all"``, of a ``path[,label]`` manifest; every listed file must exist (or be skipped).

    Labels of a single class are fine (evaluation data; training refuses them).

    Raises:
        TransferlabError: a bad header or row (the message names the CSV); a missing file raises `ImageReadError`
            or `AudioReadError` naming it, unless ``request.skip_bad_files``.
    """
    paths, cells = _read_table(csv_path, request, allowed=_CSV_COLUMNS, labels_required=True)
    labels = cells.get("label")
    items: Items = [(path, None if labels is None else labels[i]) for i, path in enumerate(paths)]
    classes = sort_class_names(labels) if labels is not None else []
    return {"all": partial(file_examples, items, classes, "all", request)}


def manifest_label_columns(csv_path: Path) -> list[str]:
    """The label columns of a CSV manifest: its header without ``path``."""
    allow_long_csv_fields()
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as stream:
            header = next(csv.reader(stream), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TransferlabError(f"cannot read CSV {csv_path}: {exc}") from None
    return [column.strip() for column in header if column.strip() != "path"]


def read_label_columns(
    csv_path: Path, columns: list[str], request: LoadRequest
) -> tuple[ImageData | AudioData, dict[str, list[str]]]:
    """The readable files of a manifest (unlabeled `ImageData` or `AudioData`) and the cells of the label
    ``columns``, row-aligned; empty cells stay ``""`` (no label).

    Raises:
        TransferlabError: the CSV lacks one of ``columns`` (the message lists the columns it has); a missing or
            unreadable file raises `ImageReadError` or `AudioReadError` naming it, unless
            ``request.skip_bad_files``.
    """
    paths, cells = _read_table(csv_path, request, allowed=None, labels_required=False)
    missing = [column for column in columns if column not in cells]
    if missing:
        raise TransferlabError(
            f"CSV {csv_path} has no column {', '.join(repr(c) for c in missing)} for the task(s) asked; "
            f"its columns: path, {', '.join(cells) or '(no label columns)'}"
        )
    kind = kind_of_files(paths, request.base)
    kept = [row for _, row in readable_items([(path, row) for row, path in enumerate(paths)], kind, request)]
    if not kept:
        raise kind.error(f"no readable {kind.noun} in {request.base}")
    examples = kind.examples(request, name=request.base, classes=[], labels=None, paths=[paths[row] for row in kept])
    return examples, {column: [cells[column][row] for row in kept] for column in columns}


def _read_table(
    csv_path: Path, request: LoadRequest, *, allowed: tuple[str, ...] | None, labels_required: bool
) -> tuple[list[Path], dict[str, list[str]]]:
    """Read a manifest: a ``path`` column and label columns.

    Returns the existing files and, per label column, one stripped cell per kept row. With ``allowed``, other
    columns are refused; without ``labels_required``, empty label cells are kept as ``""`` (no label).
    """
    allow_long_csv_fields()
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
    csv_path: Path, reader, columns: list[str], request: LoadRequest, labels_required: bool
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
            kind = file_kind(path)
            raise kind.error(f"{where}: {kind.what} file not found: {path}; fix the row or remove it, or skip "
                             f"missing files with {setting_hint('skip_bad_files', 'true')}")
    if rows == 0:
        raise TransferlabError(f"CSV {csv_path} has a header but no rows")
    if not paths:
        raise file_kind(request.skipped[-1]).error(f"none of the files listed in {csv_path} exists")
    return paths, cells
