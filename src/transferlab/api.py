"""What the command line and Python users call: `fit`, `load`, `evaluate`, `predict`.

Nothing here knows which method trained a model or which kind of model it is: methods answer through their
`transferlab.methods.MethodSpec`, trained models through the `transferlab.models.Predictor` contract.
"""

from __future__ import annotations

import csv
import logging
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from transferlab.backbones.registry import DEFAULT_BACKBONES
from transferlab.config import FitConfig, flag_name, load_config_file
from transferlab.data.specs import examples_from_paths, load_data, manifest_columns, read_manifest_columns
from transferlab.data.text_tables import TextColumns
from transferlab.engine.checkpoint import saved_train_seconds
from transferlab.engine.distributed import init_from_environment, is_main_process, share_from_main, world_size
from transferlab.engine.precision import default_device, resolve_precision
from transferlab.engine.tracking import MlflowTracker, TensorBoardTracker
from transferlab.errors import TransferlabError
from transferlab.export import EXPORT_FORMATS, ExportResult, export_onnx, open_engine
from transferlab.fileio import read_json, write_json
from transferlab.methods import RunContext, build_config, get_method, ignored_given_settings
from transferlab.models import DataOptions, Predictor, load_predictor
from transferlab.rundir import (
    CHECKPOINT,
    CONFIG,
    HISTORY,
    METRICS,
    RunDir,
    claim_run_dir,
    require_resumable,
)
from transferlab.unsupervised.embedding_set import is_embedding_dir
from transferlab.unsupervised.evaluation import evaluate_embeddings, retrieval_lines

__all__ = ["Evaluation", "FitResult", "build_config", "check_prediction_request", "evaluate", "evaluate_path", "export",
           "fit", "ignored_given_settings", "load", "predict",
           "prepare_splits", "resolve_config", "seed_everything"]

log = logging.getLogger("transferlab")

# settings a resumed run may change: where it is, how it is resumed, and how fast data is decoded
_RESUME_MAY_CHANGE = {"out", "resume", "overwrite", "num_workers", "tensorboard", "mlflow", "mlflow_experiment"}


@dataclass
class FitResult:
    run_dir: Path
    model: Predictor
    metrics: dict
    history: list[dict]
    notes: list[str] = field(default_factory=list)  # what the method tells the user (e.g. its checkpoint choice)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_config(values: dict | None = None, *, config_file: Path | None = None, source: str = "settings"
                   ) -> FitConfig:
    """The settings of a run from a YAML file and explicit values (which win), validated by the method's model.

    With ``resume`` and an ``out`` that holds a started run, the run's saved settings come first: resuming needs
    nothing but ``{"out": RUN, "resume": True}``, from Python as from the command line.
    """
    values = {key: value for key, value in (values or {}).items() if value is not None}
    file_values = load_config_file(config_file) if config_file is not None else {}
    source = str(config_file) if config_file is not None else source
    out = values.get("out", file_values.get("out"))
    saved = None
    if values.get("resume", file_values.get("resume")) and out is not None:
        require_resumable(Path(out))  # before validating settings: a missing run is the real problem
        saved_path = Path(out) / CONFIG
        if saved_path.is_file():
            saved = {key: value for key, value in _saved_settings(saved_path).items()
                     if key not in ("resume", "overwrite")}
            saved = _applicable(saved, {**saved, **file_values, **values})
            source = f"{saved_path}" + (f" and {config_file}" if config_file is not None else "")
    return build_config(file_values, values, source=source, saved=saved)


# settings added after run directories already existed, with the value that keeps an older run's behaviour when it
# resumes (its config.json lacks them): adaptation runs logged every label-free scorer each epoch
SETTINGS_OF_OLDER_RUNS = {"selection_all_scorers": True}


