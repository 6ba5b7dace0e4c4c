"""Where torch.distributed plugs in: joining the process group, sharding data, gradient synchronisation and
rank-0-only writing, kept in one place.

``torchrun --nproc-per-node N -m transferlab fit ...`` starts N processes; `init_from_environment` joins them (gloo
on CPUs, NCCL on GPUs, one GPU per local rank), the training loop wraps its step in `DistributedDataParallel`
(`data_parallel`), training loaders shard the examples (each process reads ``batch_size`` of them per step: the global
batch is ``batch_size x processes``), and only rank 0 writes files and scores validation. Single-process runs go
through the same code with ``world_size() == 1``: the same sampler, the same order of examples.
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from transferlab.engine.sampling import LengthGroupedSampler, lengths_of
from transferlab.errors import TransferlabError

__all__ = ["average_gradients", "collate_fn_of", "data_parallel", "gather_in_order", "init_from_environment",
           "is_main_process", "local_rank", "make_loader", "per_process", "rank", "share_from_main", "steps_per_epoch",
           "sum_over_processes", "world_size"]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``; 0 outside torchrun): its GPU."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on the process that writes run files, logs and progress bars."""
    return rank() == 0


def init_from_environment() -> None:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1 in the environment), once per process.

    gloo on CPUs, NCCL when GPUs are present (each process on the GPU of its local rank); rendezvous through
    torchrun's ``MASTER_ADDR``/``MASTER_PORT`` (or ``--rdzv-*``) variables. Nothing happens outside torchrun.

    Raises:
        TransferlabError: torch was built without distributed support.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise TransferlabError("WORLD_SIZE > 1 (torchrun?) but this torch build has no torch.distributed")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    """Leave the group before the interpreter exits (gloo's threads otherwise abort the process at exit)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def share_from_main(value):
    """The main process's ``value`` on every process (a picklable object; ``value`` itself when not distributed)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_processes(values: list[float]) -> list[float]:
    """Each of ``values`` summed over the processes (float64; ``values`` itself when not distributed)."""
    if world_size() == 1:
        return list(values)
    summed = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(summed)
    return summed.tolist()


def per_process(count: int) -> int:
    """How many of ``count`` examples one process reads per epoch (a sharded loader pads the shards to equal size)."""
    return -(-count // world_size())


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Training steps of one pass over ``count`` examples in batches of ``batch_size`` per process."""
    return -(-per_process(count) // batch_size)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    shard: bool | None = None,
) -> DataLoader:
    """A DataLoader whose order depends only on ``(seed, epoch)``, so a resumed run sees the same batches; it
    batches with the dataset's own ``collate_fn`` when it has one (text and audio: dynamic padding). A shuffled
    dataset that knows its items' lengths (text) is read in length-grouped order (`LengthGroupedSampler`: random
    mega-batches of 50 batches, each sorted by length), so a batch pads little.

    ``shard`` (default: ``shuffle``, i.e. training loaders): under torchrun, each process reads its own share of one
    seeded permutation (`DistributedSampler`: rank ``r`` of ``W`` gets positions ``r, r + W, ...``, padded by
    repeating the first examples so every process takes the same number of steps). One process reads the same
    permutation whole, so ``W`` processes with ``batch_size`` ``b`` see, step by step, the examples one process sees
    with ``b x W``. Loaders for inference read everything unless told to shard (`gather_in_order` merges them).
    ``drop_last``: drop a last, incomplete batch of each process.
    """
    shard = shuffle if shard is None else shard
    replicas, index = (world_size(), rank()) if shard else (1, 0)
    lengths = lengths_of(dataset) if shuffle else None
    if lengths is not None:  # text: batches of similar lengths, less padding
        sampler = LengthGroupedSampler(lengths, batch_size, seed=seed, epoch=epoch, replicas=replicas, rank=index)
    else:
        sampler = DistributedSampler(dataset, num_replicas=replicas, rank=index, shuffle=shuffle, seed=seed)
        sampler.set_epoch(epoch)
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


def gather_in_order(local: torch.Tensor, total: int) -> torch.Tensor:
    """Rows computed by every process from a sharded, unshuffled `make_loader` (``shard=True``), back in dataset
    order: ``(total, ...)`` on every process (``local`` itself when not distributed)."""
    if world_size() == 1:
        return local
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, local.cpu())
    return torch.stack(parts, 1).flatten(0, 1)[:total]  # row k of rank r is example k * W + r


class ObjectiveStep(nn.Module):
    """``objective(model, batch)`` as a module's forward, so `DistributedDataParallel` sees every parameter the
    objective uses (a method's objective calls the model's parts, not only its forward). The objective's own
    parameters (learned loss weights) are synchronised too."""

    def __init__(self, model: nn.Module, objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch):
        return self.objective(self.model, batch)


def data_parallel(model: nn.Module, objective) -> nn.Module:
    """``objective(model, batch)`` wrapped in `DistributedDataParallel`: gradients are averaged over the processes
    during ``backward`` (gloo or NCCL buckets). Built again whenever the set of trainable parameters changes (DDP
    registers the ones that require gradients when it is built; gradual unfreezing changes them). Parameters a step
    does not use (a domain discriminator between its updates, a task without examples in the batch) are allowed."""
    device = next(model.parameters()).device
    return DistributedDataParallel(ObjectiveStep(model, objective),
                                   device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def average_gradients(parameters) -> None:
    """Average ``.grad`` over the processes, in place: for objectives that compute their gradients themselves
    (Jacobian descent aggregates per-task gradients), where DDP's hooks cannot run. A parameter without a gradient
    on some process counts as a zero gradient there."""
    if world_size() == 1:
        return
    for param in parameters:
        if not param.requires_grad:
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad)
        param.grad /= world_size()


def collate_fn_of(dataset: Dataset):
    """The ``collate_fn`` a dataset (or a `Subset` of one) asks for, or ``None`` for PyTorch's default."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, "collate_fn", None)
