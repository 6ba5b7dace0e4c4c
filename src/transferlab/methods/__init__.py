"""Transfer methods: each registers itself under its ``--method`` name."""

from transferlab.methods import adaptation, features, finetune, joint, lora, multitask  # noqa: F401  (registration)
from transferlab.speech import ctc  # noqa: F401  (registers --method ctc)
from transferlab.methods.base import METHODS, MethodResult, RunContext, Splits, get_method, register_method

__all__ = ["METHODS", "MethodResult", "RunContext", "Splits", "get_method", "register_method"]
