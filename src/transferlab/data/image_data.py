"""`ImageData`: a list of images (files or in-memory pixels) with optional labels and a domain tag."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from transferlab.data.digests import file_digest
from transferlab.data.hints import setting_hint
from transferlab.errors import TransferlabError

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DOMAINS",
    "IMAGE_FORMATS",
    "MAX_IMAGE_PIXELS_VARIABLE",
    "ImageData",
    "ImageReadError",
    "LabeledExamples",
    "align_classes",
    "keep_classes",
    "max_image_pixels",
    "open_image",
]

DOMAINS = ("source", "target")

# images with more pixels are refused before decoding (a guard against decompression bombs): PIL's default limit,
# 1 GiB of 32-bit pixels / 3; the environment variable, then the max_image_pixels setting, override it
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
MAX_IMAGE_PIXELS_VARIABLE = "TRANSFERLAB_MAX_IMAGE_PIXELS"

# the PIL formats of the image files transferlab reads (`transferlab.data.formats.files.IMAGE_EXTENSIONS`); PIL's
# JPEG opener also opens a multi-picture JPEG (format "MPO")
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")

# how image bytes become pixels (`transferlab.data.image_modes`), part of the feature cache's key: version 2 scales
# high-bit-depth images and composites transparency on white (version 1 clipped and dropped alpha)
DECODING = b"transferlab image decoding 2\n"


def max_image_pixels(setting: int | None = None) -> int:
    """The image size limit in force: ``setting`` when given, else the ``TRANSFERLAB_MAX_IMAGE_PIXELS`` environment
    variable, else `DEFAULT_MAX_IMAGE_PIXELS`.

    Raises:
        TransferlabError: the environment variable is not a positive whole number (the message names it).
    """
    if setting is not None:
        return int(setting)
    value = os.environ.get(MAX_IMAGE_PIXELS_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_IMAGE_PIXELS
    digits = value.replace("_", "").replace(",", "")
    if not digits.isdigit() or int(digits) < 1:
        raise TransferlabError(f"environment variable {MAX_IMAGE_PIXELS_VARIABLE}={value!r} is not a positive number "
                               f"of pixels (e.g. {MAX_IMAGE_PIXELS_VARIABLE}=200000000)")
    return int(digits)


class ImageReadError(TransferlabError):
    """An image file that is missing, unreadable, not an image, or larger than the pixel limit."""


_pil_limit_lock = threading.Lock()
_pil_limit_users = 0
_pil_limit_saved: int | None = None


@contextmanager
def _pil_pixel_limit_lifted() -> Iterator[None]:
    """Turn off PIL's own decompression-bomb check (a warning above its fixed limit, an error above twice that),
    which `open_image` replaces; PIL's limit is process-wide, so it is restored when the last user is done."""
    global _pil_limit_users, _pil_limit_saved
    with _pil_limit_lock:
        if _pil_limit_users == 0:
            _pil_limit_saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        _pil_limit_users += 1
    try:
        yield
    finally:
        with _pil_limit_lock:
            _pil_limit_users -= 1
            if _pil_limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _pil_limit_saved


@contextmanager
def open_image(path: Path, limit: int, formats: tuple[str, ...] | None = None) -> Iterator[Image.Image]:
    """``path`` opened with PIL (its header read, its pixels not yet), once its size is checked against ``limit``.

    Args:
        path: the image file.
        limit: the most pixels the image may have.
        formats: the PIL formats to try (e.g. `IMAGE_FORMATS`, for files from untrusted senders); ``None``: all.

    Raises:
        ImageReadError: the image has more than ``limit`` pixels; the message names the file, its size and the
            limit, and how to raise it. PIL's errors for a missing or unreadable file (or one of none of
            ``formats``: ``UnidentifiedImageError``) pass through.
    """
    with _pil_pixel_limit_lifted(), Image.open(path, formats=formats) as image:
        width, height = image.size
        if width * height > limit:
            raise ImageReadError(
                f"image {path} is {width}x{height} ({width * height:,} pixels), more than the limit of {limit:,} "
                "pixels that guards against decompression bombs; raise it with "
                f"{setting_hint('max_image_pixels', 'N')} or the environment variable {MAX_IMAGE_PIXELS_VARIABLE}"
            )
        yield image


