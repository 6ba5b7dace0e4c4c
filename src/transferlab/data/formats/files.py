"""Example files on disk, images or audio: recognising them by extension, finding them below a folder, checking
that they can be read, and building the file-backed `ImageData` or `AudioData` from the readable ones."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.data.audio_data import AUDIO_EXTENSIONS, AudioData, AudioReadError, audio_problem
from transferlab.data.formats.request import LoadRequest
from transferlab.data.hints import setting_hint
from transferlab.data.image_data import ImageData, ImageReadError, max_image_pixels, open_image
from transferlab.errors import TransferlabError

__all__ = ["IMAGE_EXTENSIONS", "EXAMPLE_EXTENSIONS", "FileKind", "IMAGE_FILES", "AUDIO_FILES", "Items",
           "file_kind", "kind_of_files", "is_example_name", "example_files_below", "readable_items",
           "file_examples", "image_problem"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
EXAMPLE_EXTENSIONS = IMAGE_EXTENSIONS + AUDIO_EXTENSIONS

# One (file, class name) pair per example; the class name is None for unlabeled data.
Items = list[tuple[Path, str | None]]


def image_problem(path: Path, request: LoadRequest | None = None) -> str | None:
    """Why ``path`` is not a readable image (a cheap header-level check with PIL's ``verify``; an image above
    ``request.max_image_pixels`` is refused before that), or ``None``."""
    limit = max_image_pixels(request.max_image_pixels if request is not None else None)
    try:
        with open_image(path, limit) as image:
            image.verify()
    except ImageReadError as exc:
        return str(exc)
    except FileNotFoundError:
        return f"cannot read image {path}: file not found"
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, struct.error, ...) for a bad file
        return f"cannot read image {path}: {type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class FileKind:
    """One kind of example file: its container, its read error, how to name it and how to check it.

    Attributes:
        what: the kind in a message, ``"image"`` or ``"audio"``.
        noun: several of them in a message, ``"images"`` or ``"audio files"``.
        container: the data class holding such files.
        error: the error raised for a missing or unreadable file.
        problem: why a file cannot be read under a load request's settings (a message naming it), or ``None``.
        settings: the container's fields that come from the load request (e.g. the image pixel limit).
    """

    what: str
    noun: str
    container: type[ImageData | AudioData]
    error: type[TransferlabError]
    problem: Callable[[Path, LoadRequest], str | None]
    settings: Callable[[LoadRequest], dict] = lambda request: {}

    def examples(self, request: LoadRequest, **fields) -> ImageData | AudioData:
        """The container of these files: ``fields`` plus the request's `settings`."""
        return self.container(**fields, **self.settings(request))


IMAGE_FILES = FileKind("image", "images", ImageData, ImageReadError, image_problem,
                       lambda request: {"max_image_pixels": request.max_image_pixels})
AUDIO_FILES = FileKind("audio", "audio files", AudioData, AudioReadError, lambda path, request: audio_problem(path))


def file_kind(path: Path) -> FileKind:
    """`AUDIO_FILES` for a file with an audio extension, else `IMAGE_FILES`."""
    return AUDIO_FILES if Path(path).suffix.lower() in AUDIO_EXTENSIONS else IMAGE_FILES


def kind_of_files(paths: Sequence[Path], name: str) -> FileKind:
    """The one kind of all ``paths`` (images when there are none).

    Raises:
        TransferlabError: ``paths`` mixes audio files with images (the message names ``name`` and an image).
    """
    kinds = [file_kind(path) for path in paths]
    if AUDIO_FILES in kinds and IMAGE_FILES in kinds:
        example = next(path for path, kind in zip(paths, kinds, strict=True) if kind is IMAGE_FILES)
        raise TransferlabError(f"{name} mixes audio files with images (e.g. {example}); use one kind of data per spec")
    return kinds[0] if kinds else IMAGE_FILES


def is_example_name(name: str) -> bool:
    """Whether a file name is an image or audio file's (hidden files are not)."""
    return not name.startswith(".") and name.lower().endswith(EXAMPLE_EXTENSIONS)


def example_files_below(folder: Path) -> list[Path]:
    """Image and audio files anywhere below ``folder``, skipping hidden files and folders, sorted."""
    found = []
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [Path(directory, name) for name in files if is_example_name(name)]
    return sorted(found)


def readable_items(items: list[tuple[Path, object]], kind: FileKind, request: LoadRequest
                   ) -> list[tuple[Path, object]]:
    """The items whose file ``kind`` can read; bad files raise ``kind.error`` naming the file, or are recorded in
    ``request.skipped`` when ``request.skip_bad_files`` is set."""
    kept = []
    for path, tag in items:
        problem = kind.problem(path, request)
        if problem is None:
            kept.append((path, tag))
        elif request.skip_bad_files:
            request.skipped.append(path)
        else:
            raise kind.error(f"{problem}; fix or remove it, or skip bad files with "
                             f"{setting_hint('skip_bad_files', 'true')}")
    return kept


def file_examples(items: Items, classes: list[str], split: str, request: LoadRequest) -> ImageData | AudioData:
    """Check the files (header-level) and build file-backed `ImageData` (or `AudioData`) from the readable ones.

    Args:
        items: one (file, class name or ``None``) pair per example.
        classes: the class names labels index into; empty for unlabeled data.
        split: the split the items belong to, for the data's name.
        request: the load request (name, domain, bad-file policy).

    Raises:
        TransferlabError: images mixed with audio files; `ImageReadError`/`AudioReadError` for a bad file (unless
            skipped), or when no readable file is left overall or for some class.
    """
    name = request.name(split)
    kind = kind_of_files([path for path, _ in items], name)
    kept = readable_items(items, kind, request)
    if not kept:
        raise kind.error(f"no readable {kind.noun} in {name}")
    lost = {label for _, label in items} - {label for _, label in kept}
    if lost:
        raise kind.error(f"no readable {kind.noun} left for class(es) {sorted(lost)} in {name}")
    index = {class_name: position for position, class_name in enumerate(classes)}
    return kind.examples(
        request,
        name=name,
        classes=list(classes),
        labels=np.array([index[label] for _, label in kept], dtype=np.int64) if classes else None,
        paths=[path for path, _ in kept],
        domain=request.domain,
    )
