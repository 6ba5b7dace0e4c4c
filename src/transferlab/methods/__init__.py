"""Transfer methods. Each registers one `MethodSpec` under its ``--method`` name; adding a method is its module plus
one import line here."""

from transferlab.methods import finetune, features, contrastive, joint, multitask, lora, adaptation, ctc, detection  # noqa: F401, I001  (registration, in listing order)
from transferlab.methods.base import (
    METHODS,
    MethodResult,
    MethodSpec,
    RunContext,
    Splits,
    build_config,
    get_method,
    ignored_given_settings,
    register_method,
    setting_owners,
)

__all__ = ["METHODS", "MethodResult", "MethodSpec", "RunContext", "Splits", "build_config", "get_method",
           "ignored_given_settings", "register_method", "setting_owners"]
