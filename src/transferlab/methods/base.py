"""What every method is, receives and returns, and the registry that maps ``--method`` names to methods.

A method is one `MethodSpec`: its name, a one-line summary, its settings model (a `transferlab.config.FitConfig`
subclass holding only the settings it takes), its ``prepare`` step (settings -> data splits), its ``train`` step
(settings, splits, run context -> a trained `transferlab.models.Predictor`) and the recipe defaults it sets. The
command line's ``--method`` choices and flags, the docs' method list and the refusal of settings that do not apply
all come from this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from transferlab.config import FitConfig, flag_name, format_validation_error
from transferlab.data import Examples
from transferlab.data.torch_dataset import DATA_MODALITY
from transferlab.engine.loop import TrainSettings
from transferlab.errors import TransferlabError, suggest
from transferlab.models import Predictor

__all__ = ["METHODS", "MethodResult", "MethodSpec", "RunContext", "Splits", "build_config", "get_method",
           "register_method", "setting_owners", "train_settings"]


@dataclass
class Splits:
    """Labeled training data, validation data (labeled, may be ``None``), an optional test set, labeled
    source-domain data for ``joint``, and target-domain data for adaptation methods (which train on the source
    data in ``train``; target labels, if any, are for reporting only)."""

    train: Examples
    val: Examples | None
    test: Examples | None = None
    source: Examples | None = None
    target: Examples | None = None
    label_use: dict = field(default_factory=dict)  # how many labels went to training and to model selection

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def num_train(self) -> int:
        return len(self.train)

    @property
    def modality(self) -> str:
        return DATA_MODALITY.get(type(self.train), "image")

    def describe(self) -> str:
        return self.train.describe()


@dataclass
class RunContext:
    """Where and how a method runs: resolved device and precision, run directory, decoding workers."""

    run_dir: Path
    device: torch.device
    precision: str
    num_workers: int | None
    progress: bool = True
    trackers: tuple = ()  # experiment trackers (`transferlab.engine.tracking`) the training loop reports to


@dataclass
class MethodResult:
    model: Predictor
    history: list[dict]
    metrics: dict = field(default_factory=dict)  # method-specific results for metrics.json (e.g. model selection)
    notes: list[str] = field(default_factory=list)  # lines for the user after training (e.g. the checkpoint choice)


@dataclass(frozen=True)
class MethodSpec:
    """One ``--method``: see the module docstring. ``recipe`` holds defaults of shared settings the method changes
    (a user's own value still wins)."""

    name: str
    summary: str
    settings: type[FitConfig]
    prepare: Callable[[Any], Any]
    train: Callable[[Any, Any, RunContext], MethodResult]
    recipe: dict = field(default_factory=dict)


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Make ``spec`` available as ``--method spec.name``."""
    if spec.name in METHODS:
        raise ValueError(f"method '{spec.name}' is registered twice")
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    if not isinstance(name, str) or name not in METHODS:  # a YAML file may give a list, a number or nothing
        hint = suggest(name, METHODS) if isinstance(name, str) else ""
        raise TransferlabError(f"unknown method '{name}'{hint}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def setting_owners() -> dict[str, list[str]]:
    """Setting name (and alias) -> the methods whose settings take it."""
    owners: dict[str, list[str]] = {}
    for spec in METHODS.values():
        for name, info in spec.settings.model_fields.items():
            for key in {name, info.alias or name}:
                owners.setdefault(key, []).append(spec.name)
    return owners


def build_config(file_values: dict | None = None, overrides: dict | None = None, source: str = "config", *,
                 saved: dict | None = None) -> FitConfig:
    """Merge the method's recipe < ``saved`` < config-file values < command-line overrides and validate them with
    the method's settings model. ``overrides`` holds only the flags the user actually gave (``None`` values are
    ignored); ``saved`` holds the settings an earlier run recorded (a resumed run, a report reading a run directory).

    Raises:
        TransferlabError: an unknown method, a setting the method does not take (naming the methods that take it),
            a setting given in ``file_values`` or ``overrides`` that the method would ignore with the others
            (`FitConfig.ignored_settings`), or an invalid value; one message for every problem, naming ``source``.
    """
    config, _ = _validated({**(saved or {}), **(file_values or {})}, overrides, source)
    given = {key: value for key, value in {**(file_values or {}), **(overrides or {})}.items() if value is not None}
    ignored = {key: why for key, why in config.ignored_settings().items() if key in given}
    if ignored:
        flags = ", ".join(flag_name(key) for key in ignored)
        raise TransferlabError(f"{flags} would be ignored by {config.method} here: {next(iter(ignored.values()))} "
                               f"(in {source}); drop {'them' if len(ignored) > 1 else 'it'}")
    return config


def ignored_given_settings(values: dict, source: str = "config") -> dict[str, str]:
    """The settings among ``values`` (a method's settings, as `build_config` takes them) that the method would
    ignore with the others, each with why; a compare leaves them out of that method's cells."""
    config, given = _validated(None, values, source)
    return {key: why for key, why in config.ignored_settings().items() if key in given}


def _validated(file_values: dict | None, overrides: dict | None, source: str) -> tuple[FitConfig, dict]:
    """The method's settings model over recipe < file values < overrides, and the values given (not the recipe)."""
    values = dict(file_values or {})
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    spec = get_method(values.get("method", FitConfig.model_fields["method"].default))
    merged = {**{k: v for k, v in spec.recipe.items() if k not in values}, **values, "method": spec.name}
    try:
        return spec.settings(**merged), {key: value for key, value in values.items() if value is not None}
    except ValidationError as exc:
        message = format_validation_error(exc, spec.settings, source, spec.name, setting_owners())
        raise TransferlabError(message) from None


def train_settings(config, context: RunContext) -> TrainSettings:
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
        trackers=context.trackers,
        sync_batchnorm=getattr(config, "sync_bn", False),
        ema_decay=getattr(config, "ema", None),
    )
