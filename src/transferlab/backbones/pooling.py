"""Pooling over the real positions of padded sequences (tokens, audio frames): written once for every backbone."""

from __future__ import annotations

import torch

__all__ = ["length_mask", "masked_mean"]


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, size)`` 0/1 mask whose row ``b`` is 1 on the first ``lengths[b]`` positions."""
    return (torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]).long()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` ``(B, T, D)`` over the positions where ``mask`` ``(B, T)`` is 1 -> ``(B, D)``."""
    weights = mask.to(values.dtype).unsqueeze(-1)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