def _saved_settings(path: Path) -> dict:
    """A run's ``config.json``: its settings, an object; settings it predates (`SETTINGS_OF_OLDER_RUNS`) as they
    were then."""
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise TransferlabError(f"{path} must hold an object of settings, got {type(saved).__name__}; it was not "
                               "written by transferlab, or was edited")
    return {**SETTINGS_OF_OLDER_RUNS, **saved}


def _applicable(saved: dict, merged: dict) -> dict:
    """The saved settings the run's method takes (run directories of older versions saved every setting)."""
    fields = get_method(merged.get("method", FitConfig.model_fields["method"].default)).settings.model_fields
    names = {*fields, *(info.alias for info in fields.values() if info.alias)}
    return {key: value for key, value in saved.items() if key in names}


def prepare_splits(config: FitConfig):
    """The data of a run as its method prepares it (train/val/test, source, target, task groups...)."""
    return get_method(config.method).prepare(config)


def fit(config: FitConfig | dict, *, splits=None, progress: bool = True) -> FitResult:
    """Train a model as ``config`` says and write its run directory.

    The run directory belongs to this process until the run ends (`transferlab.rundir.claim_run_dir`): what is
    there is checked before any data loads, ``overwrite`` replaces the old run only once the new one has finished,
    and ``resume`` of a finished run trains nothing and returns its saved result.

    Args:
        config: a method's settings (see `build_config`), or a dict of them (`resolve_config` reads it, so
            ``{"out": RUN, "resume": True}`` continues a run).
        splits: ready data in the form the method's ``prepare`` step makes (skips loading); for Python users and
            the demo.
        progress: show progress bars.
    """
    init_from_environment()
    if isinstance(config, dict):
        config = resolve_config(config)
    _check_processes(config)
    method = get_method(config.method)
    main = is_main_process()
    with _claim_run_dir(config) as run:
        if config.resume:
            _check_resume_settings(run.path, config)
            if run.finished:
                return _finished_run(run.path)
        seed_everything(config.seed)
        splits = splits or method.prepare(config)
        if config.backbone is None:
            config = config.model_copy(update={"backbone": default_backbone(splits.modality)})
        run.start()
        if not config.resume and main:
            write_json(run.work / CONFIG, config.model_dump(mode="json", by_alias=True))
        train_config, seconds_before = config, 0.0
        if config.resume and run.has_checkpoint:
            seconds_before = saved_train_seconds(run.work / CHECKPOINT)
        elif config.resume:
            log.info("%s has no checkpoint (its run stopped in its first epoch): training it again from the start "
                     "with its saved settings", run.path)
            train_config = config.model_copy(update={"resume": False})
        device = default_device()
        trackers = _trackers(config, run) if main else ()
        context = RunContext(run.work, device, resolve_precision(config.precision, device), config.num_workers,
                             progress, trackers)
        log.info("training %s with %s on %s", config.method, config.backbone, splits.describe())
        try:
            started = time.perf_counter()
            result = method.train(train_config, splits, context)
            train_seconds = seconds_before + time.perf_counter() - started
            model = result.model.cpu().eval()
            # scored once, by rank 0 (torchrun): every process returns the same metrics
            metrics = share_from_main(_final_metrics(config, splits, model, context, train_seconds) if main else None)
            metrics.update(result.metrics)
            if main:
                model.save(run.work)
                write_json(run.work / METRICS, metrics)  # last: a run directory with metrics.json is finished
            run.commit()
        except BaseException:
            for tracker in trackers:
                tracker.fail()
            raise
        for tracker in trackers:
            tracker.finish(result.history, metrics, run.path)
    notes = [*_label_notes(metrics.get("labels", {})), *result.notes]
    return FitResult(run_dir=run.path, model=model, metrics=metrics, history=result.history, notes=notes)


def _trackers(config: FitConfig, run: RunDir) -> tuple:
    """The experiment trackers a run's settings ask for (`transferlab.engine.tracking`)."""
    trackers = []
    if config.tensorboard:
        trackers.append(TensorBoardTracker(run.work / "tensorboard"))
    if config.mlflow:
        params = {key: value for key, value in config.model_dump(mode="json", by_alias=True).items()
                  if key not in ("mlflow", "tensorboard", "overwrite", "resume")}
        trackers.append(MlflowTracker(config.mlflow, config.mlflow_experiment, Path(config.out).name, params))
    return tuple(trackers)


