"""How the losses of several tasks become one training step (``--weighting``).

Every weighting is a small module called as ``weighting(losses, features (B, D), shared_params)`` with ``losses``
the K per-task scalar losses (a list, so gradients can be taken per task), that returns
``{"loss": scalar, "parts": {...}}`` and, when it computes the gradient itself, a ``"backward"`` callable the loop
uses instead of ``loss.backward()``. ``features`` is the shared representation (the backbone output) the task
heads read; ``shared_params`` are the backbone parameters that currently train.

- ``fixed``: ``sum_i w_i L_i`` with the tasks' configured weights.
- ``uncertainty``: Kendall, Gal & Cipolla, CVPR 2018: ``sum_i 0.5 exp(-s_i) L_i + 0.5 s_i`` with learned
  log-variances ``s_i`` (`torchjd.scalarization.UW`).
- ``dwa``: dynamic weight average, Liu, Johns & Davison, CVPR 2019: ``lambda_i = K softmax_i(r_i / T)`` with
  ``r_i = L_i(t-1) / L_i(t-2)`` from epoch-average losses (`torchjd.scalarization.DWA`).
- ``gradnorm``: Chen et al., ICML 2018 (`GradNorm`).
- ``upgrad``, ``pcgrad``, ``cagrad``, ``mgda``, ``imtl-g``, ``aligned-mtl``, ``dualproj``: Jacobian descent with
  torchjd's aggregators (Quinton & Rey 2024; Yu et al. 2020; Liu et al. 2021; Desideri 2012 / Sener & Koltun
  2018; Liu et al. 2021; Senushkin et al. 2023; Lopez-Paz & Ranzato 2017): the backbone gets the aggregate of the
  per-task gradients (`torchjd.autojac.mtl_backward` + `jac_to_grad`), each head its own task's gradient.
"""

from __future__ import annotations

import torch
from torch import nn
from torchjd import aggregation, scalarization
from torchjd.autojac import jac_to_grad, mtl_backward

from transferlab.errors import TransferlabError

__all__ = ["MULTI_LOSS_WEIGHTINGS", "WEIGHTINGS", "build_weighting", "LossWeighting", "FixedWeighting", "UncertaintyWeighting", "DynamicWeightAverage", "GradNorm",
           "JacobianDescent", "gradnorm_loss", "AGGREGATORS"]

# weightings that balance several losses: meaningless for a single task
MULTI_LOSS_WEIGHTINGS = ("uncertainty", "dwa", "gradnorm", "upgrad", "pcgrad", "cagrad", "mgda", "imtl-g", "aligned-mtl",
                         "dualproj")
WEIGHTINGS = ("fixed", *MULTI_LOSS_WEIGHTINGS)

# --weighting name -> torchjd aggregator factory
AGGREGATORS = {
    "upgrad": aggregation.UPGrad,
    "pcgrad": aggregation.PCGrad,
    "cagrad": lambda: aggregation.CAGrad(c=0.5),
    "mgda": aggregation.MGDA,
    "imtl-g": aggregation.IMTLG,
    "aligned-mtl": aggregation.AlignedMTL,
    "dualproj": aggregation.DualProj,
}


class LossWeighting(nn.Module):
    """Base of the weightings: ``forward(losses: list of K scalars, features, shared_params) -> {"loss", "parts"
    [, "backward"]}``;
    ``start_epoch`` is an epoch hook (``hook(model, epoch)``) for weightings that follow epoch statistics;
    ``computes_own_gradients``: whether ``forward`` may return a ``"backward"`` that fills the gradients itself."""

    computes_own_gradients = False

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = list(names)

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        return None


def _weight_parts(names: list[str], weights: torch.Tensor) -> dict[str, torch.Tensor]:
    return {f"{name}_weight": weight for name, weight in zip(names, weights.detach(), strict=True)}


class FixedWeighting(LossWeighting):
    """``sum_i w_i L_i`` with fixed weights ``w``."""

    def __init__(self, names: list[str], weights: list[float]):
        super().__init__(names)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32), persistent=False)

    def forward(self, losses, features, shared_params) -> dict:
        return {"loss": (self.weights * torch.stack(losses)).sum(), "parts": {}}


class UncertaintyWeighting(LossWeighting):
    """Homoscedastic-uncertainty weighting (Kendall et al. 2018) through `torchjd.scalarization.UW`; the learned
    log-variances are trained by the run's optimizer and logged as ``{task}_weight = 0.5 exp(-s_i)``."""

    def __init__(self, names: list[str]):
        super().__init__(names)
        self.uw = scalarization.UW(len(names))

    def forward(self, losses, features, shared_params) -> dict:
        weights = 0.5 * torch.exp(-self.uw.log_var)
        return {"loss": self.uw(torch.stack(losses)), "parts": _weight_parts(self.names, weights)}


class DynamicWeightAverage(LossWeighting):
    """Dynamic weight average (Liu et al. 2019) through `torchjd.scalarization.DWA`. Call it as an epoch hook
    (`start_epoch`) so each epoch starts from the previous epochs' average losses; its history is part of
    ``state_dict`` (extra state), so ``--resume`` continues with the same weights."""

    def __init__(self, names: list[str], temperature: float):
        super().__init__(names)
        self.dwa = scalarization.DWA(temperature)

    def forward(self, losses, features, shared_params) -> dict:
        losses = torch.stack(losses)
        weights = self.dwa._compute_weights(losses.detach())  # the weights DWA applies to this batch (logged)
        return {"loss": self.dwa(losses), "parts": _weight_parts(self.names, weights)}

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        self.dwa.step()  # the previous epoch's average losses become the history the weights follow

    # torchjd keeps DWA's epoch history in plain attributes; carry them in checkpoints
    def get_extra_state(self):
        loss_sum = self.dwa._loss_sum
        return {"loss_sum": loss_sum, "n_batches": self.dwa._n_batches, "previous": list(self.dwa._previous_averages)}

    def set_extra_state(self, state) -> None:
        self.dwa._loss_sum = state["loss_sum"]
        self.dwa._n_batches = int(state["n_batches"])
        self.dwa._previous_averages = list(state["previous"])


