"""Heads on pooled backbone features: what ``--head`` builds, and the split adaptation losses align at."""

from __future__ import annotations

from torch import nn

from transferlab.config import HEADS
from transferlab.errors import TransferlabError

__all__ = ["build_head", "split_head"]


def build_head(kind: str, in_features: int, num_classes: int, hidden: list[int], dropout: float = 0.0) -> nn.Module:
    """A classification head on pooled (or flattened) features.

    ``"linear"`` (and ``"logistic"``, whose scikit-learn fit is folded into a linear layer) is one ``nn.Linear``;
    ``"mlp"`` is ``Linear -> ReLU -> Dropout`` per hidden size, then a final ``Linear``; ``"bottleneck"`` is the
    domain-adaptation head of TLlib and CDAN's code, ``Linear -> BatchNorm -> ReLU`` to ``hidden[0]`` features, then a
    final ``Linear``: batch normalisation over batches that hold both domains.
    """
    if kind in ("linear", "logistic"):
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        return nn.Sequential(*layers, nn.Linear(in_features, num_classes))
    if kind == "mlp":
        layers, width = [], in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        return nn.Sequential(*layers, nn.Linear(width, num_classes))
    if kind == "bottleneck":
        width = hidden[0] if hidden else 256
        layers = [nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        return nn.Sequential(*layers, *([nn.Dropout(dropout)] if dropout else []), nn.Linear(width, num_classes))
    raise TransferlabError(f"unknown head '{kind}'; expected one of {', '.join(HEADS)}")


def split_head(head: nn.Sequential) -> tuple[nn.Module, nn.Module]:
    """``(neck, classifier)``: everything before the head's last linear layer, and that layer. Adaptation losses
    align the neck's output (the features the classifier reads): the backbone features for a linear head, the
    bottleneck for a bottleneck or mlp head."""
    return head[:-1], head[-1]