def _claim_run_dir(config: FitConfig) -> RunDir:
    """The run directory, claimed by the main process (`claim_run_dir`); the other processes of a distributed run
    follow its decision (where the run writes, whether it has finished) and its refusal."""
    claimed, refusal = None, None
    if is_main_process():
        try:
            claimed = claim_run_dir(config.out, overwrite=config.overwrite, resume=config.resume)
        except TransferlabError as exc:
            refusal = exc
    decision = share_from_main((claimed.work, claimed.finished) if claimed else str(refusal) if refusal else None)
    if refusal is not None:
        raise refusal
    if isinstance(decision, str):
        raise TransferlabError(decision)
    work, finished = decision
    return claimed or RunDir(Path(config.out), work, resume=config.resume, main=False, finished=finished)


def _check_processes(config: FitConfig) -> None:
    """Refuse settings that need several processes, or GPUs, when the run has neither (one line)."""
    if getattr(config, "sync_bn", False):
        if world_size() == 1:
            raise TransferlabError("--sync-bn synchronises BatchNorm over the processes of a torchrun run, and this "
                                   "run has one process; drop it, or start with torchrun --nproc-per-node N")
        if not torch.cuda.is_available():
            raise TransferlabError("--sync-bn needs GPUs (torch's SyncBatchNorm runs on GPUs only); on CPUs each "
                                   "process keeps its own BatchNorm statistics: drop --sync-bn")


def _final_metrics(config: FitConfig, splits, model: Predictor, context: RunContext, train_seconds: float) -> dict:
    """What every run reports in ``metrics.json``: how it trained, and its validation and test metrics."""
    metrics = {
        "method": config.method,
        "backbone": config.backbone,
        "train_images": splits.num_train,
        "train_seconds": round(train_seconds, 3),
        "precision": context.precision,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "processes": world_size(),
    }
    for role, data in (("val", splits.val), ("test", splits.test)):
        if data:
            started = time.perf_counter()
            metrics[role] = model.evaluate(data, precision=context.precision, num_workers=config.num_workers)
            metrics[f"{role}_ms_per_example"] = round(1000 * (time.perf_counter() - started) / len(data), 3)
    if splits.label_use:
        metrics["labels"] = splits.label_use
    return metrics


def _finished_run(run_dir: Path) -> FitResult:
    """``--resume`` of a run that finished: nothing to train; its saved model, metrics and history."""
    history_path = run_dir / HISTORY
    history = []
    if history_path.is_file():
        with open(history_path, newline="", encoding="utf-8") as handle:
            history = [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(handle)]
    note = f"{run_dir} has finished already: nothing to resume (its saved result follows; --overwrite trains it anew)"
    log.info(note)
    return FitResult(run_dir=run_dir, model=load(run_dir), metrics=read_json(run_dir / METRICS), history=history,
                     notes=[note])


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _label_notes(label_use: dict) -> list[str]:
    """The line that says how many labels a run used for what."""
    if not label_use:
        return []
    budget = f" (budget: {label_use['budget_per_class']} per class)" if "budget_per_class" in label_use else ""
    selection = (f"{label_use['selection']} for model selection, {label_use['selection_by']}"
                 if label_use["selection_by"] != "none" else "no model selection")
    return [f"labels: {label_use['train']} for training; {selection}{budget}"]


def default_backbone(modality: str) -> str:
    """The offline pretrained backbone for a modality of training data (images, text or audio)."""
    name = DEFAULT_BACKBONES[modality]
    log.info("backbone: %s (the default for %s data; choose another with --backbone)", name, modality)
    return name


