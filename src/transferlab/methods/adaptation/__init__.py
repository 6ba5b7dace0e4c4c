"""Unsupervised domain adaptation: methods (``source-only``, ``dann``, ``cdan``, ``dan``, ``coral``, ``mcc``, ``mdd``,
``self-training``) and label-free model selection."""

from transferlab.methods.adaptation.registry import ADAPTATION_METHODS, AdaptationConfig
from transferlab.methods.adaptation.selection import DEFAULT_SCORER, SCORERS

__all__ = ["ADAPTATION_METHODS", "AdaptationConfig", "DEFAULT_SCORER", "SCORERS"]
