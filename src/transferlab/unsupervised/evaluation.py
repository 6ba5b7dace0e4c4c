"""Retrieval and clustering quality of an embeddings directory (``transferlab evaluate EMB [--query EMB2]``), and
clustering one (``transferlab cluster EMB``) with its assignments written as CSV."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from transferlab.errors import TransferlabError
from transferlab.fileio import atomic_path
from transferlab.unsupervised.clustering import Clustering, cluster
from transferlab.unsupervised.embedding_set import EmbeddingSet
from transferlab.unsupervised.retrieval_metrics import DEFAULT_KS, retrieval_metrics

__all__ = ["cluster_embeddings", "clustering_lines", "evaluate_embeddings", "retrieval_lines", "write_assignments"]


def evaluate_embeddings(gallery_dir: str | Path, query_dir: str | Path | None = None, *, seed: int = 0) -> dict:
    """Retrieval and clustering metrics (`retrieval_metrics`) of the labeled embeddings in ``gallery_dir``:
    leave-one-out within it, or the embeddings in ``query_dir`` searching it.

    Classes are matched by name, so the two directories may list them in different orders; a query whose class the
    gallery lacks is a lone query (not counted). recall@k is reported for the k of `DEFAULT_KS` that the gallery
    can reach. Undefined metrics (every query lone) are ``None``.

    Raises:
        TransferlabError: a directory without labels, queries embedded with another backbone or projection than the
            gallery, or fewer than two labeled examples to search.
    """
    gallery = _labeled_set(gallery_dir)
    query = _labeled_set(query_dir) if query_dir is not None else None
    if query is not None:
        _check_same_space(gallery, query, Path(gallery_dir), Path(query_dir))
    reachable = len(gallery.labeled()) - (query is None)
    ks = tuple(k for k in DEFAULT_KS if k <= reachable)
    if not ks:
        raise TransferlabError(f"{gallery_dir} has {len(gallery.labeled())} labeled example(s): leave-one-out "
                               "retrieval needs at least 2")
    if query is None:
        metrics = retrieval_metrics(gallery.vectors, gallery.labels, ks=ks, seed=seed)
    else:
        metrics = retrieval_metrics(query.vectors, _labels_in(query, gallery.classes), gallery.vectors,
                                    gallery.labels, ks=ks, seed=seed)
    metrics = {key: None if isinstance(value, float) and math.isnan(value) else value
               for key, value in metrics.items()}
    return {**metrics, "embeddings": str(gallery_dir), "query": None if query_dir is None else str(query_dir)}


def retrieval_lines(metrics: dict) -> list[str]:
    """`evaluate_embeddings`'s metrics as lines for a person."""
    searched = ("leave-one-out within " + metrics["embeddings"] if metrics["leave_one_out"]
                else f"{metrics['query']} searching {metrics['embeddings']}")
    recalls = [key for key in metrics if key.startswith("recall@")]
    lines = [(f"retrieval by cosine similarity: {metrics['queries']} queries, {metrics['gallery']} gallery items "
              f"({searched})"),
             "  ".join(f"{key} {_number(metrics[key])}" for key in recalls),
             f"mAP@R {_number(metrics['map@r'])}  R-precision {_number(metrics['r_precision'])}",
             (f"k-means of the queries, k = {metrics['classes']} classes: NMI {metrics['nmi']:.4f}  "
              f"ARI {metrics['ari']:.4f}")]
    if metrics["lone_queries"]:
        lines.append(f"{metrics['lone_queries']} queries whose class has no other example in the gallery are not "
                     "counted")
    return lines


def cluster_embeddings(directory: str | Path, *, k: int | None = None, method: str = "kmeans", seed: int = 0,
                       out: str | Path | None = None, overwrite: bool = False) -> Clustering:
    """Cluster the embeddings in ``directory`` (`clustering.cluster`; NMI/ARI when they have labels) and, with
    ``out``, write the assignments there (`write_assignments`). The summary gains ``embeddings`` and ``out``."""
    if out is not None and Path(out).exists() and not overwrite:
        raise TransferlabError(f"{out} already exists; pass --overwrite to replace it")
    embeddings = EmbeddingSet.load(directory)
    result = cluster(embeddings.vectors, k=k, method=method, seed=seed, labels=embeddings.labels)
    if out is not None:
        write_assignments(out, embeddings, result.assignments)
    result.summary |= {"embeddings": str(directory), "out": None if out is None else str(out)}
    return result


