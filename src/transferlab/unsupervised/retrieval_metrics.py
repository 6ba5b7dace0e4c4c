"""Retrieval quality of labeled embeddings: recall@k, mAP@R, R-precision, and NMI/ARI of k-means.

The definitions are those of pytorch-metric-learning's ``AccuracyCalculator`` (Musgrave et al., "A Metric Learning
Reality Check", ECCV 2020), so the numbers can be compared with the metric-learning literature; a test checks
equality on real embeddings. For a query ``q`` with label ``y``, neighbours ranked by cosine similarity, and
``R`` = the number of gallery examples labeled ``y`` (not counting ``q`` itself in leave-one-out):

    recall@k      1 if any of the k nearest neighbours is labeled y, else 0 (recall@1 = precision@1)
    R-precision   (number of the R nearest neighbours labeled y) / R
    mAP@R         (1 / R) * sum_{i <= R, neighbour i labeled y} precision@i

Each is averaged over queries (not over classes). ``R`` is never capped: all R nearest neighbours are searched.
"""

from __future__ import annotations

import faiss
import numpy as np

from transferlab.errors import TransferlabError
from transferlab.unsupervised.clustering import clustering_scores, kmeans
from transferlab.unsupervised.projection import l2_normalise

__all__ = ["DEFAULT_KS", "retrieval_metrics"]

DEFAULT_KS = (1, 5, 10)
_BLOCK_CELLS = 1 << 24
"""Queries are searched in blocks of at most this many (query, neighbour) cells (~200 MB of scores and ids)."""


def retrieval_metrics(query_vectors: np.ndarray, query_labels: np.ndarray, gallery_vectors: np.ndarray | None = None,
                      gallery_labels: np.ndarray | None = None, ks: tuple[int, ...] = DEFAULT_KS, *,
                      seed: int = 0) -> dict:
    """Retrieval and clustering quality of labeled embeddings (see the module docstring for the definitions).

    Vectors are L2-normalised and compared by cosine similarity (inner product), with exact neighbours (FAISS
    ``IndexFlatIP``). Without a gallery, every query searches the other rows of its own set (leave-one-out).

    Rows without a label (-1) are left out entirely: they are neither queries nor gallery items, since whether
    retrieving one is right cannot be judged. Queries whose class has no other example in the gallery have no
    relevant item to find; like ``AccuracyCalculator``, they are not counted in the retrieval metrics
    (``lone_queries`` says how many).

    NMI and ARI (`clustering.clustering_scores`) compare the labels with k-means clusters of the labeled query
    vectors (`clustering.kmeans`), k = the number of classes among them, as ``AccuracyCalculator`` clusters its
    queries.

    Args:
        query_vectors: (Q, D) float.
        query_labels: (Q,) int class indices, -1 for unlabeled.
        gallery_vectors: (G, D) float, or ``None`` for leave-one-out within the queries.
        gallery_labels: (G,) int class indices in the same numbering as ``query_labels``.
        ks: the k of recall@k; each at most the number of gallery items a query can reach.
        seed: k-means seed.

    Returns:
        ``{"recall@k": ..., "map@r": ..., "r_precision": ..., "nmi": ..., "ari": ..., "queries": Q',
        "gallery": G', "lone_queries": n, "classes": C, "leave_one_out": bool}`` (floats in [0, 1]; a retrieval
        metric is ``nan`` when every query is lone).

    Raises:
        TransferlabError: mismatched shapes, no labeled query, or a k larger than the gallery.
    """
    leave_one_out = gallery_vectors is None
    queries, q_labels = _labeled(query_vectors, query_labels, "query")
    if leave_one_out:
        gallery, g_labels = queries, q_labels
    else:
        if gallery_labels is None:
            raise TransferlabError("gallery vectors were given without gallery labels")
        gallery, g_labels = _labeled(gallery_vectors, gallery_labels, "gallery")
        if gallery.shape[1] != queries.shape[1]:
            raise TransferlabError(f"queries have {queries.shape[1]} dimensions but the gallery has "
                                   f"{gallery.shape[1]}")
    reachable = len(gallery) - int(leave_one_out)
    ks = tuple(sorted(set(ks)))
    if not ks or ks[0] < 1 or ks[-1] > reachable:
        raise TransferlabError(f"recall@k needs 1 <= k <= {reachable} (the gallery items a query can reach), "
                               f"got k = {list(ks)}")
    relevant = _relevant_counts(q_labels, g_labels, leave_one_out)
    active = relevant > 0
    depth = max(ks[-1], int(relevant.max()))
    hits, r_precision, average_precision = _ranked_scores(queries, q_labels, gallery, g_labels, relevant, ks, depth,
                                                          leave_one_out)
    metrics = {f"recall@{k}": _mean(hits[active, i]) for i, k in enumerate(ks)}
    metrics |= {"map@r": _mean(average_precision[active]), "r_precision": _mean(r_precision[active])}
    metrics |= clustering_scores(q_labels, kmeans(queries, len(np.unique(q_labels)), seed=seed))
    metrics |= {"queries": len(queries), "gallery": len(gallery), "lone_queries": int((~active).sum()),
                "classes": len(np.unique(q_labels)), "leave_one_out": leave_one_out}
    return metrics


