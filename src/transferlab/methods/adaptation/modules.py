"""Small modules of the adaptation methods: the gradient reversal layer, discriminators, and one loss module per
method. Every loss module is called as ``module(AdaptationInputs) -> {"loss": scalar, "parts": {...}}``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from transferlab.methods.adaptation.losses import (
    certainty_weights,
    coral_loss,
    domain_adversarial_loss,
    mcc_loss,
    mdd_loss,
    mk_mmd_loss,
    pseudo_label_loss,
    reversal_coefficient,
)

__all__ = ["AdaptationInputs", "GradientReversal", "DomainDiscriminator", "DANNLoss", "CDANLoss", "DANLoss",
           "CORALLoss", "MCCLoss", "MDDLoss", "SelfTrainingLoss"]


@dataclass
class AdaptationInputs:
    """One step's tensors: features ``f_s (B_s, D)``, ``f_t (B_t, D)``; classifier logits ``logits_s``,
    ``logits_t``; ``logits_t_view``: logits of an augmented view of the target batch (``None`` without one);
    ``progress``: share of training done, in [0, 1]."""

    f_s: torch.Tensor
    f_t: torch.Tensor
    logits_s: torch.Tensor
    logits_t: torch.Tensor
    progress: float
    logits_t_view: torch.Tensor | None = None


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coefficient):
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coefficient * grad, None


class GradientReversal(nn.Module):
    """Identity forward, gradient multiplied by ``-coefficient`` backward (Ganin & Lempitsky 2015)."""

    def forward(self, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        return _ReverseGradient.apply(x, coefficient)


class DomainDiscriminator(nn.Module):
    """``(B, D) -> (B, 1)`` domain logit: two hidden layers with BatchNorm and ReLU, as in DANN/CDAN."""

    def __init__(self, in_features: int, hidden: int = 1024):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _domain_accuracy(domain_s: torch.Tensor, domain_t: torch.Tensor) -> torch.Tensor:
    return torch.cat([(domain_s > 0).float(), (domain_t <= 0).float()]).mean().detach()


class DANNLoss(nn.Module):
    """DANN: the discriminator tells the domains apart; the reversed gradient makes the features indistinguishable.
    The reversal coefficient follows `reversal_coefficient` over training progress."""

    def __init__(self, in_features: int, hidden: int = 1024):
        super().__init__()
        self.reverse = GradientReversal()
        self.discriminator = DomainDiscriminator(in_features, hidden)

    def forward(self, x: AdaptationInputs) -> dict:
        coefficient = reversal_coefficient(x.progress)
        domains = self.discriminator(self.reverse(torch.cat([x.f_s, x.f_t]), coefficient)).float()
        domain_s, domain_t = domains.split([len(x.f_s), len(x.f_t)])
        loss = domain_adversarial_loss(domain_s, domain_t)
        return {"loss": loss, "parts": {"domain_accuracy": _domain_accuracy(domain_s, domain_t),
                                        "reversal": torch.tensor(coefficient)}}


class CDANLoss(nn.Module):
    """CDAN (Long et al., NeurIPS 2018): the discriminator sees the multilinear map ``f (x) softmax(g)`` (a random
    projection of it, ``randomized_dim`` wide, when ``D * C`` exceeds 4096); with ``entropy_conditioning`` (CDAN+E)
    confident examples weigh more."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 1024, entropy_conditioning: bool = True,
                 randomized_dim: int = 1024):
        super().__init__()
        self.entropy_conditioning = entropy_conditioning
        self.randomized = in_features * num_classes > 4096
        width = randomized_dim if self.randomized else in_features * num_classes
        if self.randomized:
            self.register_buffer("project_f", torch.randn(in_features, randomized_dim))
            self.register_buffer("project_g", torch.randn(num_classes, randomized_dim))
        self.reverse = GradientReversal()
        self.discriminator = DomainDiscriminator(width, hidden)

    def _multilinear(self, f: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        g = torch.softmax(logits.detach().float(), dim=1).to(f.dtype)
        if self.randomized:
            return (f @ self.project_f.to(f.dtype)) * (g @ self.project_g.to(f.dtype)) / math.sqrt(self.project_f.shape[1])
        return (f[:, :, None] * g[:, None, :]).flatten(1)

    def forward(self, x: AdaptationInputs) -> dict:
        coefficient = reversal_coefficient(x.progress)
        mapped = torch.cat([self._multilinear(x.f_s, x.logits_s), self._multilinear(x.f_t, x.logits_t)])
        domains = self.discriminator(self.reverse(mapped, coefficient)).float()
        domain_s, domain_t = domains.split([len(x.f_s), len(x.f_t)])
        weights = (certainty_weights(x.logits_s), certainty_weights(x.logits_t)) if self.entropy_conditioning else (None, None)
        loss = domain_adversarial_loss(domain_s, domain_t, *weights)
        return {"loss": loss, "parts": {"domain_accuracy": _domain_accuracy(domain_s, domain_t),
                                        "reversal": torch.tensor(coefficient)}}


class DANLoss(nn.Module):
    """DAN: multi-kernel MMD between source and target features (`mk_mmd_loss`), ramped in with DANN's
    `reversal_coefficient` schedule: a backbone trained from scratch has no class structure yet at the start, and
    full-strength MMD then collapses its features before the classifier learns anything (seen on LeNet digits)."""

    def forward(self, x: AdaptationInputs) -> dict:
        ramp = reversal_coefficient(x.progress)
        return {"loss": ramp * mk_mmd_loss(x.f_s, x.f_t), "parts": {"ramp": torch.tensor(ramp)}}


class CORALLoss(nn.Module):
    """Deep CORAL: align the second-order statistics of source and target features (`coral_loss`)."""

    def forward(self, x: AdaptationInputs) -> dict:
        return {"loss": coral_loss(x.f_s, x.f_t), "parts": {}}


class MCCLoss(nn.Module):
    """MCC: minimise the confusion between classes in the target predictions (`mcc_loss`)."""

    def __init__(self, temperature: float = 2.5):
        super().__init__()
        self.temperature = temperature

    def forward(self, x: AdaptationInputs) -> dict:
        return {"loss": mcc_loss(x.logits_t, self.temperature), "parts": {}}


class MDDLoss(nn.Module):
    """MDD: an auxiliary head ``h'`` (two layers) reads the features through a gradient reversal layer whose
    coefficient warms up to 0.1 as in the paper's code; `mdd_loss` trains ``h'`` and, reversed, the features."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 1024, margin: float = 4.0):
        super().__init__()
        self.margin = margin
        self.reverse = GradientReversal()
        self.adversary = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
                                       nn.Linear(hidden, num_classes))

    def forward(self, x: AdaptationInputs) -> dict:
        coefficient = reversal_coefficient(x.progress, high=0.1, gamma=10.0)
        adversarial = self.adversary(self.reverse(torch.cat([x.f_s, x.f_t]), coefficient))
        adv_s, adv_t = adversarial.split([len(x.f_s), len(x.f_t)])
        loss = mdd_loss(x.logits_s, adv_s, x.logits_t, adv_t, self.margin)
        return {"loss": loss, "parts": {"reversal": torch.tensor(coefficient)}}


class SelfTrainingLoss(nn.Module):
    """Self-training: cross-entropy toward the model's own confident target predictions (`pseudo_label_loss`).
    With an augmented view of the target batch (consistency variant), pseudo-labels come from the plain view and
    the loss is taken on the augmented one."""

    def __init__(self, threshold: float = 0.9):
        super().__init__()
        self.threshold = threshold

    def forward(self, x: AdaptationInputs) -> dict:
        student = x.logits_t_view if x.logits_t_view is not None else x.logits_t
        loss, confident = pseudo_label_loss(student, x.logits_t, self.threshold)
        return {"loss": loss, "parts": {"confident_share": confident}}
