"""Training orders for datasets whose batches are padded to their longest item (text).

A random batch of sentences pads every sentence to the longest one drawn: on SST-2 (phrases of 1 to 50+ tokens)
most of a random batch is padding. Drawing batches of similar lengths (Hugging Face's ``group_by_length``:
random mega-batches of 50 batches, each sorted by length) keeps the order random at the scale of the epoch and
cuts the padding, so every step costs what its texts need.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler, Subset

__all__ = ["LengthGroupedSampler", "lengths_of"]


def lengths_of(dataset: Dataset) -> list[int] | None:
    """Each item's length (tokens) when ``dataset`` (or the dataset a `Subset` reads) knows it without loading the
    items; ``None`` for datasets whose items all have one size (images) or whose lengths are unknown (audio)."""
    if isinstance(dataset, Subset):
        lengths = lengths_of(dataset.dataset)
        return None if lengths is None else [lengths[i] for i in dataset.indices]
    return getattr(dataset, "lengths", None)


class LengthGroupedSampler(Sampler[int]):
    """A seeded permutation in which each run of ``batch_size x replicas`` consecutive positions holds items of
    similar length (`transformers.trainer_pt_utils.get_length_grouped_indices`), sharded like
    `torch.utils.data.DistributedSampler`: process ``rank`` of ``replicas`` reads positions ``rank, rank + replicas,
    ...`` (padded by repeating the first positions so every process reads as many), so the batches of all processes
    at one step together form one run of the permutation, as one process with ``batch_size x replicas`` reads it.

    The order depends only on ``(seed, epoch)``: a resumed run sees the same batches.
    """

    def __init__(self, lengths: list[int], batch_size: int, *, seed: int, epoch: int, replicas: int = 1,
                 rank: int = 0):
        self.lengths, self.batch_size = lengths, batch_size
        self.seed, self.epoch, self.replicas, self.rank = seed, epoch, replicas, rank
        self.per_process = -(-len(lengths) // replicas)

    def __len__(self) -> int:
        return self.per_process

    def __iter__(self):
        # imported here: transformers is slow to import
        from transformers.trainer_pt_utils import get_length_grouped_indices

        if not self.lengths:
            return iter([])
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = get_length_grouped_indices(self.lengths, self.batch_size * self.replicas, generator=generator)
        needed = self.per_process * self.replicas
        order = (order * -(-needed // len(order)))[:needed]
        return iter(order[self.rank :: self.replicas])
