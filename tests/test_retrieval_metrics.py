"""Retrieval metrics equal pytorch-metric-learning's AccuracyCalculator on real embeddings, and a brute-force
reference for recall@k; unlabeled rows, lone classes and bad input."""

import numpy as np
import pytest
import torch

from transferlab.errors import TransferlabError
from transferlab.unsupervised import retrieval_metrics as rm
from transferlab.unsupervised.clustering import kmeans
from transferlab.unsupervised.embed import BackboneSource, embed_data
from transferlab.unsupervised.projection import l2_normalise
from transferlab.unsupervised.retrieval_metrics import retrieval_metrics

pml = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
faiss = pytest.importorskip("faiss")

PML_NAMES = {"recall@1": "precision_at_1", "map@r": "mean_average_precision_at_r", "r_precision": "r_precision"}


@pytest.fixture(scope="module")
def usps(shared_data):
    """Real embeddings: the 2,007 USPS test digits through a randomly initialised LeNet (seeded)."""
    torch.manual_seed(0)
    embeddings = embed_data(f"usps:{shared_data / 'usps'}@test", BackboneSource("lenet", pretrained=False),
                            progress=False)
    return embeddings.vectors, embeddings.labels


def accuracy_calculator(knn="ip"):
    """``k="max_bin_count"`` searches R neighbours for every query, so nothing is capped. ``knn="ip"`` ranks by
    inner product of the unit vectors, as we do; the default ranks by L2 distance (the same order up to rounding)."""
    knn_func = pml.FaissKNN(index_init_fn=faiss.IndexFlatIP) if knn == "ip" else None
    return pml.AccuracyCalculator(include=tuple(PML_NAMES.values()) + ("NMI",), k="max_bin_count",
                                  device=torch.device("cpu"), knn_func=knn_func,
                                  kmeans_func=lambda x, k: torch.from_numpy(kmeans(x.numpy(), k, seed=0)))


def assert_equal_to_pml(ours, theirs, tolerance=1e-12):
    for name, pml_name in PML_NAMES.items():
        assert ours[name] == pytest.approx(theirs[pml_name], abs=tolerance), name
    assert ours["nmi"] == pytest.approx(theirs["NMI"], abs=1e-12)  # the same clusters, the same NMI convention


def test_leave_one_out_equals_pytorch_metric_learning(usps):
    vectors, labels = usps
    ours = retrieval_metrics(vectors, labels)
    assert ours["leave_one_out"] and ours["queries"] == ours["gallery"] == 2007 and ours["classes"] == 10
    assert_equal_to_pml(ours, accuracy_calculator().get_accuracy(l2_normalise(vectors), labels))
    # the calculator's default (L2 distance, vectors as given) ranks unit vectors the same up to float rounding
    default = accuracy_calculator(knn="l2").get_accuracy(l2_normalise(vectors), labels)
    assert_equal_to_pml(ours, default, tolerance=1e-6)
    assert 0.5 < ours["recall@1"] <= ours["recall@5"] <= ours["recall@10"] <= 1
    assert ours["map@r"] <= ours["r_precision"] <= 1


def test_query_against_gallery_equals_pytorch_metric_learning(usps):
    vectors, labels = usps
    query, gallery = np.arange(0, 2007, 4), np.setdiff1d(np.arange(2007), np.arange(0, 2007, 4))
    ours = retrieval_metrics(vectors[query], labels[query], vectors[gallery], labels[gallery])
    assert not ours["leave_one_out"] and (ours["queries"], ours["gallery"]) == (len(query), len(gallery))
    theirs = accuracy_calculator().get_accuracy(l2_normalise(vectors[query]), labels[query],
                                                l2_normalise(vectors[gallery]), labels[gallery])
    assert_equal_to_pml(ours, theirs)


def test_recall_at_k_matches_a_brute_force_ranking(usps, monkeypatch):
    vectors, labels = usps
    vectors, labels = vectors[:300], labels[:300]
    unit = l2_normalise(vectors).astype(np.float64)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    ranked = labels[np.argsort(-similarity, axis=1, kind="stable")]
    monkeypatch.setattr(rm, "_BLOCK_CELLS", 1000)  # many small query blocks: offsets of the self-exclusion
    ours = retrieval_metrics(vectors, labels, ks=(1, 3, 10))
    for k in (1, 3, 10):
        assert ours[f"recall@{k}"] == pytest.approx((ranked[:, :k] == labels[:, None]).any(axis=1).mean())


def test_unlabeled_rows_and_lone_classes_are_left_out(usps):
    vectors, labels = usps
    vectors, labels = vectors[:400], labels[:400].copy()
    labels[::7] = -1  # unlabeled: neither query nor gallery
    lone = np.flatnonzero(labels == 3)[1:]
    labels[lone] = -1  # class 3 keeps one labeled example: a query with nothing to find
    ours = retrieval_metrics(vectors, labels)
    keep = labels >= 0
    assert ours["queries"] == keep.sum() and ours["lone_queries"] == 1
    theirs = accuracy_calculator().get_accuracy(l2_normalise(vectors[keep]), labels[keep])
    assert_equal_to_pml(ours, theirs)


def test_every_query_lone_gives_nan(usps):
    vectors, labels = usps
    ours = retrieval_metrics(vectors[:5], labels[:5], vectors[5:20], np.full(15, 99), ks=(1,))
    assert ours["lone_queries"] == 5 and np.isnan(ours["recall@1"]) and np.isnan(ours["map@r"])


def test_bad_inputs(usps):
    vectors, labels = usps
    with pytest.raises(TransferlabError, match="no query example has a label"):
        retrieval_metrics(vectors[:10], np.full(10, -1))
    with pytest.raises(TransferlabError, match=r"1 <= k <= 9"):
        retrieval_metrics(vectors[:10], labels[:10], ks=(1, 10))
    with pytest.raises(TransferlabError, match="dimensions"):
        retrieval_metrics(vectors[:10], labels[:10], vectors[:10, :5], labels[:10])
    with pytest.raises(TransferlabError, match="do not match"):
        retrieval_metrics(vectors[:10], labels[:9])
