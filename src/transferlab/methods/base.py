"""What every method receives and returns, and the registry that maps method names to them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from transferlab.config import FitConfig
from transferlab.engine.loop import TrainSettings
from transferlab.data.image_data import ImageData
from transferlab.errors import TransferlabError, suggest
from transferlab.model import TransferModel

__all__ = ["Splits", "RunContext", "MethodResult", "register_method", "get_method", "train_settings", "METHODS"]


@dataclass
class Splits:
    """Labeled training data, validation data (labeled, may be ``None``), an optional test set, labeled
    source-domain data for ``joint``, and target-domain data for adaptation methods (which train on the source
    data in ``train``; target labels, if any, are for reporting only)."""

    train: ImageData
    val: ImageData | None
    test: ImageData | None = None
    source: ImageData | None = None
    target: ImageData | None = None

    @property
    def classes(self) -> list[str]:
        return self.train.classes


@dataclass
class RunContext:
    """Where and how a method runs: resolved device and precision, run directory, decoding workers."""

    run_dir: Path
    device: torch.device
    precision: str
    num_workers: int | None
    progress: bool = True


@dataclass
class MethodResult:
    model: TransferModel
    history: list[dict]
    metrics: dict = field(default_factory=dict)  # method-specific results for metrics.json (e.g. model selection)


MethodFn = Callable[[FitConfig, Splits, RunContext], MethodResult]
METHODS: dict[str, MethodFn] = {}


def register_method(*names: str):
    """Decorator: make a method function available under ``names`` (``--method NAME``)."""

    def decorator(function: MethodFn) -> MethodFn:
        for name in names:
            METHODS[name] = function
        return function

    return decorator


def get_method(name: str) -> MethodFn:
    if name not in METHODS:
        raise TransferlabError(f"unknown method '{name}'{suggest(name, METHODS)}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def train_settings(config: FitConfig, context: RunContext) -> TrainSettings:
    return TrainSettings(
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        patience=config.patience,
        precision=context.precision,
        device=context.device,
        num_workers=context.num_workers or 0,
        run_dir=context.run_dir,
        progress=context.progress,
    )
