"""An embeddings directory: what ``transferlab embed`` writes and ``index``, ``cluster`` and ``evaluate`` read.

    vectors.npy       (N, D) float32, one row per example (after the projection, when there is one)
    items.csv         item,split,label: the example's file path (or its text, or NAME#ROW for in-memory data),
                      the split it came from, its class name (empty when unlabeled)
    projection.npz    the PCA(-whitening) fitted on these embeddings, applied to later queries (optional)
    embedding.json    the backbone (spec, how to rebuild it, weights digest, preprocessing, pooling), the data, the
                      classes, and the SHA-256 digest of every file above; written last

The vectors and rows are plain NumPy and CSV, readable by any tool. A file whose digest differs from the recorded
one (damaged, truncated, edited) is an error naming it, never silently used.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferlab.errors import TransferlabError
from transferlab.fileio import atomic_path, read_json, sha256_file, write_json
from transferlab.unsupervised.projection import Projection

__all__ = ["EMBEDDING_JSON", "FORMAT_VERSION", "ITEMS", "PROJECTION", "EmbeddingSet", "file_digest", "is_embedding_dir",
           "label_indices", "read_items"]

EMBEDDING_JSON = "embedding.json"
VECTORS = "vectors.npy"
ITEMS = "items.csv"
PROJECTION = "projection.npz"
FORMAT_VERSION = 1


def file_digest(path: Path) -> str:
    """The SHA-256 of a file of an embeddings directory (`transferlab.fileio.sha256_file`)."""
    return sha256_file(path)


def is_embedding_dir(path: Path) -> bool:
    return (Path(path) / EMBEDDING_JSON).is_file()


@dataclass
class EmbeddingSet:
    """Embeddings of a data set with one backbone.

    Attributes:
        vectors: (N, D) float32.
        items: N names: file path, text, or ``NAME#ROW``.
        splits: N split names (``train``, ``val``, ``test``, ``all``).
        labels: (N,) int64 class indices into ``classes``, -1 for an unlabeled example; ``None`` when none has one.
        classes: class names.
        info: the backbone and data description (``embedding.json`` without the file digests).
        projection: the PCA(-whitening) the vectors went through, if any.
    """

    vectors: np.ndarray
    items: list[str]
    splits: list[str]
    labels: np.ndarray | None
    classes: list[str]
    info: dict = field(default_factory=dict)
    projection: Projection | None = None

    def __post_init__(self):
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.items) or len(self.splits) != len(self.items):
            raise ValueError(f"{self.vectors.shape} vectors for {len(self.items)} items and {len(self.splits)} splits")
        if self.labels is not None and len(self.labels) != len(self.items):
            raise ValueError(f"{len(self.labels)} labels for {len(self.items)} items")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def modality(self) -> str:
        return self.info["backbone"]["modality"]

    def labeled(self) -> np.ndarray:
        """Indices of the rows that have a label."""
        return np.arange(len(self)) if self.labels is None else np.flatnonzero(self.labels >= 0)

    def save(self, directory: Path) -> None:
        """Write the directory's files (``embedding.json`` last, with their digests)."""
        directory = Path(directory)
        files = {VECTORS: self._write_vectors, ITEMS: self._write_items}
        if self.projection is not None:
            files[PROJECTION] = self.projection.save
        digests = {}
        for name, write in files.items():
            with atomic_path(directory / name) as tmp:
                write(tmp)
            digests[name] = file_digest(directory / name)
        write_json(directory / EMBEDDING_JSON, {
            "format_version": FORMAT_VERSION, **self.info, "count": len(self), "dim": self.dim,
            "classes": self.classes,
            "projection": self.projection.describe() if self.projection is not None else None,
            "files": digests,
        })

    def _write_vectors(self, path: Path) -> None:
        with open(path, "wb") as handle:
            np.save(handle, np.ascontiguousarray(self.vectors, dtype=np.float32), allow_pickle=False)

    def _write_items(self, path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["item", "split", "label"])
            labels = self.labels if self.labels is not None else np.full(len(self), -1)
            for item, split, label in zip(self.items, self.splits, labels, strict=True):
                writer.writerow([item, split, self.classes[label] if label >= 0 else ""])

    @classmethod
    def load(cls, directory: Path) -> EmbeddingSet:
        """Read an embeddings directory, checking every file against its recorded digest.

        Raises:
            TransferlabError: not an embeddings directory, an unfinished or damaged one (naming the file), or one
                written by a newer transferlab.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise TransferlabError(f"embeddings directory not found: {directory}")
        if not is_embedding_dir(directory):
            raise TransferlabError(f"{directory} is not an embeddings directory (no {EMBEDDING_JSON}): write one with "
                                   "'transferlab embed DATA --out DIR' (an interrupted embed leaves none: run it again "
                                   "with --overwrite)")
        meta = read_json(directory / EMBEDDING_JSON)
        if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict) or "backbone" not in meta:
            raise TransferlabError(f"{directory / EMBEDDING_JSON} does not describe embeddings written by transferlab")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise TransferlabError(f"{directory} was written by a newer transferlab (format "
                                   f"{meta['format_version']}); upgrade transferlab to read it")
        for name, recorded in meta["files"].items():
            path = directory / name
            if not path.is_file():
                raise TransferlabError(f"{path} is missing; {directory} is incomplete: embed again with --overwrite")
            if file_digest(path) != recorded:
                raise TransferlabError(f"{path} does not match the digest recorded in {EMBEDDING_JSON}: the file is "
                                       "damaged or was changed after it was written; embed again with --overwrite")
        vectors = np.load(directory / VECTORS, allow_pickle=False)
        items, splits, names = read_items(directory / ITEMS)
        classes = list(meta.get("classes") or [])
        labels = label_indices(names, classes, directory / ITEMS)
        projection = Projection.load(directory / PROJECTION) if PROJECTION in meta["files"] else None
        info = {key: value for key, value in meta.items()
                if key not in ("files", "count", "dim", "classes", "projection", "format_version")}
        try:
            return cls(vectors, items, splits, labels, classes, info, projection)
        except ValueError as exc:
            raise TransferlabError(f"{directory}: {exc}") from None


def read_items(path: Path) -> tuple[list[str], list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and set(rows[0]) != {"item", "split", "label"}:
        raise TransferlabError(f"{path} must have the columns item,split,label; got {','.join(rows[0])}")
    return [row["item"] for row in rows], [row["split"] for row in rows], [row["label"] for row in rows]


def label_indices(names: list[str], classes: list[str], path: Path) -> np.ndarray | None:
    if not any(names):
        return None
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({name for name in names if name and name not in index})
    if unknown:
        raise TransferlabError(f"{path} has labels {unknown[:5]} that are not among the recorded classes {classes}")
    return np.array([index[name] if name else -1 for name in names], dtype=np.int64)