def write_assignments(path: str | Path, embeddings: EmbeddingSet, assignments: np.ndarray) -> None:
    """CSV ``item,cluster`` (and ``label``, the class name or empty, when the embeddings have labels), one row per
    embedding in order, written in one step (a crash leaves any previous file intact)."""
    labels = embeddings.labels
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "cluster"] + (["label"] if labels is not None else []))
        for row, (item, assigned) in enumerate(zip(embeddings.items, assignments, strict=True)):
            label = [] if labels is None else [embeddings.classes[labels[row]] if labels[row] >= 0 else ""]
            writer.writerow([item, int(assigned), *label])


def clustering_lines(summary: dict) -> list[str]:
    """`cluster_embeddings`'s summary as lines for a person."""
    how = {"given": "k given", "silhouette": "k chosen by silhouette", "hdbscan": "chosen by HDBSCAN"}
    lines = [(f"{summary['method']}: {summary['k']} clusters of {summary['examples']} embeddings "
              f"({how[summary['k_chosen_by']]})")]
    if summary["k_chosen_by"] == "silhouette":
        low, high = summary["k_range"]
        scores = ", ".join(f"{k}: {_number(score)}" for k, score in summary["silhouette_by_k"].items())
        lines.append(f"silhouette by k over {low}..{high} (higher is better): {scores}")
    if "noise" in summary:
        lines.append(f"noise (in no cluster): {summary['noise']}")
    lines.append(f"silhouette {_number(summary['silhouette'])} (on {summary['silhouette_sample']} embeddings)")
    if "nmi" in summary:
        lines.append(f"against the labels: NMI {summary['nmi']:.4f}  ARI {summary['ari']:.4f}")
    lines.append(f"assignments: {summary['out']}" if summary["out"] else "assignments not written (give --out FILE)")
    return lines


def _labeled_set(directory: str | Path) -> EmbeddingSet:
    embeddings = EmbeddingSet.load(directory)
    if embeddings.labels is None:
        raise TransferlabError(f"{directory} has no labels: retrieval and clustering quality need labeled "
                               "embeddings (embed labeled data, e.g. class folders); 'transferlab cluster' works "
                               "without labels")
    return embeddings


def _check_same_space(gallery: EmbeddingSet, query: EmbeddingSet, gallery_dir: Path, query_dir: Path) -> None:
    """Queries and gallery must come from the same weights and the same projection, or their distances mean
    nothing."""
    digests = query.info.get("weights_digest"), gallery.info.get("weights_digest")
    if digests[0] != digests[1]:
        names = [embeddings.info.get("backbone_source", {}).get("name", "?") for embeddings in (query, gallery)]
        raise TransferlabError(f"{query_dir} was embedded with other weights than {gallery_dir} ({names[0]}, "
                               f"digest {str(digests[0])[:12]} vs {names[1]}, digest {str(digests[1])[:12]}): "
                               "embed both with the same --backbone")
    if not _same_projection(query, gallery) or query.dim != gallery.dim:
        describe = [e.projection.describe() if e.projection else "no projection" for e in (query, gallery)]
        raise TransferlabError(f"{query_dir} and {gallery_dir} went through different projections ({describe[0]} "
                               f"vs {describe[1]}; each is fitted on its own set): embed both without --pca/--whiten")


def _same_projection(a: EmbeddingSet, b: EmbeddingSet) -> bool:
    if a.projection is None or b.projection is None:
        return a.projection is None and b.projection is None
    return all(np.array_equal(getattr(a.projection, name), getattr(b.projection, name))
               for name in ("mean", "components", "scale"))


def _labels_in(query: EmbeddingSet, classes: list[str]) -> np.ndarray:
    """The query labels numbered as ``classes``; a class not among them gets a number of its own (lone)."""
    numbering = {name: index for index, name in enumerate(classes)}
    for name in query.classes:
        numbering.setdefault(name, len(numbering))
    return np.array([numbering[query.classes[label]] if label >= 0 else -1 for label in query.labels],
                    dtype=np.int64)


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
