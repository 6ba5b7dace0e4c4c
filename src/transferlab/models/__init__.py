"""Trained model kinds: each one `Predictor` subclass registered under the ``kind`` its run directories record.

Adding a kind is its module plus one import line here.
"""

from transferlab.models import classifier, ctc, detector, multitask  # noqa: F401  (registration)
from transferlab.models.base import (
           KINDS,
           DataOptions,
           Predictor,
           load_predictor,
           predictor_class,
           register_kind,
)
from transferlab.models.classifier import TransferModel
from transferlab.models.ctc import CTCModel
from transferlab.models.detector import DetectorModel
from transferlab.models.heads import build_head, split_head
from transferlab.models.multitask import MultiTaskModel

__all__ = ["CTCModel", "DetectorModel", "KINDS", "DataOptions", "MultiTaskModel", "Predictor", "TransferModel", "build_head",
           "load_predictor", "predictor_class", "register_kind", "split_head"]
