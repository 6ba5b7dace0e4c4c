"""What the command line and Python users call: `fit`, `load`, `evaluate`, `predict`."""

from __future__ import annotations

import logging
import platform
import random
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

import transferlab
from transferlab.artifacts import load, save_model
from transferlab.backbones.registry import DEFAULT_BACKBONES
from transferlab.config import ADAPTATION_METHODS, FitConfig, build_config
from transferlab.data import align_classes, choose_split, keep_classes, load_data, load_splits, stratified_split, take_per_class
from transferlab.data.image_data import ImageData
from transferlab.data.specs import manifest_columns
from transferlab.data.text_tables import TextColumns, table_columns, text_columns_of
from transferlab.data.torch_dataset import DATA_MODALITY
from transferlab.data.task_groups import MultiTaskSplits, load_task_group, prepare_multitask_splits
from transferlab.engine.distributed import is_main_process
from transferlab.engine.precision import default_device, resolve_precision
from transferlab.errors import TransferlabError, suggest
from transferlab.evaluate import evaluate_model, predict_proba, predict_task_outputs
from transferlab.fileio import prepare_run_dir, read_json, write_json
from transferlab.methods import get_method
from transferlab.methods.base import RunContext, Splits
from transferlab.methods.multitask import evaluate_task_groups
from transferlab.model import MultiTaskModel
from transferlab.speech import SpeechRecognizer, load_transcribed_audio, save_recognizer
from transferlab.speech.ctc import prepare_speech_splits, score_transcripts
from transferlab.tasks import ClassificationTask

__all__ = ["fit", "load", "evaluate", "predict", "FitResult", "prepare_splits", "seed_everything"]

log = logging.getLogger("transferlab")


@dataclass
class FitResult:
    run_dir: Path
    model: transferlab.model.TransferModel
    metrics: dict
    history: list[dict]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _require_labels(data, role: str):
    if data.labels is None:
        hint = ""
        if getattr(data, "texts", None) is not None and Path(data.name).is_file():
            hint = (f" (no label column; its columns: {', '.join(table_columns(Path(data.name)))}; name the label "
                    "column with --label-column)")
        raise TransferlabError(f"{role} data {data.name} has no labels; {role} data needs class labels{hint}")
    return data


def _same_examples(a, b) -> bool:
    """Whether two datasets hold the same examples (same files, pixels or texts, in the same order)."""
    if len(a) != len(b) or type(a) is not type(b):
        return False
    if getattr(a, "texts", None) is not None:
        return a.texts == b.texts
    if a.paths is not None and b.paths is not None:
        return [p.resolve() for p in a.paths] == [p.resolve() for p in b.paths]
    return a.pixels is not None and b.pixels is not None and np.array_equal(a.pixels, b.pixels)


def _load(spec: str, config: FitConfig, preference: tuple[str, ...], domain: str = "target"):
    """One split of a data spec with the run's reading options (bad files, text columns, kept classes)."""
    data = load_data(spec, split_preference=preference, skip_bad_files=config.skip_bad_files, domain=domain,
                     columns=text_columns_of(config))
    return keep_classes(data, config.classes)


def prepare_splits(config: FitConfig) -> Splits | MultiTaskSplits:
    """Load train/val/test from the config's specs; split off validation data and keep N labels per class."""
    if config.method == "multitask":
        return prepare_multitask_splits(config)
    if config.method == "ctc":
        return prepare_speech_splits(config)
    if config.method in ADAPTATION_METHODS:
        return _adaptation_splits(config)
    train_splits = load_splits(config.train, skip_bad_files=config.skip_bad_files, columns=text_columns_of(config))
    train_splits = {name: keep_classes(data, config.classes) for name, data in train_splits.items()}
    train = _require_labels(train_splits[choose_split(config.train, list(train_splits), ("train", "all"))], "training")
    source = None
    if config.source is not None:
        source = _require_labels(_load(config.source, config, ("train", "all"), "source"), "source")
        if _same_examples(source, train):
            raise TransferlabError(
                f"source {config.source} and target {config.train} hold the same examples; the source must be other data"
            )
    train, val, test = _validation_and_test(train, config, train_splits.get("val"))
    return Splits(train=train, val=val, test=test, source=source)


