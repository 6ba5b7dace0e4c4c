"""Batches drawn from several datasets at once (two domains, or the data of several tasks), in a fixed ratio, with an order that depends only on (seed, epoch)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from torch.utils.data import Dataset

from transferlab.engine.distributed import make_loader, per_process

__all__ = ["DomainPairLoader", "GroupBatches"]


def _cycle(dataset: Dataset, batch_size: int, seed: int, epoch: int, num_workers: int):
    """Endless shuffled batches of ``dataset``: each pass gets its own order, all derived from ``(seed, epoch)``."""
    for repeat in itertools.count():
        loader = make_loader(dataset, batch_size=batch_size, shuffle=True, seed=seed * 7919 + repeat,
                             epoch=epoch, num_workers=num_workers, drop_last=per_process(len(dataset)) >= batch_size)
        yield from loader


@dataclass
class GroupBatches:
    """Each step yields ``[batch_of_dataset_0, batch_of_dataset_1, ...]``, one batch from every dataset.

    Args:
        datasets: the datasets drawn together (e.g. the data of several tasks).
        batch_sizes: examples per step from each dataset.
        steps_per_epoch: steps in an epoch; default: enough for one pass over the dataset that needs most steps (over
            this process's share of it under torchrun).
    """

    datasets: list[Dataset]
    batch_sizes: list[int]
    steps_per_epoch: int | None = None

    def __len__(self) -> int:
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return max(math.ceil(per_process(len(data)) / size)
                   for data, size in zip(self.datasets, self.batch_sizes, strict=True))

    def epoch_loader(self, *, epoch: int, seed: int, num_workers: int = 0):
        streams = [_cycle(data, size, seed + offset, epoch, num_workers)
                   for offset, (data, size) in enumerate(zip(self.datasets, self.batch_sizes, strict=True))]
        return _Steps(streams, len(self))


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

    def _groups(self) -> GroupBatches:
        return GroupBatches([self.source, self.target], [self.source_batch, self.target_batch], self.steps_per_epoch)

    def __len__(self) -> int:
        return len(self._groups())

    def epoch_loader(self, *, epoch: int, seed: int, num_workers: int = 0):
        return self._groups().epoch_loader(epoch=epoch, seed=seed, num_workers=num_workers)


class _Steps:
    """``steps`` lists of batches, one from each stream, drawn lazily; has a length for progress bars."""

    def __init__(self, streams: list, steps: int):
        self.streams, self.steps = streams, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield [next(stream) for stream in self.streams]
