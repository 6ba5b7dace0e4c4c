"""Where torch.distributed plugs in: process rank, data sampling and rank-0-only writing, kept in one place.

Single-process runs use the same code paths with ``world_size == 1``; under ``torchrun`` (DDP) the sampler shards
the data and only rank 0 writes files.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    Subset,
)

__all__ = ["collate_fn_of", "is_main_process", "make_loader", "rank", "share_from_main", "world_size"]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """True on the process that writes run files, logs and progress bars."""
    return rank() == 0


def share_from_main(value):
    """The main process's ``value`` on every process (a picklable object; ``value`` itself when not distributed)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose order depends only on ``(seed, epoch)``, so a resumed run sees the same batches; it
    batches with the dataset's own ``collate_fn`` when it has one (text and audio: dynamic padding)."""
    if world_size() > 1:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        sampler.set_epoch(epoch)
    elif shuffle:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        sampler = RandomSampler(dataset, generator=generator)
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate_fn_of(dataset),
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )


def collate_fn_of(dataset: Dataset):
    """The ``collate_fn`` a dataset (or a `Subset` of one) asks for, or ``None`` for PyTorch's default."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, "collate_fn", None)
