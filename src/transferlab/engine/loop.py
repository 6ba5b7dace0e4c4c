"""The one training loop. It knows objectives, not methods: every method hands it a model, an objective and
an optimizer, and gets back the per-epoch history. Readable top to bottom (`Trainer.fit`)."""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import Dataset

from transferlab.engine.batches import batch_length, to_device
from transferlab.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from transferlab.engine.distributed import (
    average_gradients,
    data_parallel,
    is_main_process,
    make_loader,
    per_process,
    share_from_main,
    sum_over_processes,
    world_size,
)
from transferlab.engine.inference import predict_logits
from transferlab.engine.optim import place_schedule
from transferlab.engine.precision import autocast
from transferlab.engine.progress import progress_bar
from transferlab.fileio import atomic_path
from transferlab.rundir import CHECKPOINT, HISTORY

__all__ = ["TrainSettings", "Trainer"]

log = logging.getLogger("transferlab")

BEST_WEIGHTS = "best.safetensors"


@dataclass
class TrainSettings:
    """What the loop needs beyond the model: budget, batch size, early stopping, precision and output place."""

    epochs: int
    batch_size: int
    seed: int = 0
    patience: int | None = None
    precision: str = "fp32"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    num_workers: int = 0
    run_dir: Path | None = None
    progress: bool = True
    trackers: tuple = ()  # `transferlab.engine.tracking.Tracker`s told every epoch's row (main process)
    sync_batchnorm: bool = False  # under torchrun (GPUs): SyncBatchNorm over the batches of every process
    ema_decay: float | None = None  # validate, keep and save an exponential moving average of the weights


def _batch_size(batch) -> int:
    """Examples in a batch: ``(inputs, labels)``, ``(inputs, {task: targets})`` or, for several domains or task
    groups, a list of such pairs."""
    if isinstance(batch[0], (list, tuple)):
        return sum(_batch_size(part) for part in batch)
    return batch_length(batch[0])


def _epoch_loader(train_data, settings: TrainSettings, epoch: int):
    """Batches of one epoch: a dataset goes through `make_loader`; an object with ``epoch_loader`` (e.g. two
    domains drawn together, `transferlab.engine.domains.DomainPairLoader`) makes its own."""
    if hasattr(train_data, "epoch_loader"):
        return train_data.epoch_loader(epoch=epoch, seed=settings.seed, num_workers=settings.num_workers)
    # a last batch of a single example would break batch normalisation (e.g. a bottleneck head): drop it
    share = per_process(len(train_data))
    single_last = share % settings.batch_size == 1 and share > 1
    return make_loader(train_data, batch_size=settings.batch_size, shuffle=True, seed=settings.seed, epoch=epoch,
                       num_workers=settings.num_workers, drop_last=single_last)


def _averaged_over_processes(totals: dict[str, float], count: int) -> dict[str, float]:
    """``totals`` (sums over examples) divided by the examples of every process."""
    names = sorted(totals)
    *sums, count = sum_over_processes([totals[name] for name in names] + [count])
    totals = dict(zip(names, sums, strict=True))
    return {name: total / max(count, 1) for name, total in totals.items()}


