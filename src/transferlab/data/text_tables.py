"""Text data from tables: CSV, TSV or JSON Lines with a text column and label columns.

The text column is ``text`` or ``sentence`` unless named (``--text-column``); the class label column is ``label``
unless named (``--label-column``). A table without the label column is unlabeled data (e.g. a target domain).
Empty or whitespace-only texts are skipped with one warning that counts them, or refused (``empty_texts="error"``).
Files must be UTF-8 (a byte-order mark is fine).
"""

from __future__ import annotations

import csv
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.data.class_names import sort_class_names
from transferlab.data.csv_fields import allow_long_csv_fields
from transferlab.data.hints import setting_hint
from transferlab.data.text_data import TextData
from transferlab.errors import TransferlabError

__all__ = ["TextColumns", "TEXT_TABLE_SUFFIXES", "read_text_table", "text_table_data", "table_columns",
           "is_text_table", "text_columns_of", "resolve_text_column"]

log = logging.getLogger("transferlab")

TEXT_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
DEFAULT_TEXT_COLUMNS = ("text", "sentence")


@dataclass(frozen=True)
class TextColumns:
    """Which columns of a table hold the text and the class label, and what to do with empty texts."""

    text: str | None = None  # None: the first of DEFAULT_TEXT_COLUMNS the table has
    label: str = "label"
    empty_texts: str = "skip"  # or "error"


def text_columns_of(config) -> TextColumns:
    """The `TextColumns` a `transferlab.config.FitConfig` names."""
    return TextColumns(config.text_column, config.label_column, config.empty_texts)


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _rows(path: Path):
    """``(line_number, {column: cell})`` of every non-blank row, and the header, of a CSV/TSV/JSONL file."""
    allow_long_csv_fields()
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            if path.suffix.lower() == ".jsonl":
                return _json_lines(path, stream)
            reader = csv.reader(stream, delimiter=_delimiter(path), quoting=_quoting(path))
            header = [cell.strip() for cell in next(reader, [])]
            if not any(header):
                raise TransferlabError(f"{path} is empty; expected a header line naming its columns")
            rows = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise TransferlabError(f"{path} line {reader.line_num} has {len(row)} fields, expected "
                                           f"{len(header)}: {', '.join(header)}")
                rows.append((reader.line_num, dict(zip(header, row))))
            return header, rows
    except UnicodeDecodeError as exc:
        raise TransferlabError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None
    except OSError as exc:
        raise TransferlabError(f"cannot read {path}: {exc}") from None
    except csv.Error as exc:
        raise TransferlabError(f"cannot parse {path}: {exc}") from None


def _quoting(path: Path) -> int:
    # TSV exports such as GLUE's hold bare quote characters inside sentences: read them literally
    return csv.QUOTE_NONE if path.suffix.lower() == ".tsv" else csv.QUOTE_MINIMAL


def _json_lines(path: Path, stream) -> tuple[list[str], list[tuple[int, dict]]]:
    header: dict[str, None] = {}
    rows = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TransferlabError(f"{path} line {number} is not valid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise TransferlabError(f"{path} line {number} must be a JSON object, got {type(record).__name__}")
        header.update(dict.fromkeys(record))
        rows.append((number, {key: "" if value is None else str(value) for key, value in record.items()}))
    if not rows:
        raise TransferlabError(f"{path} holds no JSON lines")
    return list(header), rows


def is_text_table(path: Path, columns: TextColumns | None = None) -> bool:
    """Whether ``path`` is a table of texts: a TSV or JSONL file, or a CSV with a text column and no ``path`` one."""
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".jsonl"):
        return True
    if suffix != ".csv":
        return False
    header = table_columns(path)
    wanted = (columns.text,) if columns is not None and columns.text else DEFAULT_TEXT_COLUMNS
    return "path" not in header and any(name in header for name in wanted)


def table_columns(path: Path) -> list[str]:
    """The header of a CSV/TSV file, or the keys of a JSONL file's first record."""
    allow_long_csv_fields()
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            if path.suffix.lower() == ".jsonl":
                first = next((line for line in stream if line.strip()), "{}")
                record = json.loads(first)
                return list(record) if isinstance(record, dict) else []
            return [cell.strip() for cell in next(csv.reader(stream, delimiter=_delimiter(path)), [])]
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, OSError):
        return []  # read_text_table reports the problem with the file's name


