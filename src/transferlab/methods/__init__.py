"""Transfer methods: each registers itself under its ``--method`` name."""

from transferlab.methods import adaptation, features, finetune, joint, multitask  # noqa: F401  (registration)
from transferlab.methods.base import METHODS, MethodResult, RunContext, Splits, get_method, register_method

__all__ = ["METHODS", "MethodResult", "RunContext", "Splits", "get_method", "register_method"]
