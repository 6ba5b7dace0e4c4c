"""Transferability scores: a hand-computed LogME, LogME against a direct maximisation of the evidence, and the
properties each paper states (perfect source mappings, entropies, invariances, bounds)."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import entropy, multivariate_normal
from sklearn.covariance import LedoitWolf
from sklearn.metrics import mutual_info_score
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from transferlab.errors import TransferlabError
from transferlab.unsupervised.transferability import (
    h_score,
    knn_accuracy,
    leep,
    log_me,
    nce,
)


def separable_and_noise(n=120, d=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n // classes)
    noise = rng.normal(size=(n, d))
    separable = noise * 0.3 + 3 * np.eye(d)[labels]
    return separable, noise, labels


def test_log_me_hand_computed_one_dimension():
    # f = (1, 1, -1, -1), labels (0, 0, 1, 1). With D = 1 the evidence's covariance (1/alpha) f f^T + (1/beta) I has
    # eigenvalue a = |f|^2/alpha + 1/beta along f and b = 1/beta on the 3 other directions; its maximum is at
    # a = (y.u)^2 = 1, b = |y - (y.u) u|^2 / 3 = 1/3 for both classes' indicators y (u = f / |f|), so
    # log evidence = -1/2 (1 + log a) - 3/2 (1 + log b) - 2 log(2 pi), divided by N = 4.
    features = np.array([[1.0], [1.0], [-1.0], [-1.0]])
    expected = (-0.5 * (1 + np.log(1.0)) - 1.5 * (1 + np.log(1 / 3)) - 2 * np.log(2 * np.pi)) / 4
    assert log_me(features, np.array([0, 0, 1, 1])) == pytest.approx(expected, abs=1e-4)


def direct_log_me(features, labels):
    """max over (alpha, beta) of log N(y; 0, F F^T / alpha + I / beta) / N, averaged over the classes."""
    n = len(labels)
    values = []
    for c in np.unique(labels):
        y = (labels == c).astype(float)

        def negative(log_params, y=y):
            alpha, beta = np.exp(log_params)
            cov = features @ features.T / alpha + np.eye(n) / beta
            return -multivariate_normal(np.zeros(n), cov).logpdf(y)

        values.append(-minimize(negative, x0=np.zeros(2), method="Nelder-Mead",
                                options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000}).fun / n)
    return np.mean(values)


@pytest.mark.parametrize("shape", [(40, 5), (20, 30)])  # more examples than dimensions, and fewer
def test_log_me_reaches_the_maximum_evidence(shape):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, shape[0])
    features = rng.normal(size=shape) + np.eye(3, shape[1])[labels]
    assert log_me(features, labels) == pytest.approx(direct_log_me(features, labels), abs=1e-5)


def test_log_me_prefers_features_that_separate_the_classes():
    separable, noise, labels = separable_and_noise()
    assert log_me(separable, labels) > log_me(noise, labels) + 0.3


def test_scores_do_not_depend_on_the_names_of_the_classes():
    separable, _, labels = separable_and_noise()
    renamed = np.array([2, 0, 1])[labels]
    assert log_me(separable, renamed) == pytest.approx(log_me(separable, labels))
    assert h_score(separable, renamed) == pytest.approx(h_score(separable, labels))
    assert knn_accuracy(separable, renamed) == knn_accuracy(separable, labels)


def one_hot(indices, size):
    return np.eye(size)[indices]


def test_leep_of_a_perfect_source_to_target_mapping_is_zero():
    labels = np.array([0, 0, 1, 1, 2, 2])
    source = np.array([4, 3, 0, 0, 1, 2])  # source classes 3 and 4 -> target 0, 0 -> 1, 1 and 2 -> 2
    assert leep(one_hot(source, 5), labels) == pytest.approx(0.0, abs=1e-12)


def test_leep_of_uninformative_source_probabilities_is_minus_the_label_entropy():
    labels = np.array([0, 0, 0, 1])
    uniform = np.full((4, 7), 1 / 7)  # P(y | z) is the label frequency for every z
    assert leep(uniform, labels) == pytest.approx(np.mean(np.log([0.75, 0.75, 0.75, 0.25])))


def test_leep_prefers_a_source_classifier_that_predicts_the_target():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    informative = np.full((200, 10), 0.02)
    informative[np.arange(200), labels * 2] += 0.8
    random = rng.dirichlet(np.ones(10), size=200)
    assert leep(informative, labels) > leep(random, labels) + 0.5


def test_leep_refuses_logits():
    with pytest.raises(TransferlabError, match="probabilities"):
        leep(np.array([[2.0, -1.0], [0.5, 3.0]]), np.array([0, 1]))


def test_nce_is_minus_the_conditional_entropy():
    rng = np.random.default_rng(0)
    source, labels = rng.integers(0, 6, 300), rng.integers(0, 3, 300)
    labels[source == 0] = 2  # some dependence
    conditional_entropy = entropy(np.bincount(labels)) - mutual_info_score(labels, source)  # nats
    assert nce(source, labels) == pytest.approx(-conditional_entropy)


def test_nce_of_a_source_that_determines_the_target_is_zero():
    assert nce(np.array([5, 5, 1, 9, 9]), np.array([0, 0, 1, 1, 1])) == pytest.approx(0.0)


def test_h_score_is_bounded_and_reaches_c_minus_1_for_class_constant_features():
    separable, noise, labels = separable_and_noise()
    assert h_score(3 * np.eye(16)[labels], labels) == pytest.approx(2.0)
    assert 0 <= h_score(noise, labels) < h_score(separable, labels) <= 2 + 1e-9
    shrunk_separable, shrunk_noise = h_score(separable, labels, shrinkage=True), h_score(noise, labels, shrinkage=True)
    assert 0 <= shrunk_noise < shrunk_separable <= 2 + 1e-9


def test_h_score_is_invariant_to_invertible_linear_maps():
    separable, _, labels = separable_and_noise()
    mixing = np.random.default_rng(3).normal(size=(16, 16))
    assert h_score(separable @ mixing, labels) == pytest.approx(h_score(separable, labels), rel=1e-6)


def test_shrinkage_h_score_still_tells_features_apart_with_fewer_examples_than_dimensions():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 5)  # 20 examples, 64 dimensions
    noise = rng.normal(size=(20, 64))
    separable = noise + 4 * np.eye(64)[labels]
    assert h_score(noise, labels) == pytest.approx(h_score(separable, labels))  # both C - 1: the original is blind
    assert h_score(separable, labels, shrinkage=True) > h_score(noise, labels, shrinkage=True) + 0.5


@pytest.mark.parametrize("shape", [(200, 12), (30, 80)])
def test_shrinkage_h_score_equals_the_formula_with_scikit_learn_ledoit_wolf(shape):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, shape[0])
    features = rng.normal(size=shape) * rng.uniform(0.2, 3, shape[1]) + np.eye(4, shape[1])[labels]
    estimate = LedoitWolf().fit(features)
    means = np.stack([features[labels == c].mean(axis=0) for c in labels])
    cov_g = np.cov(means, rowvar=False, bias=True)
    expected = np.trace(np.linalg.solve(estimate.covariance_, (1 - estimate.shrinkage_) * cov_g))
    assert h_score(features, labels, shrinkage=True) == pytest.approx(expected, rel=1e-8)


def test_knn_accuracy_equals_scikit_learn_leave_one_out():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    features = rng.normal(size=(60, 8)) + 0.8 * np.eye(8)[labels]
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    predicted = cross_val_predict(KNeighborsClassifier(5), unit, labels, cv=LeaveOneOut())
    assert knn_accuracy(features, labels, k=5) == pytest.approx(np.mean(predicted == labels))


def test_knn_accuracy_uses_cosine_similarity_and_never_counts_an_example_as_its_own_neighbour():
    features = np.array([[1.0, 0.0], [10.0, 0.1], [0.0, 1.0], [0.1, 10.0]])  # two directions, lengths differ
    assert knn_accuracy(features, np.array([0, 0, 1, 1]), k=1) == 1.0
    assert knn_accuracy(features, np.array([0, 1, 0, 1]), k=1) == 0.0
    duplicates = np.array([[1.0, 0.0]] * 2 + [[0.0, 1.0]] * 2)
    assert knn_accuracy(duplicates, np.array([0, 1, 0, 1]), k=1) == 0.0


@pytest.mark.parametrize("bad, match", [
    ((np.zeros((3, 2)), np.array([0, 1])), "shapes"),
    ((np.zeros((2, 2)), np.array([0.0, 1.0])), "integer"),
    ((np.array([[np.nan, 0.0], [0.0, 1.0]]), np.array([0, 1])), "NaN"),
    ((np.zeros((1, 2)), np.array([0])), "at least two"),
])
def test_bad_inputs_are_one_line_errors(bad, match):
    with pytest.raises(TransferlabError, match=match):
        log_me(*bad)


def test_knn_refuses_a_bad_k():
    with pytest.raises(TransferlabError, match="positive integer"):
        knn_accuracy(np.eye(3), np.array([0, 1, 1]), k=0)