def resolve_text_column(path: Path, header: list[str], columns: TextColumns) -> str:
    """The text column of a table with ``header``: the named one, else the first of ``text``, ``sentence``."""
    if columns.text is not None:
        if columns.text not in header:
            raise TransferlabError(f"{path} has no text column {columns.text!r}; its columns: {', '.join(header)}")
        return columns.text
    for name in DEFAULT_TEXT_COLUMNS:
        if name in header:
            return name
    raise TransferlabError(f"{path} has no text column ('text' or 'sentence'); its columns: {', '.join(header)}; "
                           f"name it with {setting_hint('text_column', 'NAME')}")


def read_text_table(path: Path, columns: TextColumns, label_columns: list[str] | None = None
                    ) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Read the texts of a table and the cells of its label columns, row-aligned.

    Args:
        path: a ``.csv``, ``.tsv`` or ``.jsonl`` file.
        columns: which column is the text, and the empty-text policy.
        label_columns: label columns to read; ``None`` reads ``columns.label`` when the table has it.

    Returns:
        ``(texts, cells, header)``: the kept texts, per label column one stripped cell per kept text (``""`` when
        empty), and every column of the table.

    Raises:
        TransferlabError: unreadable or non-UTF-8 file, missing text column or asked-for label column (the message
            lists the columns found), empty texts when ``columns.empty_texts == "error"``, or no text left.
    """
    header, rows = _rows(path)
    text_column = resolve_text_column(path, header, columns)
    if label_columns is None:
        label_columns = [columns.label] if columns.label in header else []
    missing = [name for name in label_columns if name not in header]
    if missing:
        raise TransferlabError(f"{path} has no column {', '.join(repr(m) for m in missing)}; its columns: "
                               f"{', '.join(header)}")
    texts, cells, empty = [], {name: [] for name in label_columns}, []
    for line, row in rows:
        text = row.get(text_column, "")
        if not text.strip():
            empty.append(line)
            continue
        texts.append(text.strip())
        for name in label_columns:
            cells[name].append(row.get(name, "").strip())
    if empty:
        lines = ", ".join(str(line) for line in empty[:10]) + (" ..." if len(empty) > 10 else "")
        if columns.empty_texts == "error":
            raise TransferlabError(f"{path} has {len(empty)} empty text(s) in column {text_column!r} (lines {lines}); "
                                   f"fill or remove them, or skip them with {setting_hint('empty_texts', 'skip')}")
        warnings.warn(f"skipped {len(empty)} empty text(s) of {path} (lines {lines})", stacklevel=2)
    if not texts:
        raise TransferlabError(f"{path} holds no non-empty text in column {text_column!r}")
    return texts, cells, header


def text_table_data(path: Path, columns: TextColumns, *, name: str, domain: str) -> TextData:
    """A text table as `TextData`: labeled when it has the label column (every row must then have a label); a
    single class is fine (evaluation data; training refuses it).

    Args:
        path: a ``.csv``, ``.tsv`` or ``.jsonl`` file.
        columns: the text and label columns, and the empty-text policy.
        name: the data's name (the spec the user gave).
        domain: ``"source"`` or ``"target"``.

    Raises:
        TransferlabError: as `read_text_table`, or a label column with an empty cell.
    """
    texts, cells, header = read_text_table(path, columns)
    labels = cells.get(columns.label)
    if labels is None:
        log.info("%s has no label column %r (columns: %s): unlabeled texts", path, columns.label, ", ".join(header))
        return TextData(name=name, classes=[], labels=None, texts=texts, domain=domain)
    empty = sum(1 for label in labels if not label)
    if empty:
        raise TransferlabError(f"{path} has {empty} text(s) with an empty {columns.label!r} label; "
                               "label every row, or drop the label column for unlabeled data")
    classes = sort_class_names(labels)
    index = {class_name: position for position, class_name in enumerate(classes)}
    return TextData(name=name, classes=classes, labels=np.array([index[label] for label in labels]), texts=texts,
                    domain=domain)
