"""Pooling of token-level or spatial features into one vector per example: written once for every backbone.

`pool_feature_map` is the named pooling step every backbone's ``forward`` ends with (``Backbone.pool_features``):
``"avg"`` (mean over the real tokens/frames, or over height and width), ``"cls"`` (the first token) and
``"flatten"`` (every position, concatenated).
"""

from __future__ import annotations

import torch

__all__ = ["length_mask", "masked_mean", "pool_feature_map"]


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, size)`` 0/1 mask whose row ``b`` is 1 on the first ``lengths[b]`` positions."""
    return (torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]).long()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` ``(B, T, D)`` over the positions where ``mask`` ``(B, T)`` is 1 -> ``(B, D)``."""
    weights = mask.to(values.dtype).unsqueeze(-1)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def pool_feature_map(values: torch.Tensor, mask: torch.Tensor | None, pool: str) -> torch.Tensor:
    """One vector per example from token-level ``(B, T, D)`` or spatial ``(B, C, H, W)`` features.

    Args:
        values: ``(B, T, D)`` tokens/frames or ``(B, C, H, W)`` feature maps.
        mask: ``(B, T)``, 1 (or True) on real tokens and 0 on padding; ``None`` when every position is real.
            Feature maps have none.
        pool: ``"avg"``: the mean over real positions (``(B, D)``; ``(B, C)`` for maps); ``"cls"``: the first
            token (``(B, D)``, sequences only); ``"flatten"``: every position concatenated (``(B, T*D)`` or
            ``(B, C*H*W)``; padded positions are zeroed).

    Raises:
        ValueError: an unknown ``pool``, ``"cls"`` on a feature map, or values that are neither 3-D nor 4-D.
    """
    if values.dim() not in (3, 4):
        raise ValueError(f"features must be (B, T, D) or (B, C, H, W), got shape {tuple(values.shape)}")
    if pool == "avg":
        if values.dim() == 4:
            return values.mean(dim=(2, 3))
        return values.mean(dim=1) if mask is None else masked_mean(values, mask)
    if pool == "flatten":
        if mask is not None and values.dim() == 3:
            values = values * mask.to(values.dtype).unsqueeze(-1)
        return values.flatten(1)
    if pool == "cls":
        if values.dim() == 4:
            raise ValueError("pool 'cls' (the first token) needs (B, T, D) token features, not a (B, C, H, W) map; "
                             "choose 'avg' or 'flatten'")
        return values[:, 0]
    raise ValueError(f"unknown pool {pool!r}; choose one of avg, cls, flatten")