def _labeled(vectors: np.ndarray, labels: np.ndarray, role: str) -> tuple[np.ndarray, np.ndarray]:
    vectors, labels = np.asarray(vectors), np.asarray(labels)
    if vectors.ndim != 2 or labels.shape != (len(vectors),):
        raise TransferlabError(f"{role} vectors {vectors.shape} and labels {labels.shape} do not match: expected "
                               "(N, D) vectors and N labels")
    keep = labels >= 0
    if not keep.any():
        raise TransferlabError(f"no {role} example has a label: retrieval metrics need labeled examples")
    return np.ascontiguousarray(l2_normalise(vectors[keep])), labels[keep].astype(np.int64)


def _relevant_counts(q_labels: np.ndarray, g_labels: np.ndarray, leave_one_out: bool) -> np.ndarray:
    """R per query: gallery items sharing its label (minus itself in leave-one-out)."""
    size = int(max(q_labels.max(), g_labels.max())) + 1
    return np.bincount(g_labels, minlength=size)[q_labels] - int(leave_one_out)


def _ranked_scores(queries, q_labels, gallery, g_labels, relevant, ks, depth, leave_one_out):
    """Per query: recall@k hits (Q, len(ks)), R-precision (Q,), average precision at R (Q,)."""
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery)
    hits = np.zeros((len(queries), len(ks)))
    r_precision = np.zeros(len(queries))
    average_precision = np.zeros(len(queries))
    rank = np.arange(1, depth + 1)
    block = max(1, _BLOCK_CELLS // depth)
    for start in range(0, len(queries), block):
        rows = slice(start, min(start + block, len(queries)))
        indices = _search(index, queries[rows], depth, self_offset=start if leave_one_out else None)
        match = g_labels[indices] == q_labels[rows, None]
        found = match & (rank[None, :] <= relevant[rows, None])
        r = np.maximum(relevant[rows], 1)
        hits[rows] = np.stack([match[:, :k].any(axis=1) for k in ks], axis=1)
        r_precision[rows] = found.sum(axis=1) / r
        average_precision[rows] = (np.cumsum(match, axis=1) * found / rank).sum(axis=1) / r
    return hits, r_precision, average_precision


def _search(index, queries: np.ndarray, k: int, self_offset: int | None) -> np.ndarray:
    """(Q, k) gallery indices, most similar first. ``self_offset``: the queries are the gallery rows from there
    on (leave-one-out), and each query's own row is left out, as pytorch-metric-learning's ``FaissKNN`` does."""
    if self_offset is None:
        return index.search(queries, k)[1]
    indices = index.search(queries, k + 1)[1]
    own = indices == (self_offset + np.arange(len(queries)))[:, None]
    own[~own.any(axis=1), -1] = True  # exact duplicates pushed the row out of the k + 1: drop the farthest instead
    return indices[~own].reshape(len(queries), k)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")
