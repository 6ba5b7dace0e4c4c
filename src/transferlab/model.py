"""`TransferModel`: a backbone plus a task head, with class names and preprocessing; what a run directory holds."""

from __future__ import annotations

import torch
from torch import nn

from transferlab.backbones.base import Backbone
from transferlab.config import HEADS
from transferlab.errors import TransferlabError

__all__ = ["TransferModel", "MultiTaskModel", "build_head", "split_head"]


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


class TransferModel(nn.Module):
    """``head(backbone(x))`` with the class names it predicts.

    BatchNorm layers whose parameters are all frozen stay in eval mode even in ``train()``, so frozen parts keep
    their pretrained running statistics.

    Args:
        backbone: any `Backbone`.
        head: a module mapping ``(B, backbone.num_features)`` to ``(B, len(classes))`` logits.
        classes: class names, in logit order.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, classes: list[str]):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.classes = list(classes)

    @property
    def preprocess(self):
        return self.backbone.preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> "TransferModel":
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    params = list(module.parameters(recurse=False))
                    if params and not any(p.requires_grad for p in params):
                        module.eval()
        return self

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        """The backbone's named groups (prefixed ``backbone.``) followed by a ``head`` group, input to output."""
        return [*self._backbone_groups(), ("head", [f"head.{name}" for name, _ in self.head.named_parameters()])]

    def _backbone_groups(self) -> list[tuple[str, list[str]]]:
        return [(f"backbone.{name}", [f"backbone.{p}" for p in params]) for name, params in self.backbone.parameter_groups()]


class MultiTaskModel(TransferModel):
    """One shared backbone and one head per task: ``forward(x)`` returns ``{task_name: outputs (B, n_outputs)}``.

    Args:
        backbone: any `Backbone`.
        heads: task name -> head module, in task order.
        tasks: the `transferlab.tasks.Task` of every head (same names, same order).
    """

    def __init__(self, backbone: Backbone, heads: dict[str, nn.Module], tasks: list):
        if [task.name for task in tasks] != list(heads):
            raise ValueError(f"heads {list(heads)} do not match tasks {[task.name for task in tasks]}")
        nn.Module.__init__(self)
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.tasks = list(tasks)
        self.classes = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_features(self.backbone(x))

    def forward_features(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every head's outputs from shared features ``(B, num_features)``."""
        return {name: head(features) for name, head in self.heads.items()}

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        """The backbone's named groups, then one ``head`` group holding every task head (they learn together)."""
        return [*self._backbone_groups(), ("head", [f"heads.{name}" for name, _ in self.heads.named_parameters()])]