def _validation_and_test(
    train: ImageData, config: FitConfig, own_val: ImageData | None = None, *, align_test: bool = True
) -> tuple[ImageData, ImageData, ImageData | None]:
    """``(train, val, test)``: validation data from --val, else ``own_val`` (the data's own split), else a seeded
    stratified hold-out of ``train``; then N labels per class of what is left; --test if given. Validation (and,
    with ``align_test``, test) labels are put in ``train``'s class order; unknown classes are errors."""
    if config.val is not None:
        val = _load(config.val, config, ("val", "test", "all"))
    elif own_val is not None:
        val = own_val
    else:
        train_index, val_index = stratified_split(train.labels, config.val_fraction, config.seed)
        train, val = train.subset(train_index), train.subset(val_index)
        log.info("held out %d of %d training images for validation (seed %d)", len(val_index),
                 len(train_index) + len(val_index), config.seed)
    val = align_classes(_require_labels(val, "validation"), train.classes)
    if config.labels_per_class is not None:
        train = train.subset(take_per_class(train.labels, config.labels_per_class, config.seed))
    test = None
    if config.test is not None:
        test = _load(config.test, config, ("test", "val", "all"))
        test = _require_labels(test, "test")
        if align_test:
            test = align_classes(test, train.classes)
    return train, val, test


def _adaptation_splits(config: FitConfig) -> Splits:
    """Labeled source data (split into train and validation unless --val is given) and target data whose labels,
    if it has any, are expressed in the source classes (-1 for classes the source lacks) for reporting only."""
    source = _require_labels(_load(config.source, config, ("train", "all"), "source"), "source")
    target = _load(config.target, config, ("train", "all"))
    if _same_examples(source, target):
        raise TransferlabError(f"source {config.source} and target {config.target} hold the same examples; "
                               "the target must be other data")
    if target.labels is not None:
        target = _target_labels_in_source_classes(target, source.classes)
    # the target test set may hold classes the source lacks: evaluation warns and scores the shared ones
    source, val, test = _validation_and_test(source, config, align_test=False)
    if config.selection == "oracle" and (target.labels is None or not (target.labels >= 0).any()):
        raise TransferlabError(f"selection 'oracle' picks the checkpoint by target accuracy, but the target "
                               f"{config.target} has no labels of the source classes")
    return Splits(train=source, val=val, test=test, target=target)


def _target_labels_in_source_classes(target: ImageData, classes: list[str]) -> ImageData:
    shared = sorted(set(target.classes) & set(classes))
    if not shared:
        raise TransferlabError(
            f"target {target.name} shares no class with the source (target classes: {', '.join(target.classes[:5])}; "
            f"source classes: {', '.join(classes[:5])}); these methods need the same classes in both domains"
        )
    outside = sorted(set(target.classes) - set(classes))
    if outside:
        log.warning("target %s has classes the source lacks (%s); target accuracy is reported on the shared classes",
                    target.name, ", ".join(outside[:10]))
    position = {name: i for i, name in enumerate(classes)}
    labels = np.array([position.get(target.classes[label], -1) for label in target.labels], dtype=np.int64)
    return replace(target, classes=list(classes), labels=labels)


