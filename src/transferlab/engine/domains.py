"""Batches drawn from two domains at once, in a fixed ratio, with an order that depends only on (seed, epoch)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from torch.utils.data import Dataset

from transferlab.engine.distributed import make_loader

__all__ = ["DomainPairLoader"]


def _cycle(dataset: Dataset, batch_size: int, seed: int, epoch: int, num_workers: int):
    """Endless shuffled batches of ``dataset``: each pass gets its own order, all derived from ``(seed, epoch)``."""
    for repeat in itertools.count():
        loader = make_loader(dataset, batch_size=batch_size, shuffle=True, seed=seed * 7919 + repeat,
                             epoch=epoch, num_workers=num_workers, drop_last=len(dataset) >= batch_size)
        yield from loader


@dataclass
class DomainPairLoader:
    """Each step yields ``[(source_inputs, source_labels), (target_inputs, target_labels)]``.

    Args:
        source, target: datasets of ``(inputs, label)``.
        batch_size: examples per step over both domains; ``source_share`` of them come from the source
            (at least one from each domain).
        steps_per_epoch: steps in an epoch; default: enough for one pass over the larger domain.
    """

    source: Dataset
    target: Dataset
    batch_size: int
    source_share: float = 0.5
    steps_per_epoch: int | None = None

    @property
    def source_batch(self) -> int:
        return min(self.batch_size - 1, max(1, round(self.batch_size * self.source_share)))

    @property
    def target_batch(self) -> int:
        return self.batch_size - self.source_batch

    def __len__(self) -> int:
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return max(math.ceil(len(self.source) / self.source_batch), math.ceil(len(self.target) / self.target_batch))

    def epoch_loader(self, *, epoch: int, seed: int, num_workers: int = 0):
        source = _cycle(self.source, self.source_batch, seed, epoch, num_workers)
        target = _cycle(self.target, self.target_batch, seed + 1, epoch, num_workers)
        return _Steps(source, target, len(self))


class _Steps:
    """``steps`` pairs of batches, drawn lazily; has a length for progress bars."""

    def __init__(self, source, target, steps: int):
        self.source, self.target, self.steps = source, target, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield [next(self.source), next(self.target)]
