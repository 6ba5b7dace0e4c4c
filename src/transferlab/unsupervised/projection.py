"""PCA and PCA-whitening of embeddings, fitted without labels on the target embeddings themselves.

The classic unsupervised adaptation of a pretrained descriptor to a retrieval collection (Jégou & Chum, "Negative
evidences and co-occurrences in image retrieval", ECCV 2012; Radenović et al., TPAMI 2019 learn it the same way):
L2-normalise, subtract the collection's mean, project on its top principal directions (dividing by the square root
of their variance when whitening), L2-normalise again. The fit is scikit-learn's `PCA`; the projection is stored
with the embeddings so that later queries are mapped the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from transferlab.errors import TransferlabError

log = logging.getLogger("transferlab")

__all__ = ["WHITEN_VARIANCE", "Projection", "l2_normalise"]

WHITEN_VARIANCE = 0.9
"""``--whiten`` without ``--pca N`` keeps the principal directions that explain this share of the variance: the
last ones carry noise that whitening would scale up to the size of the signal (measured in docs/benchmarks.md:
keeping 99 % cost 20 points of recall@1 on 397 photos)."""


EXAMPLES_PER_DIRECTION = 10
"""Below this many embeddings per whitened direction, `Projection.fit` warns (measured: whitening 93 directions
fitted on 397 photos cost 7 points of recall@1; 125 directions on 2,007 digits gained 2)."""


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows divided by their Euclidean norm (all-zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass
class Projection:
    """``x -> l2(((l2(x) - mean) @ components.T) / scale)``; ``scale`` is all ones without whitening.

    Shapes: ``mean`` (D,), ``components`` (K, D), ``scale`` (K,).
    """

    mean: np.ndarray
    components: np.ndarray
    scale: np.ndarray
    whiten: bool

    @property
    def dim(self) -> int:
        return len(self.components)

    @classmethod
    def fit(cls, vectors: np.ndarray, *, components: int | None, whiten: bool) -> Projection:
        """Fit on ``vectors`` (N, D): ``components`` directions (``None``: `WHITEN_VARIANCE` of the variance)."""
        n, d = vectors.shape
        if n < 2:
            raise TransferlabError(f"PCA needs at least 2 embeddings to fit on, got {n}")
        if components is not None and not 1 <= components <= min(n, d):
            raise TransferlabError(f"--pca {components}: the number of components must be between 1 and "
                                   f"min(examples, dimensions) = {min(n, d)} here")
        pca = PCA(n_components=components if components is not None else WHITEN_VARIANCE, svd_solver="full")
        pca.fit(l2_normalise(vectors))
        if whiten and n < EXAMPLES_PER_DIRECTION * pca.n_components_:
            log.warning("PCA-whitening %d directions fitted on %d embeddings (fewer than %d per direction): the small "
                        "variances it divides by are noisy, and on small collections whitening often hurts "
                        "retrieval; compare with and without it ('transferlab evaluate EMB') or pass a smaller --pca",
                        pca.n_components_, n, EXAMPLES_PER_DIRECTION)
        scale = np.sqrt(np.maximum(pca.explained_variance_, 1e-12)) if whiten else np.ones(pca.n_components_)
        return cls(pca.mean_.astype(np.float32), pca.components_.astype(np.float32), scale.astype(np.float32), whiten)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` (N, D) mapped to (N, K), L2-normalised."""
        if vectors.shape[1] != self.mean.shape[0]:
            raise TransferlabError(f"the projection maps {self.mean.shape[0]}-dimensional embeddings, got "
                                   f"{vectors.shape[1]} dimensions")
        return l2_normalise((l2_normalise(vectors) - self.mean) @ self.components.T / self.scale)

    def describe(self) -> dict:
        return {"kind": "pca-whitening" if self.whiten else "pca", "components": self.dim,
                "input_dim": int(self.mean.shape[0])}

    def save(self, path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, mean=self.mean, components=self.components, scale=self.scale,
                     whiten=np.array(self.whiten))

    @classmethod
    def load(cls, path: Path) -> Projection:
        try:
            with np.load(path, allow_pickle=False) as arrays:
                projection = cls(arrays["mean"], arrays["components"], arrays["scale"], bool(arrays["whiten"]))
        except (OSError, KeyError, ValueError) as exc:
            raise TransferlabError(f"{path} is not a projection written by transferlab: {exc}") from None
        k, d = projection.components.shape if projection.components.ndim == 2 else (-1, -1)
        if projection.mean.shape != (d,) or projection.scale.shape != (k,):
            raise TransferlabError(f"{path} holds arrays of inconsistent shapes (mean {projection.mean.shape}, "
                                   f"components {projection.components.shape}, scale {projection.scale.shape})")
        return projection
