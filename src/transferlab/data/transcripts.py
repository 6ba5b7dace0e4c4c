"""Transcribed speech: CSV manifests of ``path,transcript`` rows, and the CTC vocabulary of their characters.

Transcripts are used as written, except that surrounding whitespace is stripped and runs of whitespace become
one space. **Case is kept**: ``"A"`` and ``"a"`` are different characters of the vocabulary, so lower-case the
transcripts beforehand when case carries no meaning for you. The vocabulary is every character of the training
(and validation) transcripts, with the space written as wav2vec2's word delimiter ``|``, plus ``<pad>`` (the CTC
blank, id 0) and ``<unk>``. A transcript may therefore not contain ``|`` itself.

Evaluation data whose references hold characters the model cannot write is an error naming the row and the
characters: a WER/CER over references the model can never match would be silently inflated.

The manifest is read here rather than by `transferlab.data.load_data`: its CSV reader gives class labels, not
free text per clip, and a transcript manifest must name bad rows and characters its own way.
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from transferlab.data.audio_data import AudioData, AudioReadError, audio_problem
from transferlab.data.csv_fields import allow_long_csv_fields
from transferlab.data.hints import setting_hint
from transferlab.errors import TransferlabError

__all__ = [
    "BLANK",
    "UNKNOWN",
    "WORD_DELIMITER",
    "build_vocabulary",
    "drop_long_clips",
    "load_transcribed_audio",
    "normalize_transcript",
    "outside_vocabulary",
]

log = logging.getLogger("transferlab")

BLANK = "<pad>"  # the CTC blank is the tokenizer's padding token, as in wav2vec2
UNKNOWN = "<unk>"
WORD_DELIMITER = "|"
_CSV_PREFIX = "csv:"
_WHITESPACE = re.compile(r"\s+")


def normalize_transcript(text: str) -> str:
    """``text`` stripped, with every run of whitespace made one space; case and punctuation are kept."""
    return _WHITESPACE.sub(" ", text).strip()


def build_vocabulary(transcripts: Iterable[str]) -> dict[str, int]:
    """Token -> id for a CTC head: ``<pad>`` (the blank) 0, ``<unk>`` 1, ``|`` (the space) 2, then the other
    characters of ``transcripts`` in sorted order."""
    characters = sorted({char for text in transcripts for char in text} - {" "})
    tokens = [BLANK, UNKNOWN, WORD_DELIMITER, *characters]
    return {token: index for index, token in enumerate(tokens)}


def outside_vocabulary(text: str, characters: set[str]) -> list[str]:
    """The characters of ``text`` (spaces aside) that are not in ``characters``, sorted."""
    return sorted(set(text) - characters - {" "})


def load_transcribed_audio(
    spec: str | Path,
    *,
    transcript_column: str = "transcript",
    skip_bad_files: bool = False,
    vocabulary: set[str] | None = None,
    domain: str = "target",
) -> AudioData:
    """Read a CSV manifest (``[csv:]FILE.csv``) of audio files and their transcripts into `AudioData`.

    The manifest needs a ``path`` column (relative paths are relative to the CSV) and ``transcript_column``;
    other columns are ignored. Every file is checked at header level: it must exist, be audio libsndfile reads and
    hold samples.

    Args:
        spec: the manifest, optionally prefixed ``csv:``.
        transcript_column: the column holding the transcripts.
        skip_bad_files: drop rows whose file is missing, unreadable or empty, with one warning listing them,
            instead of raising.
        vocabulary: the characters a model can write; a transcript holding others raises (evaluation data).
        domain: ``"source"`` or ``"target"``.

    Raises:
        TransferlabError: the manifest is missing or malformed, lacks a column (the message lists the columns
            found), a row has an empty transcript, a transcript holds ``|`` or characters outside ``vocabulary``.
        AudioReadError: an audio file is missing, unreadable or zero-length (without ``skip_bad_files``).
    """
    csv_path = _manifest_path(spec)
    header, rows = _read_csv(csv_path)
    path_index, text_index = _column_indices(csv_path, header, transcript_column)
    paths, transcripts, skipped = [], [], []
    for row_number, line, row in rows:
        where = f"{csv_path} row {row_number} (line {line})"
        if len(row) != len(header):
            raise TransferlabError(f"{where} has {len(row)} fields, expected {len(header)}: {', '.join(header)}")
        transcript = _checked_transcript(row[text_index], where, transcript_column, vocabulary)
        path = _resolve(row[path_index].strip(), csv_path, where)
        problem = audio_problem(path)
        if problem is not None:
            if not skip_bad_files:
                raise AudioReadError(f"{where}: {problem}; fix or remove it, or skip bad files with "
                                      f"{setting_hint('skip_bad_files', 'true')}")
            skipped.append(path)
            continue
        paths.append(path)
        transcripts.append(transcript)
    _warn_skipped(skipped, csv_path)
    if not paths:
        raise AudioReadError(f"no readable audio files in {csv_path}")
    return AudioData(name=str(spec), classes=[], labels=None, paths=paths, transcripts=transcripts, domain=domain)


def _manifest_path(spec: str | Path) -> Path:
    text = str(spec)
    path = Path(text[len(_CSV_PREFIX):] if text.startswith(_CSV_PREFIX) else text).expanduser()
    if not path.is_file():
        raise TransferlabError(f"transcript manifest not found: {str(path)!r}; expected a CSV file with columns "
                               "path and transcript")
    if path.suffix.lower() != ".csv":
        raise TransferlabError(f"{path} is not a .csv manifest; speech recognition data is a CSV with columns path "
                               "and transcript")
    return path


def _read_csv(csv_path: Path) -> tuple[list[str], list[tuple[int, int, list[str]]]]:
    """The stripped header and the non-blank rows as ``(row number, line number, cells)``."""
    allow_long_csv_fields()
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.reader(stream)
            header = [cell.strip() for cell in next(reader, [])]
            rows = []
            for row in reader:
                if any(cell.strip() for cell in row):
                    rows.append((len(rows) + 1, reader.line_num, row))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TransferlabError(f"cannot read CSV {csv_path}: {exc}") from None
    if not rows:
        raise TransferlabError(f"CSV {csv_path} has no rows (expected a header line and one row per audio file)")
    return header, rows


def _column_indices(csv_path: Path, header: list[str], transcript_column: str) -> tuple[int, int]:
    missing = [column for column in ("path", transcript_column) if column not in header]
    if missing:
        raise TransferlabError(
            f"CSV {csv_path} has no column {' or '.join(repr(c) for c in missing)}; its columns: "
            f"{', '.join(repr(c) for c in header) or '(none)'}; speech recognition needs 'path' and the transcript "
            f"column (name it with {setting_hint('transcript_column', 'NAME')})"
        )
    if len(set(header)) != len(header):
        raise TransferlabError(f"CSV {csv_path} repeats a column in its header: {', '.join(header)}")
    return header.index("path"), header.index(transcript_column)


def _checked_transcript(cell: str, where: str, column: str, vocabulary: set[str] | None) -> str:
    transcript = normalize_transcript(cell)
    if not transcript:
        raise TransferlabError(f"{where} has an empty {column!r}; every clip needs its transcript")
    if WORD_DELIMITER in transcript:
        raise TransferlabError(f"{where}: the transcript {transcript!r} holds {WORD_DELIMITER!r}, which is the word "
                               "delimiter of the CTC vocabulary; remove or replace it")
    if vocabulary is not None:
        unknown = outside_vocabulary(transcript, vocabulary)
        if unknown:
            raise TransferlabError(
                f"{where}: the transcript {transcript!r} holds characters the model cannot write: "
                f"{', '.join(repr(c) for c in unknown)}; its vocabulary: {''.join(sorted(vocabulary))!r}. "
                "Map them to known characters or remove the row"
            )
    return transcript


def _resolve(cell: str, csv_path: Path, where: str) -> Path:
    if not cell:
        raise TransferlabError(f"{where} has an empty path")
    path = Path(cell).expanduser()
    return path if path.is_absolute() else csv_path.parent / path


def _warn_skipped(skipped: list[Path], source) -> None:
    if skipped:
        files = ", ".join(str(path) for path in skipped)
        warnings.warn(f"skipped {len(skipped)} bad audio file(s) in {source}: {files}", stacklevel=3)


def drop_long_clips(data: AudioData, max_seconds: float) -> AudioData:
    """The clips of ``data`` that last at most ``max_seconds`` (for training: cutting a clip would cut its
    transcript's alignment too), with one warning when some are left out.

    Raises:
        TransferlabError: every clip is longer.
    """
    import soundfile  # imported here: only audio data needs it

    seconds = np.array([soundfile.info(str(path)).duration for path in data.paths])
    keep = np.flatnonzero(seconds <= max_seconds)
    if len(keep) == 0:
        raise TransferlabError(f"every clip of {data.name} is longer than max_seconds {max_seconds:g} (the shortest "
                               f"lasts {seconds.min():.1f} s); raise {setting_hint('max_seconds')}")
    if len(keep) < len(data):
        log.warning("training on %d of %d clips of %s: %d are longer than max_seconds %g (longest %.1f s)",
                    len(keep), len(data), data.name, len(data) - len(keep), max_seconds, seconds.max())
    return data.subset(keep)
