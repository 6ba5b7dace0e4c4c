"""Optimizers and learning-rate schedules by name, over explicit parameter groups."""

from __future__ import annotations

import torch

from transferlab.config import SCHEDULERS, TrainingSettings
from transferlab.errors import TransferlabError

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "build_scheduler"]

OPTIMIZERS = ("adamw", "adam", "sgd")
# the learning-rate factor a warm-up starts from
WARMUP_START = 0.001


def build_optimizer(name: str, param_groups: list[dict], weight_decay: float) -> torch.optim.Optimizer:
    """``param_groups``: dicts with ``params`` and ``lr`` (and optionally ``name``), e.g. discriminative rates."""
    if name == "adamw":
        return torch.optim.AdamW(param_groups, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(param_groups, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(param_groups, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise TransferlabError(f"unknown optimizer '{name}'; expected one of {', '.join(OPTIMIZERS)}")


def build_scheduler(settings: TrainingSettings, optimizer: torch.optim.Optimizer, total_steps: int):
    """The per-batch schedule ``settings.scheduler`` over ``total_steps`` (cosine decay to 0, one-cycle, inverse
    decay or constant), after a linear warm-up over the first ``settings.warmup`` fraction of the steps when set.

    ``inverse`` is the annealing of DANN (Ganin & Lempitsky, ICML 2015) used across domain-adaptation code:
    ``lr_p = lr / (1 + 10 p) ** 0.75`` at training progress ``p`` in [0, 1] (ends at 0.17 lr). The warm-up starts at
    ``WARMUP_START`` x the learning rate, as torchvision's detection references do: new heads trained at full rate
    from their first step can die (a detector's ReLU box regression stuck at zero for good).
    """
    total_steps = max(total_steps, 1)
    warmup = min(round(settings.warmup * total_steps), total_steps - 1)
    schedule = _schedule(settings.scheduler, optimizer, total_steps - warmup)
    if warmup <= 0:
        return schedule
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START, total_iters=warmup)
    if schedule is None:
        return ramp  # LinearLR holds the full rate after its ramp
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, schedule], milestones=[warmup])


def _schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int):
    total_steps = max(total_steps, 1)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if name == "onecycle":
        max_lrs = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs, total_steps=total_steps)
    if name == "inverse":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 + 10 * step / total_steps) ** -0.75)
    if name == "constant":
        return None
    raise TransferlabError(f"unknown scheduler '{name}'; expected one of {', '.join(SCHEDULERS)}")
