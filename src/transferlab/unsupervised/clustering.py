"""Clustering embeddings with scikit-learn: k-means, agglomerative (Ward) or HDBSCAN, on L2-normalised vectors.

Euclidean distance between unit vectors is a monotone function of cosine similarity (``|a - b|^2 = 2 - 2 cos``),
so every method below clusters by cosine similarity. Without a given k, k-means and agglomerative clustering try
every k of a bounded range and keep the one with the highest silhouette (Rousseeuw 1987); HDBSCAN (Campello et
al. 2013) finds its own number of clusters and marks outliers as noise (-1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import HDBSCAN, AgglomerativeClustering, KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    normalized_mutual_info_score,
    silhouette_score,
)

from transferlab.errors import TransferlabError, suggest
from transferlab.unsupervised.projection import l2_normalise

__all__ = ["AGGLOMERATIVE_MAX", "KMEANS_RESTARTS", "MAX_AUTO_K", "METHODS", "SILHOUETTE_SAMPLE", "Clustering",
           "cluster", "clustering_scores", "default_k_range", "kmeans"]

METHODS = ("kmeans", "agglomerative", "hdbscan")
MAX_AUTO_K = 20
"""Without ``k``, k is chosen among 2..min(MAX_AUTO_K, N - 1)."""
SILHOUETTE_SAMPLE = 2000
"""Silhouettes are computed on a seeded sample of at most this many examples (the full score is O(N^2))."""
KMEANS_RESTARTS = 4
"""k-means runs from this many k-means++ initialisations and keeps the lowest inertia."""
AGGLOMERATIVE_MAX = 20000
"""Ward clustering holds all N^2 / 2 pairwise distances: larger sets are refused (use k-means)."""
HDBSCAN_MIN_CLUSTER_SIZE = 5


@dataclass
class Clustering:
    """Cluster assignments and how they were made.

    Attributes:
        assignments: (N,) int64 cluster ids 0..k-1; -1 marks HDBSCAN noise.
        summary: ``method``, ``examples``, ``k`` (clusters found, noise not counted), ``k_chosen_by`` (``given``,
            ``silhouette`` or ``hdbscan``), ``silhouette`` (of the result, on the sample; ``None`` when undefined),
            ``silhouette_sample``; when k was chosen, ``k_range`` and ``silhouette_by_k``; for HDBSCAN, ``noise``;
            with labels, ``nmi`` and ``ari`` (see `clustering_scores`).
    """

    assignments: np.ndarray
    summary: dict


def default_k_range(n: int) -> tuple[int, int]:
    """The k tried when none is given: 2..min(`MAX_AUTO_K`, n - 1) (a silhouette needs 2 <= k <= n - 1)."""
    return 2, min(MAX_AUTO_K, n - 1)


def kmeans(vectors: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """(N,) k-means cluster ids of the L2-normalised ``vectors`` (best of `KMEANS_RESTARTS` k-means++ starts)."""
    return _fit(l2_normalise(vectors), "kmeans", k, seed)


def cluster(vectors: np.ndarray, *, k: int | None = None, method: str = "kmeans", seed: int = 0,
            k_range: tuple[int, int] | None = None, labels: np.ndarray | None = None) -> Clustering:
    """Cluster (N, D) ``vectors`` after L2 normalisation.

    Args:
        vectors: (N, D) float.
        k: the number of clusters (k-means, agglomerative). ``None``: the k of ``k_range`` with the highest
            silhouette.
        method: ``kmeans``, ``agglomerative`` (Ward linkage) or ``hdbscan`` (chooses its clusters; takes no k).
        seed: seeds k-means and the silhouette sample.
        k_range: (lowest, highest) k tried, inclusive; default `default_k_range`.
        labels: (N,) class indices (-1 unlabeled) to score the clusters with (NMI, ARI), or ``None``.

    Raises:
        TransferlabError: an unknown method, k < 2, more clusters than examples, a k for HDBSCAN, a bad range.
    """
    x = l2_normalise(vectors)
    n = len(x)
    _check(method, k, k_range, n)
    sample = _silhouette_sample(n, seed)
    summary = {"method": method, "examples": n}
    if method == "hdbscan":
        model = HDBSCAN(min_cluster_size=min(HDBSCAN_MIN_CLUSTER_SIZE, n), copy=True)
        assignments = model.fit_predict(x).astype(np.int64)
        summary |= {"k_chosen_by": "hdbscan", "noise": int((assignments < 0).sum())}
    elif k is not None:
        assignments = _fit(x, method, k, seed)
        summary["k_chosen_by"] = "given"
    else:
        k_range = k_range or default_k_range(n)
        assignments, scores = _by_silhouette(x, method, k_range, seed, sample)
        summary |= {"k_chosen_by": "silhouette", "k_range": list(k_range), "silhouette_by_k": scores}
    summary["k"] = len(np.unique(assignments[assignments >= 0]))
    summary |= {"silhouette": _silhouette(x, assignments, sample), "silhouette_sample": len(sample)}
    if labels is not None and (np.asarray(labels) >= 0).any():
        summary |= clustering_scores(labels, assignments)
    return Clustering(assignments, summary)


def clustering_scores(labels: np.ndarray, assignments: np.ndarray) -> dict:
    """``{"nmi", "ari"}`` of cluster ``assignments`` against class ``labels``, over the rows with a label (>= 0).

    NMI is scikit-learn's ``normalized_mutual_info_score`` with its default arithmetic-mean normalisation (what
    pytorch-metric-learning's ``AccuracyCalculator`` reports as ``NMI``); ARI is ``adjusted_rand_score``. HDBSCAN
    noise (-1) counts as one more cluster.
    """
    keep = np.asarray(labels) >= 0
    labels, assignments = np.asarray(labels)[keep], np.asarray(assignments)[keep]
    return {"nmi": float(normalized_mutual_info_score(labels, assignments)),
            "ari": float(adjusted_rand_score(labels, assignments))}


def _check(method: str, k: int | None, k_range: tuple[int, int] | None, n: int) -> None:
    if method not in METHODS:
        raise TransferlabError(f"unknown clustering method {method!r}{suggest(method, METHODS)}; choose one of "
                               f"{', '.join(METHODS)}")
    if method == "hdbscan" and (k is not None or k_range is not None):
        raise TransferlabError("--method hdbscan chooses the number of clusters itself and takes no --k; drop --k, "
                               "or use --method kmeans or agglomerative")
    if n < 2:
        raise TransferlabError(f"clustering needs at least 2 examples, got {n}")
    if method == "agglomerative" and n > AGGLOMERATIVE_MAX:
        raise TransferlabError(f"--method agglomerative holds all pairwise distances and takes at most "
                               f"{AGGLOMERATIVE_MAX} examples, got {n}; use --method kmeans")
    if k is not None and k < 2:
        raise TransferlabError(f"--k must be at least 2 clusters, got {k}")
    if k is not None and k > n:
        raise TransferlabError(f"--k {k}: cannot make {k} clusters from {n} examples")
    if k is None and method != "hdbscan":
        if n < 3:
            raise TransferlabError(f"choosing k by silhouette needs at least 3 examples, got {n}; give --k")
        lowest, highest = k_range or default_k_range(n)
        if not 2 <= lowest <= highest <= n - 1:
            raise TransferlabError(f"k range {lowest}..{highest}: k must run within 2..{n - 1} (N - 1) for {n} "
                                   "examples")


def _fit(x: np.ndarray, method: str, k: int, seed: int) -> np.ndarray:
    if method == "kmeans":
        model = KMeans(n_clusters=k, n_init=KMEANS_RESTARTS, random_state=seed)
    else:
        model = AgglomerativeClustering(n_clusters=k, linkage="ward")
    return model.fit_predict(x).astype(np.int64)


def _by_silhouette(x, method, k_range, seed, sample) -> tuple[np.ndarray, dict]:
    """The assignments with the best silhouette over ``k_range``, and every k's score (``None``: undefined)."""
    tree = _ward_tree(x) if method == "agglomerative" else None
    best, best_score, scores = None, -np.inf, {}
    for k in range(k_range[0], k_range[1] + 1):
        assignments = _cut_tree(tree, k) if tree is not None else _fit(x, method, k, seed)
        scores[k] = _silhouette(x, assignments, sample)
        score = -np.inf if scores[k] is None else scores[k]
        if best is None or score > best_score:
            best, best_score = assignments, score
    return best, scores