def _check_resume_settings(run_dir: Path, config: FitConfig) -> None:
    """A resumed run continues the saved settings; refuse ones that differ (they would silently mix two runs)."""
    saved_path = run_dir / CONFIG
    if not saved_path.is_file():
        return
    saved, given = _saved_settings(saved_path), config.model_dump(mode="json", by_alias=True)
    unused = config.ignored_settings()  # e.g. an older run's epochs of a logistic head: they never mattered
    changed = [key for key in given if key not in _RESUME_MAY_CHANGE and key not in unused and key in saved
               and saved[key] != given[key]
               and not (key == "backbone" and given[key] is None)]  # None: the default, which the saved one is
    if changed:
        details = ", ".join(f"{key} (saved {saved[key]!r}, given {given[key]!r})" for key in changed[:4])
        raise TransferlabError(
            f"--resume continues {run_dir} with its saved settings, but these differ: {details}; "
            "drop them, or start a new run"
        )


def load(run_dir: str | Path) -> Predictor:
    """The trained model of a run directory, whatever its kind (a torch ``nn.Module`` in eval mode, on the CPU)."""
    return load_predictor(run_dir)


def _model(run: str | Path | Predictor) -> Predictor:
    return run if isinstance(run, Predictor) else load(run)


def evaluate(run: str | Path | Predictor, data_spec: str, *, task: str | None = None, skip_bad_files: bool = False,
             columns: TextColumns | None = None) -> dict:
    """Metrics of a trained run (a run directory or a loaded model) on the labeled data at ``data_spec``.

    What the metrics are depends on the kind of model: accuracy, macro-F1 and confusion matrix for a classifier;
    ``{"tasks": {name: metrics}, "score"}`` for a multi-task model (every task whose labels the data holds, or
    ``task`` alone); ``{"n", "wer", "cer"}`` for a speech recogniser. ``columns`` names the text and label columns
    of text data.
    """
    model = _model(run)
    options = DataOptions(skip_bad_files=skip_bad_files, columns=columns or TextColumns(), task=task)
    return model.evaluate(model.load_eval_data(data_spec, options))


def predict(run: str | Path | Predictor, data, *, engine: str = "torch", **options) -> list[dict]:
    """One dict per example of ``data`` (`ImageData`, `TextData` or `AudioData`), in the form of the model's kind:
    ``{"label", "probabilities"}`` for a classifier, ``{"tasks": {name: prediction}}`` for a multi-task model,
    ``{"transcript"}`` for a speech recogniser, ``{"objects": [{"label", "score", "box"}, ...]}`` for a detector.

    ``engine``: ``torch`` (the model itself) or ``onnx`` (the run's exported ``model.onnx`` under onnxruntime, the
    same rows; ``run`` must then be the run directory). ``options`` are the keyword options of the kind's
    ``predict`` (`Predictor.prediction_options`, e.g. a detector's ``score_threshold``); ``None`` values are left
    out. Options the kind does not take are refused (`check_prediction_request`)."""
    model = _model(run)
    check_prediction_request(model, **options)
    if isinstance(run, Predictor):
        if engine != "torch":
            raise TransferlabError(f"engine {engine!r} reads the run directory's exported model: pass the run "
                                   "directory, not a loaded model")
        return model.predict(data, **{name: value for name, value in options.items() if value is not None})
    return open_engine(model, Path(run), engine).predict(data, **options)


def export(run: str | Path, out: str | Path | None = None, *, output_format: str = "onnx", opset: int | None = None,
           data: str | Path | None = None, overwrite: bool = False, columns: TextColumns | None = None
           ) -> ExportResult:
    """Export the model of a run directory (`transferlab.export.export_onnx`): ``out`` defaults to
    ``RUN/model.onnx``; ``data`` (a file or a data spec: a folder, a manifest or text table, ``sklearn-digits``...)
    gives the examples of the parity check (its first 32), else made-up inputs are used.

    Raises:
        TransferlabError: an unknown ``output_format``, a kind that cannot export, an existing ``out`` without
            ``overwrite``, or a failed parity check.
    """
    if output_format not in EXPORT_FORMATS:
        raise TransferlabError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {output_format!r}")
    model = load(run)
    examples = _parity_examples(str(data), columns) if data is not None else None
    return export_onnx(model, Path(run), Path(out) if out is not None else None, opset=opset, data=examples,
                       overwrite=overwrite)


