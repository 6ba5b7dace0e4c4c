"""Experiment tracking: TensorBoard scalars and MLflow runs, written while a run trains. Neither is needed to train.

- ``--tensorboard``: every number of each epoch's history row (losses and their parts, validation metrics, learning
  rate, per-task weights of multi-task runs) as scalars under ``RUN/tensorboard`` (``tensorboard --logdir RUN``),
  and the final metrics.
- ``--mlflow URI`` (e.g. ``sqlite:///mlflow.db``, MLflow's current default backend, or a tracking server): the
  run's settings as parameters, the same per-epoch numbers as metrics, the final metrics, and the finished run
  directory as artifacts. A new experiment on a ``sqlite:///PATH`` store keeps its artifacts beside ``PATH``.

Trainers call `Tracker.log_epoch` after every epoch; methods that do not train epoch by epoch (a logistic head
fitted by cross-validation) have their history logged when the run finishes.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Protocol

from transferlab.errors import TransferlabError

__all__ = ["MlflowTracker", "TensorBoardTracker", "Tracker", "numbers_of"]

log = logging.getLogger("transferlab")


class Tracker(Protocol):
    def log_epoch(self, step: int, row: dict) -> None: ...

    def finish(self, history: list[dict], metrics: dict, run_dir: Path) -> None: ...

    def fail(self) -> None: ...


def numbers_of(values: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers in a nested dict, keyed ``a/b/c`` (lists and strings left out)."""
    found: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found.update(numbers_of(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found[name] = float(value)
    return found


class _EpochLogging:
    """The per-epoch bookkeeping both trackers share: what was logged live, what remains at the end."""

    logged_steps: set[int]

    def _history_rows(self, history: list[dict]):
        for step, row in enumerate(history, start=1):
            step = int(row.get("epoch", step))
            if step not in self.logged_steps:
                yield step, row


class TensorBoardTracker(_EpochLogging):
    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TransferlabError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.logged_steps = set()

    def log_epoch(self, step: int, row: dict) -> None:
        for name, value in numbers_of({k: v for k, v in row.items() if k != "epoch"}).items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()
        self.logged_steps.add(step)

    def finish(self, history: list[dict], metrics: dict, run_dir: Path) -> None:
        for step, row in self._history_rows(history):
            self.log_epoch(step, row)
        for name, value in numbers_of(metrics).items():
            self.writer.add_scalar(f"final/{name}", value, max(self.logged_steps, default=0))
        self.writer.close()

    def fail(self) -> None:
        self.writer.close()


class MlflowTracker(_EpochLogging):
    def __init__(self, uri: str, experiment: str, run_name: str, params: dict):
        try:
            import mlflow
        except ImportError:
            raise TransferlabError("--mlflow needs the mlflow package: pip install mlflow") from None
        self.mlflow = mlflow
        self.logged_steps = set()
        try:
            mlflow.set_tracking_uri(uri)
            if mlflow.get_experiment_by_name(experiment) is None:
                mlflow.create_experiment(experiment, artifact_location=_artifact_location(uri))
            mlflow.set_experiment(experiment)
            self.run = mlflow.start_run(run_name=run_name)
        except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; the user needs the URI and the reason
            raise TransferlabError(f"cannot log to MLflow at {uri!r}: {type(exc).__name__}: {exc}") from None
        mlflow.log_params({key: str(value)[:500] for key, value in params.items() if value is not None})

    def log_epoch(self, step: int, row: dict) -> None:
        values = numbers_of({k: v for k, v in row.items() if k != "epoch"})
        self.mlflow.log_metrics({_metric_name(k): v for k, v in values.items()}, step=step)
        self.logged_steps.add(step)

    def finish(self, history: list[dict], metrics: dict, run_dir: Path) -> None:
        for step, row in self._history_rows(history):
            self.log_epoch(step, row)
        self.mlflow.log_metrics({_metric_name(f"final/{k}"): v for k, v in numbers_of(metrics).items()})
        self.mlflow.log_artifacts(str(run_dir), artifact_path="run")
        self.mlflow.end_run()

    def fail(self) -> None:
        self.mlflow.end_run(status="FAILED")


def _metric_name(name: str) -> str:
    """MLflow metric names allow letters, digits and ``_ - . / space``; anything else becomes ``_``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def _artifact_location(uri: str) -> str | None:
    """Beside the database for a ``sqlite:///PATH`` store (MLflow's default would be the working directory)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None
