"""Pure loss functions of unsupervised domain adaptation: tensors in, scalar tensor out.

Shapes: ``f_s (B_s, D)`` / ``f_t (B_t, D)`` source / target features; ``logits_* (B, C)``; ``domain_logits_* (B, 1)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "domain_adversarial_loss",
    "coral_loss",
    "mk_mmd_loss",
    "mcc_loss",
    "mdd_loss",
    "entropy",
    "certainty_weights",
    "pseudo_label_loss",
    "reversal_coefficient",
]


def reversal_coefficient(progress: float, high: float = 1.0, gamma: float = 10.0) -> float:
    """Ganin & Lempitsky 2015: ``lambda_p = high * (2 / (1 + exp(-gamma p)) - 1)`` for training progress ``p`` in
    [0, 1]: 0 at the start (the discriminator is still random), rising smoothly to ``high``."""
    return high * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of each row of ``probabilities (B, C)`` -> ``(B,)`` (natural log)."""
    return -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum(dim=1)


def certainty_weights(logits: torch.Tensor) -> torch.Tensor:
    """``w = 1 + exp(-H(softmax(logits)))`` normalised to mean 1, ``(B,)``, no gradient (CDAN+E, MCC)."""
    weights = 1.0 + torch.exp(-entropy(torch.softmax(logits.detach(), dim=1)))
    return weights * len(weights) / weights.sum()


def domain_adversarial_loss(domain_logits_s: torch.Tensor, domain_logits_t: torch.Tensor,
                            weights_s: torch.Tensor | None = None, weights_t: torch.Tensor | None = None) -> torch.Tensor:
    """DANN (Ganin et al., JMLR 2016): binary cross-entropy of a domain discriminator, source = 1, target = 0,
    averaged over both domains: ``0.5 (BCE(d_s, 1) + BCE(d_t, 0))``; optional per-example weights (CDAN+E)."""
    source = F.binary_cross_entropy_with_logits(domain_logits_s.squeeze(1), torch.ones_like(domain_logits_s.squeeze(1)),
                                                weight=weights_s)
    target = F.binary_cross_entropy_with_logits(domain_logits_t.squeeze(1), torch.zeros_like(domain_logits_t.squeeze(1)),
                                                weight=weights_t)
    return 0.5 * (source + target)


def coral_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Deep CORAL (Sun & Saenko, ECCV-W 2016): ``||C_s - C_t||_F^2 / (4 d^2)`` with ``C`` the feature covariances."""
    d = f_s.shape[1]
    f_s, f_t = f_s.float(), f_t.float()
    cov_s = torch.cov(f_s.T)
    cov_t = torch.cov(f_t.T)
    return (cov_s - cov_t).pow(2).sum() / (4 * d * d)


def mk_mmd_loss(f_s: torch.Tensor, f_t: torch.Tensor, scales: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)) -> torch.Tensor:
    """Multi-kernel MMD (DAN, Long et al., ICML 2015): squared MMD between the two feature batches under a sum of
    Gaussian kernels ``exp(-||x - y||^2 / (s * sigma^2))``, ``sigma^2`` the mean pairwise squared distance of the
    batch (no gradient), biased (V-statistic) estimate ``mean K_ss + mean K_tt - 2 mean K_st``."""
    features = torch.cat([f_s, f_t]).float()
    distances = torch.cdist(features, features).pow(2)
    bandwidth = distances.detach().mean().clamp_min(1e-8)
    kernel = sum(torch.exp(-distances / (scale * bandwidth)) for scale in scales)
    n = len(f_s)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def mcc_loss(logits_t: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum class confusion (Jin et al., ECCV 2020): with ``p = softmax(logits_t / T)`` and certainty weights
    ``w``, the class-confusion matrix ``C = p^T diag(w) p`` is row-normalised; the loss is its off-diagonal mass
    divided by the number of classes."""
    probabilities = torch.softmax(logits_t.float() / temperature, dim=1)
    weights = certainty_weights(logits_t.float() / temperature)
    confusion = (probabilities * weights[:, None]).T @ probabilities
    confusion = confusion / confusion.sum(dim=1, keepdim=True).clamp_min(1e-12)
    classes = logits_t.shape[1]
    return (confusion.sum() - confusion.trace()) / classes


def mdd_loss(logits_s: torch.Tensor, adv_logits_s: torch.Tensor, logits_t: torch.Tensor, adv_logits_t: torch.Tensor,
             margin: float = 4.0) -> torch.Tensor:
    """Margin disparity discrepancy (Zhang et al., ICML 2019), as the adversary minimises it (the features get it
    reversed): ``margin * CE(h'(f_s), argmax h(f_s)) - log(1 - softmax(h'(f_t))[argmax h(f_t)])``: the auxiliary
    head ``h'`` agrees with the classifier ``h`` on the source and disagrees on the target."""
    predicted_s = logits_s.detach().argmax(1)
    predicted_t = logits_t.detach().argmax(1)
    source = F.cross_entropy(adv_logits_s.float(), predicted_s)
    disagreement = 1.0 - torch.softmax(adv_logits_t.float(), dim=1).gather(1, predicted_t[:, None]).squeeze(1)
    target = -torch.log(disagreement.clamp_min(1e-6)).mean()
    return margin * source + target


def pseudo_label_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-training (Lee 2013; FixMatch, Sohn et al. 2020 with a second view): cross-entropy of ``logits`` toward
    the teacher's predicted class where the teacher's confidence is at least ``threshold``, averaged over the whole
    batch. Returns ``(loss, share of confident examples)``."""
    probabilities = torch.softmax(teacher_logits.detach().float(), dim=1)
    confidence, pseudo = probabilities.max(dim=1)
    mask = (confidence >= threshold).float()
    loss = (F.cross_entropy(logits.float(), pseudo, reduction="none") * mask).mean()
    return loss, mask.mean()