def check_prediction_request(model: Predictor, output_format: str = "csv", *, draw: bool = False, **options) -> None:
    """Refuse, in one line naming the model's kind, what ``transferlab predict`` asks of a model that cannot do it:
    an output format it does not write, drawing (``--draw``) for a kind that draws nothing, or a prediction option
    (``options`` not ``None``) its ``predict`` does not take. Each kind declares what it can do
    (`Predictor.output_formats`, `Predictor.draws_predictions`, `Predictor.prediction_options`)."""
    if output_format not in model.output_formats:
        raise TransferlabError(f"--format {output_format} is not an output of this run's {model.kind} model; it "
                               f"writes {' | '.join(model.output_formats)}")
    if draw and not model.draws_predictions:
        raise TransferlabError(f"--draw writes images with the objects a detector found; this run holds a "
                               f"{model.kind} model, which draws nothing")
    for name, value in options.items():
        if value is not None and name not in model.prediction_options:
            takes = ", ".join(flag_name(option) for option in model.prediction_options) or "no options"
            raise TransferlabError(f"{flag_name(name)} does not apply to this run's {model.kind} model (its "
                                   f"predictions take {takes})")


def _parity_examples(spec: str, columns: TextColumns | None):
    """The examples of ``export --data``: one file (an image, an audio clip), the inputs of a manifest or text table
    (its label columns, a multi-task run's too, play no part), or any other data spec (a folder, a built-in set such
    as ``sklearn-digits``; its test split, else val, else all of it)."""
    path = Path(spec)
    if path.is_file() and path.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
        return examples_from_paths([path], columns=columns)
    if manifest_columns(spec, columns) is not None:  # its inputs only, whatever label columns (tasks) it has
        return read_manifest_columns(spec, [], text_columns=columns)[0]
    return load_data(spec, split_preference=("test", "val", "all"), columns=columns)


@dataclass
class Evaluation:
    metrics: dict
    lines: list[str]  # the metrics for a person


def evaluate_path(target: str | Path, *, data: str | None = None, query: str | Path | None = None,
                  task: str | None = None, skip_bad_files: bool = False, columns: TextColumns | None = None
                  ) -> Evaluation:
    """``transferlab evaluate``: a run directory on the labeled data at ``data`` (`evaluate`), or the retrieval and
    clustering quality of an embeddings directory, leave-one-out or searched by the embeddings at ``query``
    (`transferlab.unsupervised.evaluation.evaluate_embeddings`). The one place that tells the two apart.

    Raises:
        TransferlabError: ``data`` or ``task`` for an embeddings directory, ``query`` for a run directory, or a run
            directory without ``data``.
    """
    if is_embedding_dir(target):
        if data is not None or task is not None:
            raise TransferlabError(f"{target} is an embeddings directory: it is evaluated on its own labels, so "
                                   f"{'--data' if data is not None else '--task'} does not apply (--query EMB2 "
                                   "searches it with other embeddings)")
        metrics = evaluate_embeddings(target, query)
        return Evaluation(metrics, retrieval_lines(metrics))
    if query is not None:
        raise TransferlabError(f"--query applies to an embeddings directory, and {target} is not one (no "
                               "embedding.json); evaluate a run directory with --data DATA")
    if data is None:
        raise TransferlabError(f"evaluating {target} needs --data DATA (labeled data), unless it is an embeddings "
                               "directory")
    model = load(target)
    metrics = evaluate(model, data, task=task, skip_bad_files=skip_bad_files, columns=columns)
    return Evaluation(metrics, model.metric_lines(metrics, detail=True))
