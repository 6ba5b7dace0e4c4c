"""Transferability scores: how well a frozen backbone's features (or its source classifier) suit a labeled target
task, computed before any training. Higher is better for every score.

Pure functions on numpy arrays: ``features`` ``(N, D)`` (pooled embeddings of the ``N`` target examples),
``labels`` ``(N,)`` integer target classes in ``0..C-1``, ``source_probabilities`` ``(N, Z)`` the source
classifier's class probabilities (e.g. the 1000 ImageNet classes). No PyPI package implements these in a maintained
form (TLlib, which has them, is not on PyPI), so they are written here from the papers and checked in
``tests/test_transferability.py``.
"""

from __future__ import annotations

import numpy as np
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.neighbors import NearestNeighbors

from transferlab.errors import TransferlabError

__all__ = ["DEFAULT_KNN_K", "h_score", "knn_accuracy", "leep", "log_me", "nce"]

DEFAULT_KNN_K = 5
"""Neighbours voting in `knn_accuracy`: small enough for a few labels per class."""

_LOGME_TOLERANCE = 1e-7  # relative change of alpha / beta at which the fixed-point iteration stops
_LOGME_MAX_STEPS = 10_000
_LOGME_FLOOR = 1e-12  # least ||m||^2 and squared residual dividing in an update (y orthogonal to F, a perfect fit)