class Trainer:
    """Trains ``model`` by minimising ``objective(model, batch)["loss"]``.

    Args:
        model: the module to train (moved to ``settings.device``).
        objective: callable ``(model, batch) -> {"loss": scalar, "parts": {name: scalar}}``; it may add
            ``"backward"``, a callable that fills the gradients itself (e.g. aggregating per-task gradients),
            called instead of ``loss.backward()``, and ``"examples"``, how many examples the batch held, for
            batches the loop cannot count (e.g. detection's lists of images of different sizes). An objective that is an ``nn.Module`` with state (learned loss
            weights, loss history) is checkpointed with the model.
        optimizer: built over the parameters that may ever train.
        scheduler: stepped once per batch (built for ``epochs * steps_per_epoch`` steps), or ``None``; one from
            `transferlab.engine.optim.build_scheduler` resumes at the right step whatever the number of processes.
        settings: `TrainSettings`.
        epoch_hooks: called as ``hook(model, epoch)`` at the start of every epoch (e.g. gradual unfreezing);
            they must derive their state from ``epoch`` alone so that resuming restores it.

    With ``settings.ema_decay``, torch's `AveragedModel` keeps an exponential moving average of the weights and
    buffers (BatchNorm statistics too), updated after every optimizer step: ``w_ema <- d w_ema + (1 - d) w``. The
    average is what is validated, kept as the best weights and left in ``model`` at the end; it is checkpointed,
    so ``--resume`` continues it.

    Under torchrun (`transferlab.engine.distributed`) every process runs this loop on its share of the batches:
    the step runs inside `DistributedDataParallel` (gradients averaged during ``backward``; objectives with
    ``computes_own_gradients`` get their gradients averaged after their own ``backward``), the logged losses are
    averaged over all examples of all processes, and validation is scored once, by rank 0, and sent to the others,
    so the best epoch and early stopping are decided identically everywhere.
    """

    def __init__(self, model, objective, optimizer, scheduler, settings: TrainSettings, epoch_hooks: list[Callable] = ()):
        # convolution weights in channels-last memory format (and image batches to match): faster training steps on
        # CPUs for CNNs (bench/train_step_memory_format.py: LeNet 1.37x, audio-cnn 1.59x); other layers are unaffected
        self.channels_last = any(p.dim() == 4 for p in model.parameters())
        if settings.sync_batchnorm and world_size() > 1:  # the same parameters, in SyncBatchNorm layers
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(settings.device, memory_format=memory_format)
        self.ema = (None if settings.ema_decay is None else
                    AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True))
        self.objective = objective
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.settings = settings
        self.epoch_hooks = list(epoch_hooks)
        self.history: list[dict] = []
        self.best_score = -math.inf
        self.best_epoch = -1
        self._seconds_before = 0.0  # training time of the processes that trained before a --resume
        self._fit_started = time.perf_counter()

    # -- the loop ---------------------------------------------------------------------------------------------
    def fit(self, train_data, val_data: Dataset | None, resume: bool = False) -> list[dict]:
        """Train for ``settings.epochs`` epochs (or until early stopping); keep the best weights by validation
        accuracy (by training loss when there is no validation data). Returns the per-epoch history.

        ``train_data`` is a dataset of ``(inputs, label)`` or an object with an ``epoch_loader`` method.
        ``val_data`` is a dataset of ``(inputs, label)`` (scored by accuracy) or an object whose
        ``evaluate(model, settings)`` returns the ``val_*`` metrics, ``val_score`` among them (higher is better).
        """
        s = self.settings
        self._fit_started = time.perf_counter()
        start_epoch = self._resume() if resume else 0
        val_loader = None
        if val_data is not None and not hasattr(val_data, "evaluate"):
            val_loader = make_loader(val_data, batch_size=s.batch_size * 2, shuffle=False, num_workers=s.num_workers)
        for epoch in range(start_epoch, s.epochs):
            if self._should_stop(epoch):
                break
            for hook in self.epoch_hooks:
                hook(self.model, epoch)
            started = time.perf_counter()
            loader = _epoch_loader(train_data, s, epoch)
            train_parts = self._train_one_epoch(loader, epoch)
            row = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train_parts.items()}}
            row.update(share_from_main(self._validation_row(val_data, val_loader) if is_main_process() else None))
            row["lr"] = max(group["lr"] for group in self.optimizer.param_groups)
            row["seconds"] = round(time.perf_counter() - started, 3)
            self._end_epoch(epoch, row)
        self._restore_best()
        return self.history

    def _train_one_epoch(self, loader, epoch: int) -> dict[str, float]:
        s = self.settings
        self.model.train()
        step, averaged_by_step = self._step()
        totals: dict[str, float] = {}
        count = 0
        bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{s.epochs}", enabled=s.progress)
        for batch in bar:
            batch = to_device(batch, s.device, channels_last=self.channels_last)
            with autocast(s.precision, s.device):
                out = step(batch)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} in epoch {epoch + 1}; lower --lr")
            self.optimizer.zero_grad(set_to_none=True)
            out.get("backward", loss.backward)()
            if not averaged_by_step:
                average_gradients(self.model.parameters())
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            size = out["examples"] if "examples" in out else _batch_size(batch)
            count += size
            for name, value in {"loss": loss, **out["parts"]}.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) * size
            bar.set_postfix(loss=f"{totals['loss'] / count:.4f}")
        return _averaged_over_processes(totals, count)

    def _step(self) -> tuple[Callable, bool]:
        """The training step ``batch -> objective output``, and whether it averages the gradients over processes
        itself (one process: nothing to average; torchrun: `DistributedDataParallel`, built per epoch since the
        trainable parameters may have changed)."""
        if world_size() > 1 and not getattr(self.objective, "computes_own_gradients", False):
            return data_parallel(self.model, self.objective), True
        return (lambda batch: self.objective(self.model, batch)), world_size() == 1

    @property
    def kept_model(self) -> nn.Module:
        """What is validated and kept: the weights' moving average with ``ema_decay``, else the model itself."""
        return self.model if self.ema is None else self.ema.module

    def _validation_row(self, val_data, val_loader) -> dict[str, float]:
        if val_loader is not None:
            return self._validate(val_loader)
        return val_data.evaluate(self.kept_model, self.settings) if val_data is not None else {}

    def _validate(self, loader) -> dict[str, float]:
        logits, labels = predict_logits(self.kept_model, loader, self.settings.precision, self.settings.device)
        loss = torch.nn.functional.cross_entropy(logits, labels).item()
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        return {"val_loss": loss, "val_accuracy": accuracy}

    # -- bookkeeping: best weights, early stopping, history, checkpoints ------------------------------------------
    def _score(self, row: dict) -> float:
        for key in ("val_score", "val_accuracy"):
            if key in row:
                return row[key]
        return -row["train_loss"]

    def _should_stop(self, epoch: int) -> bool:
        patience = self.settings.patience
        return patience is not None and self.best_epoch >= 0 and epoch - self.best_epoch > patience

    def _end_epoch(self, epoch: int, row: dict) -> None:
        run_dir = self.settings.run_dir
        score = self._score(row)
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_epoch = score, epoch
        self.history.append(row)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        if is_main_process():
            for tracker in self.settings.trackers:
                tracker.log_epoch(epoch + 1, row)
        if run_dir is None or not is_main_process():
            if improved:
                self._best_state = {k: v.detach().clone() for k, v in self.kept_model.state_dict().items()}
            return
        if improved:
            with atomic_path(run_dir / BEST_WEIGHTS) as tmp:
                save_file({k: v.detach().contiguous() for k, v in self.kept_model.state_dict().items()}, str(tmp))
        self._write_history(run_dir / HISTORY)
        save_checkpoint(
            run_dir / CHECKPOINT,
            {
                "epoch": epoch,
                "model": self.model.state_dict(),
                "ema": None if self.ema is None else self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "history": self.history,
                "best_score": self.best_score,
                "best_epoch": self.best_epoch,
                "rng": capture_rng_state(),
                "objective": self.objective.state_dict() if isinstance(self.objective, nn.Module) else {},
                "train_seconds": self._seconds_before + time.perf_counter() - self._fit_started,
                "processes": world_size(),  # informative: a resume may use another number (see `_resume`)
                "schedule_progress": None if getattr(self.scheduler, "total_steps", None) is None else
                {"step": self.scheduler.last_epoch, "total_steps": self.scheduler.total_steps},
            },
        )

    def _write_history(self, path: Path) -> None:
        columns = list(dict.fromkeys(key for row in self.history for key in row))
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.history)

    def _resume(self) -> int:
        state = load_checkpoint(self.settings.run_dir / CHECKPOINT)
        self.model.load_state_dict(state["model"])
        if self.ema is not None:  # a resumed run keeps its settings (api._check_resume_settings): ema saved too
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        total_steps, saved = getattr(self.scheduler, "total_steps", None), state.get("schedule_progress")
        if total_steps is not None and saved is not None:
            # the same point of training in this run's steps: the number of processes, and so the steps per epoch,
            # may have changed (the same number: the very step the run was at)
            place_schedule(self.scheduler, round(saved["step"] * total_steps / saved["total_steps"]))
        elif self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if isinstance(self.objective, nn.Module) and state.get("objective"):
            self.objective.load_state_dict(state["objective"])
        self.history = state["history"]
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        # checkpoints written before train_seconds was kept: the epochs' own times
        self._seconds_before = state.get("train_seconds", sum(row.get("seconds", 0.0) for row in self.history))
        restore_rng_state(state["rng"])
        log.info("resumed after epoch %d", state["epoch"] + 1)
        return state["epoch"] + 1

    def _restore_best(self) -> None:
        run_dir = self.settings.run_dir
        if run_dir is not None and is_main_process() and (run_dir / BEST_WEIGHTS).is_file():
            self.model.load_state_dict(load_file(str(run_dir / BEST_WEIGHTS)))
        elif getattr(self, "_best_state", None) is not None:
            self.model.load_state_dict(self._best_state)
