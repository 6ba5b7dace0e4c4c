"""The ``transferlab`` command line: parses, calls `transferlab.api`, prints. User mistakes print one line."""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from transferlab.errors import TransferlabError

app = typer.Typer(
    name="transferlab",
    help="Transfer learning from pretrained models: fine-tuning, feature extraction and baselines, fast on a CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

log = logging.getLogger("transferlab")


def _setup_logging(quiet: bool) -> None:
    if quiet:  # read by huggingface_hub / transformers when they are first imported
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.captureWarnings(True)
    warnings.simplefilter("default")


def _user_errors(command):
    """Print a `TransferlabError` (or a file-system error) as ``error: ...`` and exit 2, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (TransferlabError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except FloatingPointError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper


@app.command()
@_user_errors
def fit(
    train: Optional[str] = typer.Option(None, help="Training data: image or audio folder, CSV manifest, text CSV/TSV/JSONL, "
                                        "sklearn-digits, mnist:DIR, usps:DIR."),
    val: Optional[str] = typer.Option(None, help="Validation data spec (default: a stratified split of --train)."),
    test: Optional[str] = typer.Option(None, help="Test data spec, evaluated once at the end."),
    method: Optional[str] = typer.Option(
        None, help="scratch | features | finetune | seed-recipe | joint | multitask | lora, ctc (speech recognition), "
        "or domain adaptation: source-only | dann | cdan | dan | coral | mcc | mdd | self-training (default finetune)."
    ),
    backbone: Optional[str] = typer.Option(None, help="Backbone name (default by the data: efficientnet_lite0 for images, "
                                           "sentence-transformers/all-MiniLM-L6-v2 for text, resemblyzer for audio)."),
    weights: Optional[Path] = typer.Option(None, help="Local .safetensors/.pth backbone weights, or a run directory."),
    labels_per_class: Optional[int] = typer.Option(None, help="Keep N labeled training examples per class."),
    classes: Optional[str] = typer.Option(None, help="Keep only these classes in every dataset, e.g. positive,negative."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of the head (earlier groups get less)."),
    optimizer: Optional[str] = typer.Option(None, help="adamw | adam | sgd."),
    scheduler: Optional[str] = typer.Option(None, help="cosine | onecycle | inverse (DANN: lr / (1 + 10 p) ** 0.75) | constant."),
    freeze: Optional[str] = typer.Option(None, help="all | none | N (first N groups) | a parameter-name glob."),
    head: Optional[str] = typer.Option(None, help="logistic (features only) | linear | mlp | bottleneck (linear + batch norm + ReLU, then linear)."),
    head_epochs: Optional[int] = typer.Option(None, help="Head-only epochs before unfreezing."),
    l2sp_alpha: Optional[float] = typer.Option(None, help="L2-SP weight toward the pretrained weights."),
    image_size: Optional[int] = typer.Option(None, help="Input size in pixels (default: the backbone's)."),
    patience: Optional[int] = typer.Option(None, help="Early stopping patience in epochs."),
    precision: Optional[str] = typer.Option(None, help="auto | fp32 | bf16."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    num_workers: Optional[int] = typer.Option(None, help="Image decoding processes."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help="Start from pretrained weights."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Random crops, flips, colour jitter."),
    skip_bad_files: Optional[bool] = typer.Option(None, "--skip-bad-files", help="Skip unreadable images with a warning."),
    text_column: Optional[str] = typer.Option(None, help="Text column of CSV/TSV/JSONL data (default: text, else sentence)."),
    label_column: Optional[str] = typer.Option(None, help="Label column of text data and audio manifests (default: label)."),
    transcript_column: Optional[str] = typer.Option(None, help="Transcript column of ctc manifests (default: transcript)."),
    empty_texts: Optional[str] = typer.Option(None, help="Empty texts: skip (warn with a count, default) | error."),
    max_length: Optional[int] = typer.Option(None, help="Text backbones: tokens per text (default 128)."),
    max_seconds: Optional[float] = typer.Option(None, help="Audio backbones: seconds per clip (default 10)."),
    pool: Optional[str] = typer.Option(None, help="avg (default) | flatten (images) | cls (text)."),
    lora_r: Optional[int] = typer.Option(None, help="LoRA rank (lora, default 8)."),
    lora_alpha: Optional[float] = typer.Option(None, help="LoRA alpha (default 16)."),
    lora_dropout: Optional[float] = typer.Option(None, help="LoRA dropout (default 0.1)."),
    lora_targets: Optional[str] = typer.Option(None, help="Modules LoRA adapts, comma-separated (default: attention)."),
    lora_save: Optional[str] = typer.Option(None, help="merged (default: loads without PEFT) | adapter (also the adapter alone)."),
    source: Optional[str] = typer.Option(None, help="Labeled source-domain data spec (joint, adaptation methods)."),
    target: Optional[str] = typer.Option(None, help="Target-domain data for adaptation methods; labels optional, "
                                         "used only to report target accuracy."),
    trade_off: Optional[float] = typer.Option(None, help="Adaptation-loss weight: CE_source + trade_off * L_adapt."),
    selection: Optional[str] = typer.Option(
        None, help="Checkpoint scorer without target labels: source-accuracy (default) | dev | iwv | entropy | snd; "
        "oracle reads target labels and is reported as such."
    ),
    consistency: Optional[bool] = typer.Option(None, "--consistency", help="Self-training on augmented target views."),
    lambda_: Optional[float] = typer.Option(None, "--lambda", help="Target-loss weight in L_S + lambda * L_T (joint)."),
    lambda_warmup_epochs: Optional[int] = typer.Option(None, help="Ramp lambda up over the first N epochs (joint)."),
    source_share: Optional[float] = typer.Option(None, help="Share of each joint batch from the source (joint)."),
    separate_heads: Optional[bool] = typer.Option(None, "--separate-heads/--shared-head",
                                                  help="One head per domain (default: when class names differ)."),
    steps_per_epoch: Optional[int] = typer.Option(None, help="Joint steps per epoch (default: a pass over the larger domain)."),
    tasks: Optional[str] = typer.Option(
        None, help="Label columns of the --train CSV, one task each: COL1,COL2 (type inferred) or COL:regression, "
        "COL:multilabel ('a|b' cells), COL:classification (multitask)."
    ),
    weighting: Optional[str] = typer.Option(
        None, help="Task-loss weighting (multitask): fixed | uncertainty | dwa | gradnorm | upgrad | pcgrad | cagrad "
        "| mgda | imtl-g | aligned-mtl | dualproj."
    ),
    dwa_temperature: Optional[float] = typer.Option(None, help="Temperature of --weighting dwa (default 2)."),
    gradnorm_alpha: Optional[float] = typer.Option(None, help="Alpha of --weighting gradnorm (default 1.5)."),
    out: Optional[Path] = typer.Option(None, help="Run directory to create."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Replace an existing run directory."),
    resume: Optional[bool] = typer.Option(None, "--resume", help="Continue the run in --out from its last checkpoint."),
    config: Optional[Path] = typer.Option(None, help="YAML file with any of these settings; flags override it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and the result."),
):
    """Train a model on your data and write a run directory."""
    overrides = {key: value for key, value in locals().items() if key not in ("config", "quiet")}
    _setup_logging(quiet)
    from transferlab.api import fit as fit_run
    from transferlab.config import build_config, load_config_file
    from transferlab.fileio import require_checkpoint

    file_values = load_config_file(config) if config is not None else {}
    source = str(config) if config is not None else "command line"
    if resume and out is not None:  # before validating settings: a missing checkpoint is the real problem
        require_checkpoint(out)
    if resume and out is not None and (out / "config.json").is_file():  # the saved settings, then the file's, then flags
        file_values = {**_saved_run_config(out / "config.json"), **file_values}
        source = f"{out / 'config.json'}" + (f" and {config}" if config is not None else "")
    settings = build_config(file_values, overrides, source=source)
    result = fit_run(settings, progress=not quiet)
    _print_fit_summary(result)


def _saved_run_config(path: Path) -> dict:
    """The settings a run directory was started with (to resume it with just ``--out RUN --resume``)."""
    from transferlab.fileio import read_json

    values = read_json(path)
    return {key: value for key, value in values.items() if key not in ("resume", "overwrite")}


def _print_fit_summary(result) -> None:
    metrics = result.metrics
    lines = [f"run directory: {result.run_dir}", f"training time: {metrics['train_seconds']:.1f} s"]
    if "selection" in metrics:
        lines += _selection_lines(metrics["selection"])
    for role in ("val", "test"):
        if role in metrics and "tasks" in metrics[role]:
            lines += [f"{role} {line}" for line in _task_lines(metrics[role])]
        elif role in metrics and "wer" in metrics[role]:  # speech recognition (ctc)
            lines.append(f"{role} WER: {metrics[role]['wer']:.4f}  CER: {metrics[role]['cer']:.4f}")
        elif role in metrics:
            lines.append(f"{role} accuracy: {metrics[role]['accuracy']:.4f}  macro-F1: {metrics[role]['macro_f1']:.4f}")
    typer.echo("\n".join(lines))


def _selection_lines(report: dict) -> list[str]:
    """The checkpoint choice of an adaptation run and, with target labels, its gap to the best in hindsight."""
    name = f"ORACLE ({report['scorer']}: reads target labels)" if report["oracle"] else report["scorer"]
    lines = [f"checkpoint chosen by {name}: epoch {report['selected_epoch']}"]
    if report.get("collapsed_epochs") and "warning" not in report:
        lines[0] += (f" (passed over collapsed epochs {', '.join(map(str, report['collapsed_epochs']))}: nearly all "
                     "target predictions in one class)")
    if "target_accuracy_selected" in report:
        lines.append(f"target accuracy (labels used for reporting only): chosen {report['target_accuracy_selected']:.4f}, "
                     f"best in hindsight {report['target_accuracy_best_in_hindsight']:.4f} "
                     f"(epoch {report['best_epoch_in_hindsight']})")
    if "warning" in report:
        lines.append(f"warning: {report['warning']}")
    return lines


_TASK_SUMMARY = {"accuracy": "accuracy", "macro_f1": "macro-F1", "micro_f1": "micro-F1",
                 "mean_average_precision": "mAP", "mae": "MAE", "rmse": "RMSE", "r2": "R^2"}


def _task_lines(metrics: dict) -> list[str]:
    """One line per task of multi-task metrics: ``task NAME (n images): metric value, ...``."""
    lines = []
    for name, values in metrics["tasks"].items():
        shown = ", ".join(f"{label} {values[key]:.4f}" for key, label in _TASK_SUMMARY.items() if key in values)
        lines.append(f"task {name} ({values['n']} examples): {shown or 'no labeled examples'}")
    return lines


@app.command()
@_user_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'transferlab fit'."),
    data: str = typer.Option(..., help="Labeled data spec to evaluate on."),
    text_column: Optional[str] = typer.Option(None, help="Text column of text data (default: text, else sentence)."),
    label_column: str = typer.Option("label", help="Label column of text data."),
    task: Optional[str] = typer.Option(None, help="Multi-task runs: evaluate this task alone (data labeled for it)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Skip unreadable images with a warning."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Accuracy, macro-F1 and confusion matrix of a trained model on labeled data."""
    _setup_logging(quiet or as_json)
    from transferlab.api import evaluate as evaluate_run
    from transferlab.data.text_tables import TextColumns

    metrics = evaluate_run(run_dir, data, task=task, skip_bad_files=skip_bad_files,
                           columns=TextColumns(text_column, label_column))
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    if "wer" in metrics:  # speech recognition (ctc)
        typer.echo(f"clips: {metrics['n']}\nWER: {metrics['wer']:.4f}\nCER: {metrics['cer']:.4f}")
        return
    if "tasks" in metrics:
        typer.echo("\n".join(_task_lines(metrics)))
        for name, values in metrics["tasks"].items():
            if "confusion_matrix" in values:
                typer.echo(f"task {name}, confusion matrix (rows: true, columns: predicted):")
                _echo_confusion(values["classes"], values["confusion_matrix"])
        return
    typer.echo(f"examples: {metrics['n']}\naccuracy: {metrics['accuracy']:.4f}\nmacro-F1: {metrics['macro_f1']:.4f}")
    typer.echo("confusion matrix (rows: true, columns: predicted):")
    _echo_confusion(metrics["classes"], metrics["confusion_matrix"])


def _echo_confusion(classes: list[str], matrix: list[list[int]]) -> None:
    width = max(6, *(len(c) for c in classes)) + 1
    typer.echo(" " * width + "".join(c[: width - 1].rjust(width) for c in classes))
    for name, row in zip(classes, matrix, strict=True):
        typer.echo(name[: width - 1].ljust(width) + "".join(str(v).rjust(width) for v in row))


@app.command()
@_user_errors
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'transferlab fit'."),
    inputs: list[Path] = typer.Argument(..., help="Image or audio files and/or folders of them, or one text table "
                                        "(CSV/TSV/JSONL with a text column)."),
    output_format: str = typer.Option("csv", "--format", help="csv | json."),
    text_column: Optional[str] = typer.Option(None, help="Text column of a text table (default: text, else sentence)."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Skip unreadable images with a warning."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Predict the class of each image, clip or text: label and class probabilities."""
    _setup_logging(quiet)
    from transferlab.api import predict as predict_run
    from transferlab.data import examples_from_paths
    from transferlab.data.text_tables import TextColumns

    if output_format not in ("csv", "json"):
        raise TransferlabError(f"--format must be 'csv' or 'json', got {output_format!r}")
    data = examples_from_paths(inputs, skip_bad_files=skip_bad_files, columns=TextColumns(text_column))
    rows = predict_run(run_dir, data)
    key, names = ("text", data.texts) if hasattr(data, "texts") else ("path", [str(p) for p in data.paths])
    if output_format == "json":
        typer.echo(json.dumps([{key: name, **row} for name, row in zip(names, rows, strict=True)], indent=2))
        return
    if rows and "tasks" in rows[0]:
        _write_task_predictions(key, names, rows)
        return
    if rows and "transcript" in rows[0]:  # speech recognition (ctc)
        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "transcript"])
        writer.writerows([name, row["transcript"]] for name, row in zip(names, rows, strict=True))
        return
    classes = list(rows[0]["probabilities"]) if rows else []
    writer = csv.writer(sys.stdout)
    writer.writerow([key, "label", *[f"p_{c}" for c in classes]])
    for name, row in zip(names, rows, strict=True):
        writer.writerow([name, row["label"], *[f"{row['probabilities'][c]:.6f}" for c in classes]])