def _ward_tree(x: np.ndarray) -> np.ndarray:
    """The full Ward merge tree (``children_``: row i merges two nodes into node N + i), built once for every k."""
    model = AgglomerativeClustering(n_clusters=None, distance_threshold=0.0, compute_full_tree=True, linkage="ward")
    return model.fit(x).children_


def _cut_tree(children: np.ndarray, k: int) -> np.ndarray:
    """Cluster ids of the k clusters left after the first N - k merges (what ``n_clusters=k`` gives)."""
    n = len(children) + 1
    parent = np.arange(2 * n - 1)
    merges = children[: n - k]
    parent[merges[:, 0]] = parent[merges[:, 1]] = n + np.arange(len(merges))
    while not np.array_equal(parent, parent[parent]):  # pointer jumping: every node ends at its cluster's root
        parent = parent[parent]
    return np.unique(parent[:n], return_inverse=True)[1].astype(np.int64)


def _silhouette_sample(n: int, seed: int) -> np.ndarray:
    if n <= SILHOUETTE_SAMPLE:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, SILHOUETTE_SAMPLE, replace=False))


def _silhouette(x: np.ndarray, assignments: np.ndarray, sample: np.ndarray) -> float | None:
    """Mean silhouette over the sample's non-noise rows; ``None`` unless they form 2..rows-1 clusters."""
    rows = sample[assignments[sample] >= 0]
    found = len(np.unique(assignments[rows]))
    if not 2 <= found <= len(rows) - 1:
        return None
    return float(silhouette_score(x[rows], assignments[rows]))
