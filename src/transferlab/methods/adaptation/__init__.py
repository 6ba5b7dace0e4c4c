"""Unsupervised domain adaptation: methods (``source-only``, ``dann``, ``cdan``, ``dan``, ``coral``, ``mcc``, ``mdd``,
``self-training``) and label-free model selection."""

from transferlab.methods.adaptation import train  # noqa: F401  (registration)
from transferlab.methods.adaptation.selection import DEFAULT_SCORER, SCORERS
from transferlab.methods.adaptation.train import ADAPTATION_LOSSES

__all__ = ["ADAPTATION_LOSSES", "DEFAULT_SCORER", "SCORERS"]
