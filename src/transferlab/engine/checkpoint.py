"""Training checkpoints: everything needed to continue a killed run exactly where its last epoch ended."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from transferlab.errors import TransferlabError
from transferlab.fileio import atomic_path

__all__ = ["capture_rng_state", "load_checkpoint", "restore_rng_state", "save_checkpoint", "saved_train_seconds"]


def _numpy_state_to_tensors(state: tuple) -> tuple:
    kind, keys, pos, has_gauss, cached = state
    return kind, torch.from_numpy(keys.copy()), int(pos), int(has_gauss), float(cached)


def capture_rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state_to_tensors(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` (model, optimizer, scheduler, epoch, history, RNG, ...) atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain Python values only: ``weights_only``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TransferlabError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # a truncated or foreign file
        raise TransferlabError(f"cannot read checkpoint {path}: {exc}") from None


def saved_train_seconds(path: Path) -> float:
    """The training time a checkpoint records (of every process that trained up to it; for checkpoints of older versions, the sum of its epochs' times).

    Memory-mapped: the weights it holds are not read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a truncated or foreign file
        raise TransferlabError(f"cannot read checkpoint {path}: {exc}") from None
    history = state.get("history", [])
    return float(state.get("train_seconds", sum(row.get("seconds", 0.0) for row in history)))