def log_me(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME: the log marginal evidence of a Bayesian linear model on the features, per example, averaged over
    classes.

    You, Liu, Wang & Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021.
    Each class ``c`` is a regression target ``y = 1[label == c]`` ``(N,)`` with ``y ~ N(F w, 1/beta)`` and prior
    ``w ~ N(0, 1/alpha I)``, ``F`` ``(N, D)``; the evidence is

        log p(y | F, alpha, beta) = D/2 log alpha + N/2 log beta - 1/2 log|A| - beta/2 ||y - F m||^2
                                    - alpha/2 m^T m - N/2 log 2 pi,
        A = alpha I + beta F^T F,  m = beta A^-1 F^T y,

    maximised over ``alpha, beta`` by the paper's fixed-point iteration (with ``sigma_i`` the eigenvalues of
    ``F^T F``): ``gamma = sum_i beta sigma_i / (alpha + beta sigma_i)``, ``alpha = gamma / m^T m``,
    ``beta = (N - gamma) / ||y - F m||^2``, from ``alpha = beta = 1``. LogME is the evidence at the fixed point
    divided by ``N``, averaged over the ``C`` classes, as in the authors' reference code. The features are used as
    given (no centring, no bias term).

    Two differences from the reference code. It stops after at most 11 steps (or a 1 % change of
    ``alpha / beta``), which with fewer examples than dimensions (``N < D``, the few-label case) can stop well
    short of the maximum; here the iteration runs until ``alpha / beta`` changes by less than 1e-7 (relative),
    each step in ``O(min(N, D))`` on the SVD of ``F`` and for all classes at once. And it adds 1e-5 to ``m^T m``
    and ``||y - F m||^2``, in the updates and in the evidence, which lowers the evidence by about
    ``alpha * 1e-5 / 2N`` (noticeable when ``alpha`` is large); here they are only kept from being 0 in the
    updates. The tests check the result against a direct numerical maximisation of the evidence.

    Args:
        features: ``(N, D)`` features.
        labels: ``(N,)`` integer classes.

    Returns:
        The LogME score (a log-likelihood per example: negative numbers are normal; compare backbones by it).
    """
    features, labels = _checked(features, labels, "LogME")
    n, d = features.shape
    targets = (labels[:, None] == np.unique(labels)[None, :]).astype(np.float64)  # (N, C) class indicators
    u, singular, _ = np.linalg.svd(features, full_matrices=False)  # F = U S V^T; eigenvalues of F^T F: S^2
    sigma = (singular**2)[:, None]  # (r, 1), r = min(N, D); the other D - r eigenvalues are 0
    coordinates = u.T @ targets  # (r, C): y in the basis of U
    outside = np.sum((targets - u @ coordinates) ** 2, axis=0)  # (C,) the part of y no weights can fit
    alpha, beta = np.ones(targets.shape[1]), np.ones(targets.shape[1])
    for _ in range(_LOGME_MAX_STEPS):
        weights = beta * singular[:, None] * coordinates / (alpha + beta * sigma)  # V^T m, (r, C)
        m_norm = np.sum(weights**2, axis=0)
        residual = outside + np.sum((coordinates - singular[:, None] * weights) ** 2, axis=0)
        gamma = np.sum(beta * sigma / (alpha + beta * sigma), axis=0)
        new_alpha = gamma / np.maximum(m_norm, _LOGME_FLOOR)
        new_beta = (n - gamma) / np.maximum(residual, _LOGME_FLOOR)
        change = np.abs(new_alpha / new_beta - alpha / beta) / (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if np.all(change < _LOGME_TOLERANCE):
            break
    weights = beta * singular[:, None] * coordinates / (alpha + beta * sigma)
    m_norm = np.sum(weights**2, axis=0)
    residual = outside + np.sum((coordinates - singular[:, None] * weights) ** 2, axis=0)
    log_det = np.sum(np.log(alpha + beta * sigma), axis=0) + (d - len(singular)) * np.log(alpha)
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - log_det / 2 - beta / 2 * residual
                - alpha / 2 * m_norm - n / 2 * np.log(2 * np.pi))
    return float(np.mean(evidence / n))


def leep(source_probabilities: np.ndarray, labels: np.ndarray) -> float:
    """LEEP: the log-likelihood of the target labels under the source classifier followed by the empirical
    conditional distribution of target given source classes.

    Nguyen, Hassner, Seeger & Archambeau, "LEEP: A New Measure to Evaluate Transferability of Learned
    Representations", ICML 2020. With ``theta(x_i)`` the source classifier's probabilities ``(Z,)``:

        P(y, z) = 1/N sum_{i: y_i = y} theta(x_i)_z,   P(y | z) = P(y, z) / sum_y' P(y', z),
        LEEP = 1/N sum_i log sum_z P(y_i | z) theta(x_i)_z.

    Args:
        source_probabilities: ``(N, Z)`` source-class probabilities, each row summing to 1.
        labels: ``(N,)`` integer target classes.

    Returns:
        A value at most 0; 0 (log 1) when every source class maps to one target class with certainty.
    """
    probabilities, labels = _checked(source_probabilities, labels, "LEEP")
    if np.any(probabilities < 0) or not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3):
        raise TransferlabError("LEEP needs source-class probabilities (non-negative rows summing to 1), got other "
                               "values; pass softmax(source logits)")
    _, labels = np.unique(labels, return_inverse=True)
    joint = np.zeros((labels.max() + 1, probabilities.shape[1]))
    np.add.at(joint, labels, probabilities)
    joint /= len(labels)
    marginal = joint.sum(axis=0)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y | z), (C, Z)
    expected = np.einsum("nz,nz->n", probabilities, conditional[labels])
    return float(np.mean(np.log(np.maximum(expected, np.finfo(np.float64).tiny))))


def nce(source_labels: np.ndarray, labels: np.ndarray) -> float:
    """NCE: the negative conditional entropy of the target labels given the source classifier's hard labels.

    Tran, Nguyen & Hassner, "Transferability and Hardness of Supervised Classification Tasks", ICCV 2019. With
    ``z_i = argmax theta(x_i)`` and the empirical joint ``P(y, z)`` of ``(y_i, z_i)``:

        NCE = -H(Y | Z) = sum_{y, z} P(y, z) log P(y | z).

    Args:
        source_labels: ``(N,)`` integer source classes (the argmax of the source classifier).
        labels: ``(N,)`` integer target classes.

    Returns:
        A value at most 0; 0 when the source class determines the target class.
    """
    source_labels = np.asarray(source_labels)
    if source_labels.ndim != 1 or not np.issubdtype(source_labels.dtype, np.integer):
        raise TransferlabError(f"NCE needs (N,) integer source labels, got an array of shape {source_labels.shape} "
                               f"and dtype {source_labels.dtype}")
    _, labels = _checked(source_labels[:, None].astype(np.float64), labels, "NCE")
    _, z = np.unique(source_labels, return_inverse=True)
    _, y = np.unique(labels, return_inverse=True)
    joint = np.zeros((y.max() + 1, z.max() + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= len(y)
    conditional = joint / joint.sum(axis=0, keepdims=True)
    present = joint > 0
    return float(np.sum(joint[present] * np.log(conditional[present])))


def h_score(features: np.ndarray, labels: np.ndarray, *, shrinkage: bool = False) -> float:
    """H-score: how much of the features' variance the class means explain.

    Bao, Li, Huang, Zheng, Guan & Tian, "An Information-Theoretic Approach to Transferability in Task Transfer
    Learning", ICIP 2019:

        H(f) = tr(cov(f)^+ cov(E[f | y])),

    with ``cov(f)`` ``(D, D)`` the covariance of the features, ``E[f | y]`` ``(N, D)`` each example's class mean and
    ``^+`` the pseudo-inverse (numpy's default cut-off for small eigenvalues).

    With no more examples than dimensions (``N <= D``, the few-label case) ``cov(f)`` is singular and this is
    ``C - 1`` for any features at all. ``shrinkage=True`` gives the regularised H-score of Ibrahim, Ponomareva &
    Mazumder ("Newer is not always better: Rethinking transferability metrics, their peculiarities, stability and
    performance", ECML-PKDD 2022): ``cov(f)`` becomes the Ledoit-Wolf estimate
    ``S_a = (1 - a) S + a tr(S) / D I`` (scikit-learn's `ledoit_wolf_shrinkage` picks ``a``) and

        H_a(f) = tr(S_a^-1 (1 - a) cov(E[f | y])),

    both covariances normalised by ``N``.

    Args:
        features: ``(N, D)`` features.
        labels: ``(N,)`` integer classes.
        shrinkage: use the Ledoit-Wolf shrinkage estimate of ``cov(f)`` (see above).

    Returns:
        A value in ``[0, C - 1]``; ``min(C - 1, rank)`` without shrinkage when the features are constant within
        each class.
    """
    features, labels = _checked(features, labels, "H-score")
    class_means = np.zeros_like(features)
    for c in np.unique(labels):
        class_means[labels == c] = features[labels == c].mean(axis=0)
    if not shrinkage:
        cov_f = np.atleast_2d(np.cov(features, rowvar=False))
        cov_g = np.atleast_2d(np.cov(class_means, rowvar=False))
        return float(np.trace(np.linalg.pinv(cov_f, hermitian=True) @ cov_g))
    return _shrunk_h_score(features - features.mean(axis=0), class_means - features.mean(axis=0))


def _shrunk_h_score(centred: np.ndarray, class_means: np.ndarray) -> float:
    """``tr(S_a^-1 (1 - a) cov(E[f | y]))`` from the SVD of the centred features ``X = U s V^T`` ``(N, D)``, in
    ``O(N D min(N, D))`` instead of the ``O(D^3)`` of inverting ``S_a``: on the row space of ``X``, ``S_a`` has
    eigenvectors ``v_i`` and eigenvalues ``(1 - a) s_i^2 / N + a tr(S) / D``, and the centred class means lie in
    that row space, so ``tr(S_a^-1 C) = sum_i v_i^T C v_i / lambda_i``."""
    n, d = centred.shape
    shrinkage = ledoit_wolf_shrinkage(centred, assume_centered=True)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    eigenvalues = (1 - shrinkage) * singular**2 / n + shrinkage * np.sum(singular**2) / (n * d)
    explained = np.sum((class_means @ vt.T) ** 2, axis=0) / n  # v_i^T cov(E[f | y]) v_i
    kept = eigenvalues > eigenvalues.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    return float((1 - shrinkage) * np.sum(explained[kept] / eigenvalues[kept]))


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = DEFAULT_KNN_K) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour classifier on the features (cosine similarity).

    Each example is classified by a majority vote of its ``k`` nearest other examples, on L2-normalised features
    (Euclidean distance there orders neighbours as cosine similarity does); a tie goes to the smallest class index,
    as scikit-learn's `KNeighborsClassifier` breaks it. A simple, strong baseline for ranking backbones.

    Args:
        features: ``(N, D)`` features.
        labels: ``(N,)`` integer classes.
        k: neighbours that vote (`DEFAULT_KNN_K`); at most ``N - 1`` are used.

    Returns:
        The fraction of examples whose vote gives their own class, in ``[0, 1]``.
    """
    features, labels = _checked(features, labels, "k-NN accuracy")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise TransferlabError(f"k of the k-NN accuracy must be a positive integer, got {k!r}")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.where(norms > 0, norms, 1.0)
    neighbours = NearestNeighbors(n_neighbors=min(k, len(labels) - 1)).fit(unit).kneighbors(return_distance=False)
    _, classes = np.unique(labels, return_inverse=True)
    votes = np.zeros((len(classes), classes.max() + 1))
    np.add.at(votes, (np.arange(len(classes))[:, None], classes[neighbours]), 1.0)
    return float(np.mean(votes.argmax(axis=1) == classes))


def _checked(values: np.ndarray, labels: np.ndarray, score: str) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as float64 ``(N, D)`` and ``labels`` as ``(N,)`` integers, with at least two examples and finite
    values."""
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels)
    if values.ndim != 2 or labels.ndim != 1 or len(values) != len(labels):
        raise TransferlabError(f"{score} needs (N, D) values and (N,) labels, got shapes {values.shape} and "
                               f"{labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TransferlabError(f"{score} needs integer class labels, got dtype {labels.dtype}")
    if len(labels) < 2:
        raise TransferlabError(f"{score} needs at least two examples, got {len(labels)}")
    if not np.isfinite(values).all():
        raise TransferlabError(f"{score} got NaN or infinite values in its (N, D) input")
    return values, labels