class LabeledExamples:
    """What `ImageData`, `TextData` and `AudioData` share: ``name``, ``classes``, ``labels`` (int64 or ``None``)
    and a ``domain`` tag, checked in one place; subclasses are dataclasses with those fields and set ``noun`` and
    ``per_example`` (their other fields holding one entry per example, which `subset` takes along)."""

    noun = "examples"
    per_example: tuple[str, ...] = ()

    def _check_domain_and_labels(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {self.domain!r}")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if len(self.labels) != len(self):
                raise ValueError(f"{len(self.labels)} labels for {len(self)} {self.noun} in {self.name}")

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def describe(self) -> str:
        labels = "unlabeled" if self.labels is None else f"{len(self.classes)} classes"
        return f"{self.name}: {len(self)} {self.noun}, {labels}, {self.domain} domain"

    def subset(self, indices):
        """A new container of the same kind holding the examples at ``indices`` (in that order)."""
        indices = np.asarray(indices, dtype=np.int64)

        def take(values):
            if values is None:
                return None
            return values[indices] if isinstance(values, np.ndarray) else [values[i] for i in indices]

        return replace(self, labels=take(self.labels), _digests={},
                       **{name: take(getattr(self, name)) for name in self.per_example})


@dataclass
class ImageData(LabeledExamples):
    """Images of one domain, backed by files (``paths``) or by an in-memory array (``pixels``).

    Attributes:
        name: where the data came from (the spec the user gave), used in messages and reports.
        classes: class names; ``labels`` index into it. Empty for unlabeled data.
        labels: ``(N,)`` int64 class indices, or ``None`` when the data has no labels.
        paths: image files, one per example (file-backed data).
        pixels: ``(N, H, W)`` or ``(N, H, W, C)`` uint8 array (in-memory data).
        domain: ``"source"`` or ``"target"``.
        max_image_pixels: files with more pixels are refused before decoding; ``None``: `max_image_pixels()`.
    """

    name: str
    classes: list[str]
    labels: np.ndarray | None
    paths: list[Path] | None = None
    pixels: np.ndarray | None = None
    domain: str = "target"
    max_image_pixels: int | None = None
    _digests: dict[int, str] = field(default_factory=dict, repr=False, compare=False)
    noun = "images"
    per_example = ("paths", "pixels")

    def __post_init__(self) -> None:
        if (self.paths is None) == (self.pixels is None):
            raise ValueError("ImageData needs exactly one of `paths` or `pixels`")
        self._check_domain_and_labels()

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else len(self.pixels)

    def load_image(self, index: int, draft: tuple[str, int] | None = None) -> Image.Image:
        """Return image ``index`` as a PIL image in its stored mode; raise `ImageReadError` naming the file (also for
        a file above the pixel limit, before it is decoded).

        ``draft=(mode, size)`` lets JPEG decoding skip resolution it does not need: the decoded image keeps both
        sides at least ``size`` pixels (PIL draft mode; other formats ignore it).
        """
        if self.pixels is not None:
            return Image.fromarray(self.pixels[index])
        path = self.paths[index]
        try:
            with open_image(path, max_image_pixels(self.max_image_pixels)) as image:
                if draft is not None and image.format == "JPEG":
                    image.draft(draft[0], (draft[1], draft[1]))
                image.load()
                return image
        except ImageReadError:
            raise
        except FileNotFoundError:
            raise ImageReadError(f"image file not found: {path}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageReadError(f"cannot read image {path}: {exc}") from None

    def content_digest(self, index: int) -> str:
        """SHA-1 of the example's bytes (file contents or pixel array) and of `DECODING`: the key of the feature
        cache, so features of images decoded another way are not reused."""
        if self.pixels is None:
            return file_digest(self._digests, index, self.paths[index], tag=DECODING, error=ImageReadError,
                               noun="image")
        digest = self._digests.get(index)
        if digest is None:
            item = np.ascontiguousarray(self.pixels[index])
            payload = DECODING + str(item.shape).encode() + item.tobytes()
            digest = self._digests[index] = hashlib.sha1(payload).hexdigest()
        return digest


def align_classes(data: LabeledExamples, classes: list[str]) -> LabeledExamples:
    """Express ``data``'s labels in the order of ``classes`` (matched by name)."""
    if data.classes == classes:
        return data
    unknown = sorted(set(data.classes) - set(classes))
    if unknown:
        raise TransferlabError(
            f"{data.name} has classes not in the training data: {', '.join(unknown)} "
            f"(training classes: {', '.join(classes)})"
        )
    position = {name: i for i, name in enumerate(classes)}
    labels = np.array([position[data.classes[label]] for label in data.labels], dtype=np.int64)
    return replace(data, classes=list(classes), labels=labels, _digests=dict(data._digests))


def keep_classes(data: LabeledExamples, classes: list[str] | None) -> LabeledExamples:
    """Only the examples of ``classes`` (e.g. polarity without ``neutral``), with the class list reduced to the
    kept classes present; ``None`` keeps everything, and so does unlabeled data.

    Raises:
        TransferlabError: a named class the data does not have (the message lists the classes it has).
    """
    if classes is None or data.labels is None:
        return data
    unknown = [name for name in classes if name not in data.classes]
    if unknown:
        raise TransferlabError(f"{data.name} has no class {', '.join(repr(c) for c in unknown)} (from --classes); "
                               f"its classes: {', '.join(data.classes)}")
    kept_names = [name for name in data.classes if name in classes]
    wanted = np.isin(data.labels, [data.classes.index(name) for name in kept_names])
    subset = data.subset(np.flatnonzero(wanted))
    position = {name: i for i, name in enumerate(kept_names)}
    labels = np.array([position[data.classes[label]] for label in subset.labels], dtype=np.int64)
    return replace(subset, classes=kept_names, labels=labels, _digests=dict(subset._digests))
