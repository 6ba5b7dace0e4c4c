"""Digit sets held in memory: scikit-learn's 8x8 digits, MNIST IDX files and the USPS digits of *The Elements of
Statistical Learning*, each read into `ImageData` with classes ``"0"`` to ``"9"``."""

from __future__ import annotations

import gzip
import io
import zlib
from functools import partial
from pathlib import Path

import numpy as np

from transferlab.data.formats.request import LoadRequest, SplitLoader
from transferlab.data.image_data import ImageData
from transferlab.errors import TransferlabError

__all__ = ["sklearn_digits_loaders", "mnist_loaders", "usps_loaders", "looks_like_digit_files"]

_DIGIT_CLASSES = tuple(str(digit) for digit in range(10))
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_IMAGES_MAGIC = 0x0803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x0801  # unsigned bytes, 1 dimension
_USPS_FILES = {"train": "zip.train", "test": "zip.test"}
_USPS_COLUMNS = 1 + 16 * 16


def sklearn_digits_loaders(request: LoadRequest) -> dict[str, SplitLoader]:
    """scikit-learn's embedded 8x8 digits: one split, ``"all"``."""
    return {"all": partial(_read_sklearn_digits, request)}


def mnist_loaders(root: Path, request: LoadRequest) -> dict[str, SplitLoader]:
    """MNIST IDX files (gzipped or not) in folder ``root``: splits ``"train"`` and ``"test"``."""
    return {split: partial(_read_mnist_split, root, split, request) for split in _MNIST_FILES}


def usps_loaders(root: Path, request: LoadRequest) -> dict[str, SplitLoader]:
    """USPS ``zip.train(.gz)`` and ``zip.test(.gz)`` in folder ``root``: splits ``"train"`` and ``"test"``."""
    return {split: partial(_read_usps_split, root, split, request) for split in _USPS_FILES}


def looks_like_digit_files(folder: Path) -> bool:
    """Whether ``folder`` holds MNIST or USPS files (so a plain folder spec was probably meant as one of those)."""
    names = [_MNIST_FILES["train"][0], _MNIST_FILES["test"][0], *_USPS_FILES.values()]
    return any((folder / name).is_file() or (folder / f"{name}.gz").is_file() for name in names)


def _digit_data(request: LoadRequest, split: str, pixels: np.ndarray, labels: np.ndarray) -> ImageData:
    return ImageData(
        name=request.name(split),
        classes=list(_DIGIT_CLASSES),
        labels=labels.astype(np.int64),
        pixels=pixels,
        domain=request.domain,
    )


def _read_sklearn_digits(request: LoadRequest) -> ImageData:
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    return _digit_data(request, "all", pixels, digits.target)


def _read_mnist_split(root: Path, split: str, request: LoadRequest) -> ImageData:
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


def _read_usps_split(root: Path, split: str, request: LoadRequest) -> ImageData:
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
