"""`TextData`: texts of one domain with optional class labels, the text counterpart of `ImageData`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from transferlab.data.image_data import LabeledExamples

__all__ = ["TextData"]


@dataclass
class TextData(LabeledExamples):
    """Texts of one domain.

    Attributes:
        name: where the data came from (the spec the user gave), used in messages and reports.
        classes: class names; ``labels`` index into it. Empty for unlabeled data.
        labels: ``(N,)`` int64 class indices, or ``None`` when the data has no labels.
        texts: one string per example.
        domain: ``"source"`` or ``"target"``.
    """

    name: str
    classes: list[str]
    labels: np.ndarray | None
    texts: list[str]
    domain: str = "target"
    _digests: dict[int, str] = field(default_factory=dict, repr=False, compare=False)
    noun = "texts"
    per_example = ("texts",)

    def __post_init__(self) -> None:
        self._check_domain_and_labels()

    def __len__(self) -> int:
        return len(self.texts)

    def content_digest(self, index: int) -> str:
        """SHA-1 of the text's UTF-8 bytes: the key of the feature cache."""
        digest = self._digests.get(index)
        if digest is None:
            digest = self._digests[index] = hashlib.sha1(self.texts[index].encode("utf-8")).hexdigest()
        return digest
