"""What a ``POST /predict`` request holds, read into examples the model takes; every problem a `RequestError`.

Image and audio models take files: a ``multipart/form-data`` body with one or more files in the ``files`` field,
or one file as the raw body (``Content-Type: image/...``, ``audio/...`` or ``application/octet-stream``; its name in
``X-Filename``). Text models take JSON: ``{"texts": ["...", ...]}`` or ``{"text": "..."}``. Uploads are written to
a temporary folder and read exactly as ``transferlab predict`` reads files (header checks, pixel limit).
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from transferlab.data import Examples, TextData, examples_from_paths
from transferlab.data.audio_data import AUDIO_EXTENSIONS
from transferlab.data.image_data import (
    IMAGE_FORMATS,
    ImageReadError,
    max_image_pixels,
    open_image,
)
from transferlab.errors import TransferlabError

__all__ = ["RequestError", "read_examples"]

FILE_FIELDS = ("files", "file")
_IMAGE_SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif",
                   "WEBP": ".webp"}
_RAW_TYPES = ("image/", "audio/", "application/octet-stream")


class RequestError(Exception):
    """A request the server refuses: an HTTP status (4xx) and a message naming the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


async def read_examples(request: Request, modality: str, max_items: int, folder: Path) -> tuple[Examples, list[str]]:
    """The examples of a request for a model reading ``modality``, and a name per example (file names, or the
    texts); uploaded files go into ``folder``.

    Raises:
        RequestError: a body of the wrong type for the model, bad JSON, a wrong field, no items, more than
            ``max_items``, an empty text, or a file that is not an image (or audio file) the model can read.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if modality == "text":
        if content_type != "application/json":
            raise RequestError(415, f"this model reads texts: send JSON {{\"texts\": [...]}} with Content-Type "
                                    f"application/json, not {content_type or 'no Content-Type'}")
        texts = _texts(await request.body(), max_items)
        return TextData(name="request", classes=[], labels=None, texts=texts), texts
    if content_type == "multipart/form-data":
        uploads = await _uploads(request, max_items)
    elif content_type.startswith(_RAW_TYPES):
        uploads = [(request.headers.get("x-filename") or "body", await request.body())]
    else:
        raise RequestError(415, f"this model reads {modality} files: send them as multipart/form-data in the 'files' "
                                f"field, or one file as the raw body, not {content_type or 'no Content-Type'}")
    paths = [_save(folder, index, name, payload, modality) for index, (name, payload) in enumerate(uploads)]
    names = [name for name, _ in uploads]
    try:
        examples = examples_from_paths(paths)
    except TransferlabError as exc:
        message = str(exc)
        for path, name in zip(paths, names, strict=True):
            message = message.replace(str(path), repr(name))
        raise RequestError(400, message.replace(str(folder), "the request")) from None
    return examples, names


def _texts(body: bytes, max_items: int) -> list[str]:
    if not body:
        raise RequestError(400, "the body is empty: send JSON {\"texts\": [...]}")
    try:
        value = json.loads(body)
    except RecursionError:
        raise RequestError(400, "the body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # bad JSON, bad UTF-8, an integer of more than 4300 digits
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RequestError(400, f"the body must be a JSON object {{\"texts\": [...]}}, got a {type(value).__name__}")
    unknown = sorted(set(value) - {"texts", "text"})
    if unknown or len(value) != 1:
        raise RequestError(400, f"the body must have exactly one of the fields 'texts' (a list) or 'text'; got "
                                f"{', '.join(map(repr, sorted(value))) or 'no field'}")
    texts = value.get("texts", [value.get("text")] if "text" in value else None)
    if not isinstance(texts, list):
        raise RequestError(400, f"'texts' must be a list of strings, got a {type(texts).__name__}")
    _check_count(len(texts), max_items)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(400, f"texts[{index}] must be a string, got a {type(text).__name__}")
        if not text.strip():
            raise RequestError(400, f"texts[{index}] is empty")
    return texts


async def _uploads(request: Request, max_items: int) -> list[tuple[str, bytes]]:
    """The files of a multipart body, read while Starlette's spooled copies are open (closed on leaving)."""
    try:
        async with request.form(max_files=max_items, max_fields=max_items) as form:
            uploads = []
            for field, value in form.multi_items():
                if field not in FILE_FIELDS:
                    raise RequestError(400, f"unknown field {field!r}: send files in the 'files' field")
                if not isinstance(value, UploadFile):
                    raise RequestError(400, f"field {field!r} holds text, not a file: send files in the 'files' "
                                            "field")
                uploads.append((value.filename or f"file {len(uploads)}", await value.read()))
    except RequestError:  # ours, or the body outgrew the request limit while it was read (413)
        raise
    except Exception as exc:  # noqa: BLE001 - python-multipart's and Starlette's parse errors
        message = str(getattr(exc, "detail", exc))
        if message.startswith("Too many files"):  # Starlette stopped at max_files
            raise RequestError(413, f"the request holds more than {max_items} items; at most {max_items} per "
                                    "request") from None
        raise RequestError(400, f"the multipart body cannot be read: {message}") from None
    _check_count(len(uploads), max_items)
    return uploads


def _check_count(count: int, max_items: int) -> None:
    if count == 0:
        raise RequestError(400, "the request holds no items")
    if count > max_items:
        raise RequestError(413, f"the request holds {count} items; at most {max_items} per request")


def _save(folder: Path, index: int, name: str, payload: bytes, modality: str) -> Path:
    """The upload as a file the data loaders read, with the suffix its content has.

    An image must be of one of `IMAGE_FORMATS` (415 otherwise; no other format PIL knows is tried) and have at most
    the pixel limit of `transferlab.data.image_data.max_image_pixels` (413), checked from its header.
    """
    if not payload:
        raise RequestError(400, f"item {index} ({name!r}) is empty")
    if modality == "audio":
        suffix = Path(name).suffix.lower()
        if suffix not in AUDIO_EXTENSIONS:
            raise RequestError(415, f"item {index} ({name!r}) is not an audio file this model reads: name it with "
                                    f"one of {', '.join(AUDIO_EXTENSIONS)}")
        path = folder / f"{index}{suffix}"
        path.write_bytes(payload)
        return path
    upload = folder / f"{index}.upload"
    upload.write_bytes(payload)
    limit = max_image_pixels()
    try:
        with open_image(upload, limit, formats=IMAGE_FORMATS) as image:
            suffix = _IMAGE_SUFFIXES[image.format]
    except (ImageReadError, Image.DecompressionBombError):
        raise RequestError(413, f"item {index} ({name!r}) has more pixels than the limit of {limit:,} "
                                "pixels (a guard against decompression bombs)") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise RequestError(415, f"item {index} ({name!r}) is not an image of a format this model reads "
                                f"({', '.join(IMAGE_FORMATS)})") from None
    return upload.rename(folder / f"{index}{suffix}")
