"""Clustering embeddings: given k, k chosen by silhouette, HDBSCAN, the Ward tree cut, and bad input."""

import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.datasets import load_digits
from sklearn.metrics import adjusted_rand_score

from transferlab.errors import TransferlabError
from transferlab.unsupervised import clustering
from transferlab.unsupervised.clustering import cluster
from transferlab.unsupervised.projection import l2_normalise


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's UCI digits, raw pixels (real data; 1,797 x 64)."""
    data = load_digits()
    return data.data.astype(np.float32), data.target.astype(np.int64)


def blobs(centres=4, per_centre=40, dim=16, seed=0):
    """Tight groups around random directions: one clear answer for k."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((centres, dim))
    labels = np.repeat(np.arange(centres), per_centre)
    return directions[labels] + 0.05 * rng.standard_normal((len(labels), dim)), labels


def test_kmeans_with_a_given_k_finds_the_digit_classes(digits):
    vectors, labels = digits
    result = cluster(vectors, k=10, labels=labels)
    summary = result.summary
    assert result.assignments.shape == (len(vectors),) and set(result.assignments) == set(range(10))
    assert summary["method"] == "kmeans" and summary["k"] == 10 and summary["k_chosen_by"] == "given"
    assert summary["nmi"] > 0.6 and summary["ari"] > 0.4 and 0 < summary["silhouette"] < 1
    again = cluster(vectors, k=10, labels=labels)
    assert np.array_equal(again.assignments, result.assignments)  # seeded


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_k_is_chosen_by_silhouette(method):
    vectors, labels = blobs(centres=4)
    result = cluster(vectors, method=method, labels=labels)
    summary = result.summary
    assert summary["k_chosen_by"] == "silhouette" and summary["k_range"] == [2, 20]
    assert sorted(summary["silhouette_by_k"]) == list(range(2, 21))
    assert summary["k"] == 4 and summary["silhouette"] == max(summary["silhouette_by_k"].values())
    assert summary["ari"] == pytest.approx(1.0)


def test_k_range_is_bounded_by_the_examples():
    vectors, _ = blobs(centres=2, per_centre=3)
    result = cluster(vectors, k_range=(2, 4))
    assert sorted(result.summary["silhouette_by_k"]) == [2, 3, 4]
    assert clustering.default_k_range(6) == (2, 5) and clustering.default_k_range(500) == (2, 20)


def test_ward_tree_cut_equals_a_fit_with_that_k(digits):
    vectors, _ = digits
    unit = l2_normalise(vectors[:400])
    tree = clustering._ward_tree(unit)
    for k in (2, 5, 10):
        fitted = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(unit)
        assert adjusted_rand_score(fitted, clustering._cut_tree(tree, k)) == 1.0


def test_silhouette_on_a_seeded_sample(monkeypatch):
    monkeypatch.setattr(clustering, "SILHOUETTE_SAMPLE", 50)
    vectors, _ = blobs(centres=3)
    result = cluster(vectors, k_range=(2, 5), seed=1)
    assert result.summary["silhouette_sample"] == 50 and result.summary["k"] == 3
    assert cluster(vectors, k_range=(2, 5), seed=1).summary == result.summary


def test_hdbscan_finds_its_own_clusters_and_noise():
    vectors, labels = blobs(centres=3, per_centre=30)
    outliers = np.random.default_rng(1).standard_normal((3, vectors.shape[1])) * 5
    result = cluster(np.vstack([vectors, outliers]), method="hdbscan", labels=np.r_[labels, [-1] * 3])
    summary = result.summary
    assert summary["k_chosen_by"] == "hdbscan" and summary["k"] == 3
    assert summary["noise"] == (result.assignments == -1).sum() and summary["ari"] > 0.9


def test_labels_without_any_labeled_row_give_no_scores(digits):
    vectors, _ = digits
    summary = cluster(vectors[:50], k=3, labels=np.full(50, -1)).summary
    assert "nmi" not in summary and "ari" not in summary


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "kmean"}, "did you mean 'kmeans'"),
    ({"method": "hdbscan", "k": 3}, "takes no --k"),
    ({"k": 1}, "at least 2 clusters, got 1"),
    ({"k": 30}, "cannot make 30 clusters from 20 examples"),
    ({"k_range": (2, 20)}, "within 2..19"),
    ({"k_range": (1, 5)}, "k range 1..5"),
])
def test_bad_inputs(digits, kwargs, message):
    with pytest.raises(TransferlabError, match=message):
        cluster(digits[0][:20], **kwargs)


def test_too_few_examples_to_choose_k(digits):
    with pytest.raises(TransferlabError, match="at least 3 examples, got 2; give --k"):
        cluster(digits[0][:2])
    with pytest.raises(TransferlabError, match="at least 2 examples, got 1"):
        cluster(digits[0][:1], k=2)
