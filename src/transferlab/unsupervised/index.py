"""``transferlab index`` / ``search``: a FAISS index over an embeddings directory, and nearest-neighbour search.

An index directory is self-contained: the FAISS index (``index.faiss``), the gallery rows (``items.csv``), the
projection queries go through (``projection.npz``, when the embeddings have one), and ``index.json`` (the kind
and its parameters, the embeddings' backbone description, and every file's SHA-256 digest, written last).

Vectors are L2-normalised, so inner product is cosine similarity. Kinds (all from faiss-cpu):

- ``flat``: exact search (``IndexFlatIP``), the default;
- ``hnsw``: a graph (``IndexHNSWFlat``, M = 32, efConstruction 80, efSearch 128): approximate, no training;
- ``ivf``: an inverted file (``IndexIVFFlat``, about 4 sqrt(N) k-means lists, 1/8 of them probed, at most 64):
  approximate, trained on the gallery.

Approximate kinds are checked when built: their recall@10 against exact search on up to 1,000 gallery vectors.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from transferlab.errors import TransferlabError, suggest
from transferlab.fileio import read_json, write_json
from transferlab.rundir import claim_run_dir
from transferlab.unsupervised.embedding_set import (
    ITEMS,
    PROJECTION,
    EmbeddingSet,
    file_digest,
    label_indices,
    read_items,
)
from transferlab.unsupervised.projection import Projection, l2_normalise

__all__ = ["INDEX_KINDS", "Neighbour", "SearchIndex", "build_index", "write_index"]

INDEX_JSON = "index.json"
INDEX_FILE = "index.faiss"
INDEX_KINDS = ("flat", "hnsw", "ivf")
RECALL_SAMPLE = 1000
RECALL_K = 10


@dataclass(frozen=True)
class Neighbour:
    item: str
    score: float  # cosine similarity
    label: str | None


def build_index(vectors: np.ndarray, kind: str = "flat", *, seed: int = 0) -> tuple[faiss.Index, dict]:
    """A FAISS index of ``kind`` over the L2-normalised ``vectors`` (N, D) and its parameters."""
    if kind not in INDEX_KINDS:
        raise TransferlabError(f"unknown index kind {kind!r}{suggest(kind, INDEX_KINDS)}; choose one of "
                               f"{', '.join(INDEX_KINDS)}")
    vectors = l2_normalise(vectors)
    n, dim = vectors.shape
    if kind == "flat":
        index, params = faiss.IndexFlatIP(dim), {}
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction, index.hnsw.efSearch = 80, 128
        params = {"M": 32, "efConstruction": 80, "efSearch": 128}
    else:
        lists = max(1, min(int(4 * math.sqrt(n)), n // 39))  # FAISS wants about 39 training points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(vectors)
        index.nprobe = max(1, min(64, lists // 8))
        params = {"nlist": lists, "nprobe": index.nprobe}
    index.add(vectors)
    return index, params


def exact_recall(index: faiss.Index, vectors: np.ndarray, *, k: int = RECALL_K, seed: int = 0) -> float:
    """Share of the exact top-``k`` neighbours that ``index`` returns, over up to `RECALL_SAMPLE` gallery vectors used
    as queries."""
    vectors = l2_normalise(vectors)
    k = min(k, len(vectors))
    rows = np.random.default_rng(seed).permutation(len(vectors))[:RECALL_SAMPLE]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(vectors[rows], k)
    _, found = index.search(vectors[rows], k)
    return float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth, found, strict=True)]))


def write_index(embeddings_dir: Path, out: Path, *, kind: str = "flat", overwrite: bool = False) -> dict:
    """Build the index of an embeddings directory and write the index directory ``out`` in one step; return
    ``index.json``'s description (kind, parameters, count, build seconds, recall@10 for approximate kinds)."""
    embeddings = EmbeddingSet.load(embeddings_dir)
    started = time.perf_counter()
    index, params = build_index(embeddings.vectors, kind)
    seconds = time.perf_counter() - started
    description = {"kind": kind, "params": params, "count": len(embeddings), "dim": embeddings.dim,
                   "build_seconds": round(seconds, 3), "embeddings": str(Path(embeddings_dir).resolve())}
    if kind != "flat":
        description[f"recall@{RECALL_K}"] = round(exact_recall(index, embeddings.vectors), 4)
    with claim_run_dir(out, overwrite=overwrite, resume=False, noun="index directory") as claimed:
        claimed.start()
        work = claimed.work
        faiss.write_index(index, str(work / INDEX_FILE))
        files = [ITEMS, PROJECTION] if embeddings.projection is not None else [ITEMS]
        for name in files:
            shutil.copyfile(Path(embeddings_dir) / name, work / name)
        write_json(work / INDEX_JSON, {**description, "embedding": embeddings.info, "classes": embeddings.classes,
                                       "files": {name: file_digest(work / name) for name in [INDEX_FILE, *files]}})
        claimed.commit()
    return description


class SearchIndex:
    """An index directory opened for search: `search` takes query embeddings of the recorded backbone."""

    def __init__(self, directory: Path):
        directory = Path(directory)
        meta_path = directory / INDEX_JSON
        if not meta_path.is_file():
            raise TransferlabError(f"{directory} is not an index directory (no {INDEX_JSON}): build one with "
                                   "'transferlab index EMB --out DIR'")
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict) or "embedding" not in meta:
            raise TransferlabError(f"{meta_path} does not describe an index written by transferlab")
        for name, recorded in meta["files"].items():
            if not (directory / name).is_file() or file_digest(directory / name) != recorded:
                raise TransferlabError(f"{directory / name} is missing or does not match the digest recorded in "
                                       f"{INDEX_JSON}; build the index again with --overwrite")
        self.directory, self.meta, self.info = directory, meta, meta["embedding"]
        self.index = faiss.read_index(str(directory / INDEX_FILE))
        self.items, _, names = read_items(directory / ITEMS)
        self.classes = list(meta.get("classes") or [])
        labels = label_indices(names, self.classes, directory / ITEMS)
        self.labels = labels
        self.projection = Projection.load(directory / PROJECTION) if PROJECTION in meta["files"] else None
        if self.index.ntotal != len(self.items):
            raise TransferlabError(f"{directory / INDEX_FILE} holds {self.index.ntotal} vectors for "
                                   f"{len(self.items)} rows of {ITEMS}")

    @property
    def modality(self) -> str:
        return self.info["backbone"]["modality"]

    def __len__(self) -> int:
        return len(self.items)

    def search(self, query_vectors: np.ndarray, k: int = 10) -> list[list[Neighbour]]:
        """The ``k`` nearest gallery rows of each query (raw backbone embeddings: the recorded projection, if any,
        is applied here), best first."""
        if not 1 <= k <= len(self):
            raise TransferlabError(f"--k {k}: must be between 1 and the gallery's size, {len(self)}")
        if self.projection is not None:
            query_vectors = self.projection.apply(query_vectors)
        if query_vectors.shape[1] != self.index.d:
            raise TransferlabError(f"queries have {query_vectors.shape[1]} dimensions, the index {self.index.d}: "
                                   "they come from another backbone")
        scores, rows = self.index.search(l2_normalise(query_vectors), k)
        return [[Neighbour(self.items[row], float(score), self._label(row))
                 for score, row in zip(query_scores, query_rows, strict=True) if row >= 0]
                for query_scores, query_rows in zip(scores, rows, strict=True)]

    def _label(self, row: int) -> str | None:
        if self.labels is None or self.labels[row] < 0:
            return None
        return self.classes[self.labels[row]]