def fit(config: FitConfig | dict, *, splits: Splits | None = None, progress: bool = True) -> FitResult:
    """Train a model as ``config`` says and write its run directory.

    Args:
        config: a `FitConfig` or a dict of its fields.
        splits: ready data (skips loading ``config.train``/``val``/``test``); for Python users and the demo.
        progress: show progress bars.
    """
    if isinstance(config, dict):
        config = build_config(overrides=config)
    method = get_method(config.method)
    seed_everything(config.seed)
    splits = splits or prepare_splits(config)
    if config.backbone is None:
        config = config.model_copy(update={"backbone": default_backbone(splits)})
    run_dir = prepare_run_dir(config.out, overwrite=config.overwrite, resume=config.resume)
    if config.resume:
        _check_resume_settings(run_dir, config)
    elif is_main_process():
        write_json(run_dir / "config.json", config.model_dump(mode="json"))
    device = default_device()
    context = RunContext(run_dir, device, resolve_precision(config.precision, device), config.num_workers, progress)
    if isinstance(splits, Splits):
        log.info("training %s with %s on %s", config.method, config.backbone, splits.train.describe())

    started = time.perf_counter()
    try:
        result = method(config, splits, context)
    except BaseException:
        if not config.resume and not (run_dir / "checkpoint.pt").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing worth keeping: a retry needs no --overwrite
        raise
    train_seconds = time.perf_counter() - started
    model = result.model.cpu().eval()

    metrics = {
        "method": config.method + (" (ORACLE selection: target labels)" if config.selection == "oracle"
                                   and config.method in ADAPTATION_METHODS else ""),
        "backbone": config.backbone,
        "train_images": sum(map(len, splits.train)) if isinstance(splits, MultiTaskSplits) else len(splits.train),
        "train_seconds": round(train_seconds, 3),
        "precision": context.precision,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    for role, data in (("val", splits.val), ("test", splits.test)):
        if isinstance(splits, MultiTaskSplits):
            if data:
                metrics[role] = evaluate_task_groups(model, data, precision=context.precision,
                                                     num_workers=config.num_workers or 0)
        elif data is not None and isinstance(model, SpeechRecognizer):
            metrics[role] = score_transcripts(model, data, precision=context.precision)  # {"n", "wer", "cer"}
        elif data is not None:
            scores = evaluate_model(model, data, precision=context.precision, num_workers=config.num_workers,
                                    feature_cache=config.method == "features")
            metrics[role] = scores
    metrics.update(result.metrics)
    if is_main_process():
        if isinstance(model, SpeechRecognizer):
            save_recognizer(run_dir, model)
        else:
            save_model(run_dir, model, {"kind": config.head, "hidden": config.head_hidden, "dropout": config.dropout})
        write_json(run_dir / "metrics.json", metrics)
    return FitResult(run_dir=run_dir, model=model, metrics=metrics, history=result.history)


# settings a resumed run may change: where it is, how it is resumed, and how fast data is decoded
_RESUME_MAY_CHANGE = {"out", "resume", "overwrite", "num_workers"}


def default_backbone(splits: Splits | MultiTaskSplits) -> str:
    """The offline pretrained backbone for the modality of the training data (images, text or audio)."""
    first = splits.train[0].images if isinstance(splits, MultiTaskSplits) else splits.train
    name = DEFAULT_BACKBONES[DATA_MODALITY.get(type(first), "image")]
    log.info("backbone: %s (the default for %s data; choose another with --backbone)", name,
             DATA_MODALITY.get(type(first), "image"))
    return name


def _check_resume_settings(run_dir: Path, config: FitConfig) -> None:
    """A resumed run continues the saved settings; refuse ones that differ (they would silently mix two runs)."""
    saved_path = run_dir / "config.json"
    if not saved_path.is_file():
        return
    saved, given = read_json(saved_path), config.model_dump(mode="json")
    changed = [key for key in given if key not in _RESUME_MAY_CHANGE and key in saved and saved[key] != given[key]]
    if changed:
        details = ", ".join(f"{key} (saved {saved[key]!r}, given {given[key]!r})" for key in changed[:4])
        raise TransferlabError(
            f"--resume continues {run_dir} with its saved settings, but these differ: {details}; "
            "drop them, or start a new run"
        )


def evaluate(run_dir: str | Path, data_spec: str, *, task: str | None = None, skip_bad_files: bool = False,
             columns: TextColumns | None = None) -> dict:
    """Accuracy, macro-F1 and confusion matrix of a trained run on labeled data.

    For a multi-task run: ``{"tasks": {name: metrics}, "score": mean task score}`` for every task whose labels the
    data holds (a manifest with the tasks' columns), or for ``task`` alone (any data labeled for it).
    For a speech-recognition (``ctc``) run: ``{"n", "wer", "cer"}`` on a ``path,transcript`` manifest; a reference
    transcript with characters the model cannot write raises `TransferlabError` naming them and the row.
    ``columns`` names the text and label columns of text data.
    """
    model = load(run_dir)
    if isinstance(model, SpeechRecognizer):  # a transcript manifest -> {"n", "wer", "cer"}
        data = load_transcribed_audio(data_spec, transcript_column=model.transcript_column,
                                      skip_bad_files=skip_bad_files, vocabulary=model.characters)
        return score_transcripts(model, data)
    if isinstance(model, MultiTaskModel):
        return _evaluate_tasks(model, data_spec, task, skip_bad_files, columns)
    if task is not None:
        raise TransferlabError(f"{run_dir} holds a single-task model; --task is for multi-task runs")
    data = load_data(data_spec, split_preference=("test", "val", "all"), skip_bad_files=skip_bad_files,
                     columns=columns)
    return evaluate_model(model, data, feature_cache=_frozen_pretrained_backbone(run_dir))


def _evaluate_tasks(model: MultiTaskModel, data_spec: str, task: str | None, skip_bad_files: bool,
                    columns: TextColumns | None) -> dict:
    names = [t.name for t in model.tasks]
    if task is not None and task not in names:
        raise TransferlabError(f"the model has no task '{task}'{suggest(task, names)}; its tasks: {', '.join(names)}")
    found = manifest_columns(data_spec, columns) or []
    chosen = [t for t in model.tasks if (task is None or t.name == task) and t.label_column in found]
    if not chosen:
        if task is None:
            classification = [t for t in model.tasks if isinstance(t, ClassificationTask)]
            if len(classification) != 1:
                raise TransferlabError(
                    f"{data_spec} holds none of the tasks' label columns ({', '.join(t.label_column for t in model.tasks)}); "
                    f"name the task its labels belong to with --task (tasks: {', '.join(names)})"
                )
            task = classification[0].name
        chosen = [t for t in model.tasks if t.name == task]
    group = load_task_group(data_spec, chosen, skip_bad_files=skip_bad_files, text_columns=columns)
    metrics = evaluate_task_groups(model, [group])
    unlabeled = [name for name, values in metrics["tasks"].items() if not values["n"]]
    if len(unlabeled) == len(chosen):
        raise TransferlabError(f"{data_spec} holds no labels the model knows for task(s) {', '.join(unlabeled)} "
                               "(see the warning above for the labels found)")
    return metrics


def _frozen_pretrained_backbone(run_dir: str | Path) -> bool:
    """Whether the run kept its pretrained backbone unchanged (a ``features`` run): its embeddings are cacheable."""
    config = Path(run_dir) / "config.json"
    return config.is_file() and read_json(config).get("method") == "features"


def predict(run_dir: str | Path, data) -> list[dict]:
    """One dict per example (of `ImageData`, `TextData` or `AudioData`): ``{"label": best class, "probabilities": {class: p}}``; for a multi-task run,
    ``{"tasks": {name: prediction}}`` with each task's own form (see `transferlab.tasks.Task.decode`); for a
    speech-recognition (``ctc``) run and `AudioData`, ``{"transcript": greedy transcript}``."""
    model = load(run_dir)
    if isinstance(model, SpeechRecognizer):  # speech recognition: {"transcript": greedy CTC transcript}
        return [{"transcript": text} for text in model.transcribe(data)[0]]
    if isinstance(model, MultiTaskModel):
        outputs = predict_task_outputs(model, data)
        decoded = {task.name: task.decode(outputs[task.name]) for task in model.tasks}
        return [{"tasks": {name: rows[i] for name, rows in decoded.items()}} for i in range(len(data))]
    probabilities = predict_proba(model, data, feature_cache=_frozen_pretrained_backbone(run_dir))
    return [
        {"label": model.classes[int(row.argmax())],
         "probabilities": {name: float(p) for name, p in zip(model.classes, row, strict=True)}}
        for row in probabilities
    ]
