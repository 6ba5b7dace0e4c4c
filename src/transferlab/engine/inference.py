"""Inference over a loader: a model's outputs for every batch, in eval mode, gathered on the CPU."""

from __future__ import annotations

import torch
from torch import nn

from transferlab.engine.batches import to_device
from transferlab.engine.precision import autocast
from transferlab.engine.progress import progress_bar

__all__ = ["predict_logits"]


def _concat(chunks: list):
    """Concatenate batch results: tensors, or dicts of tensors (one entry per task)."""
    if isinstance(chunks[0], dict):
        return {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]}
    return torch.cat(chunks)


def _float_cpu(outputs):
    if isinstance(outputs, dict):
        return {key: value.float().cpu() for key, value in outputs.items()}
    return outputs.float().cpu()


def predict_logits(
    model: nn.Module, loader, precision: str, device: torch.device, progress: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over ``loader`` in eval mode; return ``(outputs (N, D) float32, labels (N,))``.

    A model with several heads gives ``{task: (N, D_task)}`` outputs, and a loader of ``{task: targets}`` gives
    labels in the same form. ``progress``: a progress-bar label (shown on the main process), or ``None``.
    """
    model.eval()
    outputs, labels = [], []
    batches = progress_bar(loader, desc=progress, enabled=progress is not None)
    with torch.inference_mode(), autocast(precision, device):
        for inputs, targets in batches:
            outputs.append(_float_cpu(model(to_device(inputs, device, channels_last=True))))
            labels.append(targets)
    return _concat(outputs), _concat(labels)