def _write_task_predictions(key: str, names: list[str], rows: list[dict]) -> None:
    """CSV of multi-task predictions: the example (``key``: path or text), per task its label (``a|b`` for
    multi-label) or value, then probabilities as ``TASK:p_CLASS`` columns."""
    first = rows[0]["tasks"]
    header = [key]
    for name, prediction in first.items():
        header += [name, *[f"{name}:p_{c}" for c in prediction.get("probabilities", {})]]
    writer = csv.writer(sys.stdout)
    writer.writerow(header)
    for example, row in zip(names, rows, strict=True):
        cells = [example]
        for name, prediction in row["tasks"].items():
            if "value" in prediction:
                cells.append(f"{prediction['value']:.6g}")
            else:
                cells.append(prediction["label"] if "label" in prediction else "|".join(prediction["labels"]))
            cells += [f"{p:.6f}" for p in prediction.get("probabilities", {}).values()]
        writer.writerow(cells)


@app.command()
@_user_errors
def demo(
    out: Optional[Path] = typer.Option(None, help="Keep the demo's run directories here (default: a temp folder)."),
    labels_per_class: int = typer.Option(10, help="Labeled training images per digit class."),
    seed: int = typer.Option(0, help="Random seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Offline demo: ImageNet EfficientNet-Lite0 -> UCI digits with few labels; scratch vs features vs finetune."""
    _setup_logging(quiet)
    from transferlab.demo import run_demo

    typer.echo(run_demo(out=out, labels_per_class=labels_per_class, seed=seed, progress=not quiet))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
