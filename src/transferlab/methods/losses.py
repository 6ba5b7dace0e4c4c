"""Loss functions and the objectives built from them. Objectives return ``{"loss": total, "parts": {...}}``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["l2sp_penalty", "ClassificationObjective", "L2SP"]


def l2sp_penalty(params: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
    """Squared distance to a starting point (Li, Grandvalet & Davoine, "Explicit inductive bias for transfer
    learning with convolutional networks", ICML 2018): ``sum_i ||w_i - w0_i||^2`` (without the alpha/2 factor).

    Args:
        params: current tensors ``w_i``, any shapes.
        reference: the pretrained tensors ``w0_i``, same shapes, no gradient.
    Returns:
        a scalar tensor.
    """
    return sum(((p - r.to(p.device)) ** 2).sum() for p, r in zip(params, reference, strict=True))


class L2SP(nn.Module):
    """L2-SP regulariser: ``alpha/2 * ||w_S - w0_S||^2 + beta/2 * ||w_head||^2``.

    ``w_S`` are the backbone weights that started pretrained (``w0_S`` is a frozen copy taken at construction);
    ``w_head`` the new head's weights.
    """

    def __init__(self, model: nn.Module, alpha: float, beta: float):
        super().__init__()
        self.alpha, self.beta = alpha, beta
        self._backbone = [p for p in model.backbone.parameters()]
        self._reference = [p.detach().clone() for p in self._backbone]
        head = model.heads if hasattr(model, "heads") else model.head  # every task head of a multi-task model
        self._head = [p for name, p in head.named_parameters() if name.endswith("weight")]

    def forward(self) -> torch.Tensor:
        penalty = 0.5 * self.alpha * l2sp_penalty(self._backbone, self._reference)
        if self.beta:
            penalty = penalty + 0.5 * self.beta * sum((w**2).sum() for w in self._head)
        return penalty


class ClassificationObjective(nn.Module):
    """Softmax cross-entropy on the model's logits, plus optional regularisers (each a module returning a scalar).

    ``forward(model, batch)`` takes ``batch = (inputs, labels)`` with labels ``(B,)`` int64 and returns
    ``{"loss": ce + sum(regularisers), "parts": {"ce": ..., <name>: ...}}``.
    """

    def __init__(self, regularizers: dict[str, nn.Module] | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.regularizers = regularizers or {}
        self.label_smoothing = label_smoothing

    def forward(self, model: nn.Module, batch) -> dict:
        inputs, labels = batch
        logits = model(inputs)
        ce = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        parts = {"ce": ce}
        total = ce
        for name, regularizer in self.regularizers.items():
            value = regularizer()
            parts[name] = value
            total = total + value
        return {"loss": total, "parts": parts}