def gradnorm_loss(weights: torch.Tensor, grad_norms: torch.Tensor, loss_ratios: torch.Tensor, alpha: float) -> torch.Tensor:
    """GradNorm's loss on the task weights (Chen et al., ICML 2018, eq. 2).

    ``L_grad = sum_i | w_i ||g_i|| - mean_j(w_j ||g_j||) * r_i^alpha |`` with ``r_i = L~_i / mean_j L~_j`` and
    ``L~_i = L_i(t) / L_i(0)``; the target (second term) is a constant. Shapes: all ``(K,)``; returns a scalar
    whose gradient reaches only ``weights``.
    """
    norms = weights * grad_norms.detach()
    relative = loss_ratios.detach() / loss_ratios.detach().mean()
    target = norms.mean().detach() * relative.pow(alpha)
    return (norms - target).abs().sum()


class GradNorm(LossWeighting):
    """GradNorm: learn task weights that equalise the tasks' gradient norms at the shared representation, scaled
    by how far each task still is from its initial loss (``alpha`` sets the pull). The gradient norms are taken
    with respect to the backbone output, the last shared layer; weights are kept positive and renormalised to sum
    to K at every step. The network trains on ``sum_i w_i L_i`` (weights held constant), the weights on
    `gradnorm_loss`.
    """

    def __init__(self, names: list[str], alpha: float):
        super().__init__(names)
        self.alpha = alpha
        self.raw_weights = nn.Parameter(torch.ones(len(names)))
        self.register_buffer("initial_losses", torch.full((len(names),), float("nan")))

    def forward(self, losses, features, shared_params) -> dict:
        positive = self.raw_weights.clamp_min(1e-4)
        weights = len(self.names) * positive / positive.sum()
        task_losses, losses = losses, torch.stack(losses)
        total = (weights.detach() * losses).sum()
        parts = _weight_parts(self.names, weights)
        if not features.requires_grad:  # the backbone is frozen this epoch: nothing shared to balance
            return {"loss": total + 0.0 * weights.sum(), "parts": parts}
        if torch.isnan(self.initial_losses).any():
            self.initial_losses.copy_(losses.detach().float())
        grad_norms = torch.stack([
            torch.autograd.grad(loss, features, retain_graph=True, allow_unused=True)[0].float().norm()
            if loss.requires_grad else torch.zeros((), device=losses.device)
            for loss in task_losses
        ])
        ratios = losses.detach().float() / self.initial_losses.clamp_min(1e-12)
        balance = gradnorm_loss(weights, grad_norms, ratios, self.alpha)
        return {"loss": total + balance, "parts": {**parts, "gradnorm_loss": balance.detach()}}


class JacobianDescent(LossWeighting):
    """Aggregate the per-task gradients on the shared parameters with a torchjd aggregator (UPGrad, PCGrad, ...).

    ``loss`` (logged) is ``sum_i L_i``; ``backward`` fills ``.grad``: heads get their own task's gradient, the
    backbone the aggregation of the task Jacobian. Tasks with no labeled example in the batch are left out of the
    Jacobian (a zero row would stall min-norm aggregators). When no backbone parameter trains, the plain sum is
    used.
    """

    computes_own_gradients = True

    def __init__(self, names: list[str], method: str):
        super().__init__(names)
        self.method = method
        self.aggregator = AGGREGATORS[method]()

    def forward(self, losses, features, shared_params) -> dict:
        total = torch.stack(losses).sum()
        present = [loss for loss in losses if loss.requires_grad and loss.detach() != 0]
        if not features.requires_grad or not shared_params or len(present) < 2:
            return {"loss": total, "parts": {}}

        def backward() -> None:
            mtl_backward(present, features=features)
            jac_to_grad(shared_params, self.aggregator)
            for param in shared_params:  # torchjd writes contiguous gradients: match channels-last weights
                if param.grad is not None and param.grad.stride() != param.stride():
                    param.grad = torch.empty_like(param).copy_(param.grad)

        return {"loss": total, "parts": {}, "backward": backward}


def build_weighting(method: str, names: list[str], fixed_weights: list[float], *, dwa_temperature: float = 2.0,
                    gradnorm_alpha: float = 1.5) -> LossWeighting:
    """The weighting module for ``--weighting method`` over tasks ``names``."""
    if method == "fixed":
        return FixedWeighting(names, fixed_weights)
    if len(names) < 2:
        raise TransferlabError(f"weighting '{method}' balances several tasks; with one task use 'fixed'")
    if method == "uncertainty":
        return UncertaintyWeighting(names)
    if method == "dwa":
        return DynamicWeightAverage(names, dwa_temperature)
    if method == "gradnorm":
        return GradNorm(names, gradnorm_alpha)
    if method in AGGREGATORS:
        return JacobianDescent(names, method)
    raise TransferlabError(f"unknown weighting '{method}'; choose one of {', '.join(WEIGHTINGS)}")
