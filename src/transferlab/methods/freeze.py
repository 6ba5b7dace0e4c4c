"""Freezing, gradual unfreezing and discriminative learning rates, all over named parameter groups (STYLE rule 4)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from torch import nn

from transferlab.errors import TransferlabError

__all__ = ["frozen_parameter_names", "discriminative_param_groups", "GradualUnfreezing", "batchnorm_parameter_names",
           "set_requires_grad"]

Groups = list[tuple[str, list[str]]]


def frozen_parameter_names(freeze: str, groups: Groups) -> set[str]:
    """Names of parameters that stay frozen for the whole run.

    Args:
        freeze: ``"all"`` (every backbone group), ``"none"``, ``"N"`` (the first N groups, input side first) or a
            pattern matched against group and parameter names: a glob (``backbone.blocks.0.*``), a module name
            without wildcards that takes everything under it (``backbone``, ``backbone.blocks.0``) or, when it
            contains regex syntax the glob cannot mean, a regular expression (``re:^backbone\\.stem``).
        groups: the model's groups, input to output; the last one is the head, which ``all``/``N`` never freeze.
    """
    backbone_groups = groups[:-1]
    if freeze == "none":
        return set()
    if freeze == "all":
        return {name for _, names in backbone_groups for name in names}
    if freeze.isdigit():
        count = int(freeze)
        if count > len(backbone_groups):
            raise TransferlabError(
                f"--freeze {count} asks for more groups than the backbone has ({len(backbone_groups)}: "
                f"{', '.join(name for name, _ in backbone_groups[:4])}, ...)"
            )
        return {name for _, names in backbone_groups[:count] for name in names}
    all_names = [name for _, names in groups for name in names]
    if freeze.startswith("re:"):
        try:
            pattern = re.compile(freeze[3:])
        except re.error as exc:
            raise TransferlabError(f"--freeze pattern {freeze!r} is not a valid regular expression: {exc}") from None
        matched = {name for name in all_names if pattern.search(name)}
    else:
        group_names = {group: names for group, names in groups}
        matched = {name for name in all_names if fnmatch.fnmatchcase(name, freeze) or name.startswith(f"{freeze}.")}
        for group, names in group_names.items():
            if fnmatch.fnmatchcase(group, freeze):
                matched.update(names)
    if not matched:
        examples = ", ".join(all_names[:3])
        raise TransferlabError(
            f"--freeze pattern {freeze!r} matches no parameter; expected 'all', 'none', a number of groups, "
            f"or a glob over names such as {examples}"
        )
    return matched


def batchnorm_parameter_names(module: nn.Module, prefix: str = "") -> set[str]:
    """Names (with ``prefix``) of the affine parameters of every BatchNorm layer in ``module``: freezing them keeps
    those layers in eval mode too (`transferlab.models.base.FrozenBatchNormMixin`), i.e. frozen BatchNorm."""
    names = set()
    for layer_name, layer in module.named_modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            names.update(f"{prefix}{layer_name}.{name}" for name, _ in layer.named_parameters(recurse=False))
    return names


def set_requires_grad(model: nn.Module, names: set[str], flag: bool) -> None:
    for name, param in model.named_parameters():
        if name in names:
            param.requires_grad_(flag)


def discriminative_param_groups(model: nn.Module, groups: Groups, lr: float, ratio: float, exclude: set[str]) -> list[dict]:
    """Optimizer parameter groups with learning rates rising geometrically from input to head.

    The head gets ``lr``, the first backbone group ``lr / ratio``, groups in between the geometric steps
    (``lr * ratio ** -((n - 1 - i) / (n - 1))``, ULMFiT-style discriminative fine-tuning). Parameters in
    ``exclude`` (frozen for the whole run) are left out.
    """
    params = dict(model.named_parameters())
    count = len(groups)
    result = []
    for index, (group_name, names) in enumerate(groups):
        members = [params[name] for name in names if name not in exclude]
        if not members:
            continue
        exponent = (count - 1 - index) / (count - 1) if count > 1 else 0.0
        result.append({"params": members, "lr": lr * ratio ** (-exponent), "name": group_name})
    if not result:
        raise TransferlabError("every parameter is frozen: nothing to train (check --freeze)")
    return result


@dataclass
class GradualUnfreezing:
    """Epoch hook: train only the head for ``head_epochs`` epochs, then unfreeze the rest of what may train.

    Freeze state is a pure function of the epoch, so a resumed run restores it exactly.
    """

    backbone_trainable: set[str]
    head_epochs: int

    def state_at(self, epoch: int) -> str:
        return "head-only" if epoch < self.head_epochs else "unfrozen"

    def __call__(self, model: nn.Module, epoch: int) -> None:
        set_requires_grad(model, self.backbone_trainable, epoch >= self.head_epochs)
