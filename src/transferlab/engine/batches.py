"""Batches of any modality: a ``(B, ...)`` tensor (images) or a ``{name: (B, ...)}`` dict (text and audio, padded
along their last dimension). Moving, counting and concatenating them is written once here."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["batch_length", "concat_inputs", "to_device"]


def to_device(batch, device: torch.device, *, channels_last: bool = False):
    """Move every tensor of a (possibly nested) batch to ``device``; with ``channels_last``, 4-D image batches
    also change to the channels-last memory format (faster inference on CPUs)."""
    if torch.is_tensor(batch):
        batch = batch.to(device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last and batch.dim() == 4 else batch
    if isinstance(batch, (list, tuple)):
        return [to_device(item, device, channels_last=channels_last) for item in batch]
    if isinstance(batch, dict):
        return {key: to_device(value, device, channels_last=channels_last) for key, value in batch.items()}
    return batch


def batch_length(inputs) -> int:
    """Examples in a batch of inputs (a tensor or a dict of tensors)."""
    if isinstance(inputs, dict):
        return len(next(iter(inputs.values())))
    return len(inputs)


def concat_inputs(parts: list):
    """One batch from several: tensors are concatenated; dicts are padded with zeros along the last dimension to
    the longest part first (a zero ``attention_mask`` marks the padding)."""
    if not isinstance(parts[0], dict):
        return torch.cat(parts)
    joined = {}
    for key in parts[0]:
        longest = max(part[key].shape[-1] for part in parts)
        joined[key] = torch.cat([F.pad(part[key], (0, longest - part[key].shape[-1])) for part in parts])
    return joined
