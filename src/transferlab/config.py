"""Settings of a ``fit`` run: the groups every method composes its settings model from, validated in one place.

`FitConfig` holds what every run has (method, backbone, how data is read, seed, precision, output). Each method's
settings model (`transferlab.methods.MethodSpec.settings`) subclasses it together with the groups it takes
(`TrainDataSettings`, `TrainingSettings`, `HeadSettings`, `FinetuneSettings`, ...) and its own fields, so a setting
that does not apply to a method is not a field of its model and is refused. Field names are the YAML keys;
``--some-flag`` on the command line is ``some_flag``; descriptions are the help text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from transferlab.errors import TransferlabError, suggest

__all__ = [
    "AugmentSettings", "ExampleSettings", "FinetuneSettings", "FitConfig", "GRADIENT_TRAINING_SETTINGS", "HEADS",
    "HeadSettings", "L2SPSettings", "LabelSettings", "PretrainedSettings", "SCHEDULERS", "SplitSettings",
    "TRAINED_HEADS", "TaskSpec", "TrainDataSettings", "TrainingSettings", "flag_name", "format_validation_error",
    "load_config_file", "parse_list", "parse_task_list",
]

# classification heads (transferlab.models.build_head) and learning-rate schedules (transferlab.engine.optim)
HEADS = ("logistic", "linear", "mlp", "bottleneck")
TRAINED_HEADS = HEADS[1:]  # trained by gradient descent; 'logistic' is fitted by scikit-learn on embeddings
SCHEDULERS = ("cosine", "onecycle", "inverse", "constant")


def parse_list(value, convert=str):
    """``"a,b"`` -> ``["a", "b"]`` (each item through ``convert``); lists pass through."""
    if isinstance(value, str):
        return [convert(item.strip()) for item in value.split(",") if item.strip()]
    return value


def flag_name(field: str, alias: str | None = None) -> str:
    """The command-line flag of a setting: ``trade_off`` -> ``--trade-off`` (``lambda_`` -> its alias ``--lambda``)."""
    return "--" + (alias or field).replace("_", "-")


class FitConfig(BaseModel):
    """What every run has, whatever its method. Each method's settings model subclasses this."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    method: str = Field("finetune", description="the transfer method (transferlab methods lists them)")
    backbone: str | None = Field(
        None, description="backbone name; default by the data's modality: efficientnet_lite0 (images), "
        "sentence-transformers/all-MiniLM-L6-v2 (text), resemblyzer (audio), all offline"
    )
    image_size: int | None = Field(None, ge=8, description="input size in pixels; default: the backbone's own")
    skip_bad_files: bool = Field(
        False, description="skip unreadable images or audio files with a warning instead of failing"
    )
    max_seconds: float = Field(10.0, gt=0, description="audio backbones: seconds kept per clip (longer clips are cut)")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="'auto': bf16 where the CPU/GPU has it")
    seed: int = Field(0, description="random seed (splits, initialisation, batch order)")
    num_workers: int | None = Field(None, ge=0, description="data decoding processes; default: automatic")
    out: Path = Field(description="run directory to create")
    overwrite: bool = Field(False, description="replace an existing run directory (once the new run has finished)")
    resume: bool = Field(False, description="continue the run in out from its last checkpoint (a finished run: "
                         "report its result)")
    tensorboard: bool = Field(False, description="write TensorBoard scalars (losses, metrics, learning rates, task "
                              "weights) under the run directory's tensorboard/")
    mlflow: str | None = Field(None, description="log settings, per-epoch metrics and the run directory to MLflow at "
                               "this tracking URI, e.g. sqlite:///mlflow.db")
    mlflow_experiment: str = Field("transferlab", description="MLflow experiment to log to (with --mlflow)")

    def ignored_settings(self) -> dict[str, str]:
        """Settings that this configuration's other values leave unused (e.g. training settings of a head that
        scikit-learn fits), each with why. `transferlab.methods.base.build_config` refuses the ones a user gave;
        `transferlab.compare` leaves them out of the cells they do not apply to."""
        return {}

    @model_validator(mode="after")
    def _resume_or_overwrite(self):
        if self.resume and self.overwrite:
            raise ValueError("choose either resume or overwrite, not both")
        if self.mlflow is None and self.mlflow_experiment != type(self).model_fields["mlflow_experiment"].default:
            raise ValueError("mlflow_experiment (--mlflow-experiment) names the experiment of --mlflow URI; give "
                             "--mlflow too, or drop it")
        return self


class ExampleSettings(BaseModel):
    """How labeled examples are read from images and text tables (speech recognition reads transcript manifests
    and takes none of these)."""

    max_image_pixels: int | None = Field(
        None, ge=1, description="larger images are bad files, refused before decoding; default: the environment "
        "variable TRANSFERLAB_MAX_IMAGE_PIXELS, else 89478485 (PIL's decompression-bomb limit)"
    )
    text_column: str | None = Field(
        None, description="text column of CSV/TSV/JSONL data; default: 'text', else 'sentence'"
    )
    label_column: str = Field("label", description="label column of CSV/TSV/JSONL text data and audio manifests")
    empty_texts: Literal["skip", "error"] = Field(
        "skip", description="empty or whitespace-only texts: skip them with a warning and a count, or fail"
    )
    max_length: int = Field(128, ge=2, description="text backbones: tokens kept per text (longer texts are truncated)")


class SplitSettings(BaseModel):
    """Validation and test data beside the training data."""

    val: str | None = Field(
        None, description="validation data spec; default: a (stratified) split of the training data"
    )
    test: str | None = Field(None, description="optional test data spec, evaluated once at the end")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="fraction held out for validation when no val is given")


class TrainDataSettings(SplitSettings):
    """Labeled training data of the target task."""

    train: str = Field(description="training data spec (folder, CSV, text table, sklearn-digits, mnist:DIR, usps:DIR)")


class LabelSettings(BaseModel):
    """Which labeled examples a classification run keeps."""

    labels_per_class: int | None = Field(None, ge=1, description="keep N labeled training examples per class")
    classes: list[str] | None = Field(
        None, description="keep only the examples of these classes in every dataset (e.g. 'positive,negative')"
    )

    @field_validator("classes", mode="before")
    @classmethod
    def _parse_classes(cls, value):
        value = parse_list(value)
        if isinstance(value, list) and len(value) < 2:
            raise ValueError(f"classes must name at least two classes to keep, got {value!r}")
        return value


class PretrainedSettings(BaseModel):
    """Where the starting weights come from."""

    weights: Path | None = Field(None, description="local .safetensors/.pth backbone weights, or a run directory")
    pretrained: bool = Field(True, description="start from pretrained weights")


class HeadSettings(BaseModel):
    """The head on the pooled backbone features."""

    pool: Literal["avg", "flatten", "cls"] = Field(
        "avg", description="'avg' (images: global average; text/audio: mean over real tokens/frames), 'flatten' "
        "(images: flattened feature map), 'cls' (text: the first token)"
    )
    head: Literal[TRAINED_HEADS] = Field(
        "linear", description="'linear', 'mlp', or 'bottleneck' (linear + batch norm + ReLU to head_hidden[0] "
        "features, then linear: the usual domain-adaptation head); method features also fits 'logistic'"
    )
    head_hidden: list[int] = Field(default_factory=lambda: [512],
                                   description="hidden sizes of the mlp head; the width of the bottleneck head")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the head's linear layers")

    @field_validator("head_hidden", mode="before")
    @classmethod
    def _parse_hidden(cls, value):
        return parse_list(value, int)


class TrainingSettings(BaseModel):
    """The optimisation budget and schedule."""

    epochs: int = Field(10, ge=1, description="training epochs")
    batch_size: int = Field(32, ge=1, description="examples per batch (per process)")
    lr: float = Field(1e-3, gt=0, description="learning rate of the head (earlier groups get less)")
    optimizer: Literal["adamw", "adam", "sgd"] = Field("adamw", description="the optimizer")
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay (adamw) or L2 (adam, sgd)")
    scheduler: Literal[SCHEDULERS] = Field(
        "cosine",
        description="learning-rate schedule: cosine, onecycle, inverse (DANN: lr / (1 + 10 p) ** 0.75), constant",
    )
    warmup: float = Field(0.0, ge=0, lt=1, description="fraction of the training steps over which the learning rate "
                          "rises linearly from 0.1% to its value before the schedule starts (0: none)")
    patience: int | None = Field(None, ge=1, description="stop after N epochs without validation improvement")
    sync_bn: bool = Field(False, description="torchrun on GPUs: BatchNorm statistics over the batches of every process "
                          "(SyncBatchNorm) instead of each process's own")
    ema: float | None = Field(None, gt=0, lt=1, description="keep an exponential moving average of the weights, this "
                              "decay per optimizer step (0.999: about the last 1,000 steps), and validate, keep and "
                              "save the average instead of the last weights")

    @model_validator(mode="after")
    def _check_warmup(self):
        if self.warmup and self.scheduler == "onecycle":
            raise ValueError(f"warmup {self.warmup} with scheduler onecycle: one-cycle warms up by itself; set "
                             "warmup 0 or choose another scheduler")
        return self


# the TrainingSettings that only a gradient-trained model uses (batch_size also sets how many examples are embedded
# at a time, so it applies to every method)
GRADIENT_TRAINING_SETTINGS = ("epochs", "lr", "optimizer", "weight_decay", "scheduler", "warmup", "patience", "sync_bn",
                              "ema")


class AugmentSettings(BaseModel):
    augment: bool = Field(False, description="random crops, flips and colour jitter while training (images)")


class FinetuneSettings(BaseModel):
    """What trains when: freezing by group or pattern, head-only epochs, discriminative learning rates."""

    freeze: str = Field("none", description="'all', 'none', N (first N parameter groups) or a parameter-name pattern")
    head_epochs: int = Field(1, ge=0, description="epochs that train only the head before unfreezing")
    layer_lr_ratio: float = Field(
        10.0, ge=1, description="head lr / first-group lr; groups in between decay geometrically"
    )

    @field_validator("freeze")
    @classmethod
    def _check_freeze(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("freeze must be 'all', 'none', a number of groups or a parameter-name pattern")
        if value.lstrip("-").isdigit() and int(value) < 0:
            raise ValueError(f"freeze must not be negative, got {value}")
        return value.strip()


class L2SPSettings(BaseModel):
    """L2-SP (Li et al., ICML 2018): stay near the pretrained weights."""

    l2sp_alpha: float = Field(0.0, ge=0, description="L2-SP weight toward the pretrained backbone weights")
    l2sp_beta: float = Field(0.0, ge=0, description="L2 weight on the new head (used with L2-SP)")


TaskType = Literal["classification", "multilabel", "regression"]


class TaskSpec(BaseModel):
    """One task of a ``multitask`` run: a label column of the training manifest, or a dataset of its own."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="task name (also the head's name)")
    column: str | None = Field(None, description="label column in the manifest; default: the task name")
    type: TaskType | None = Field(None, description="default: inferred from the column's values")
    data: str | None = Field(None, description="this task's own labeled data spec, instead of a manifest column")
    val: str | None = Field(None, description="this task's validation data (with 'data'); default: a split of it")
    test: str | None = Field(None, description="this task's test data (with 'data')")
    weight: float = Field(1.0, gt=0, description="loss weight (weighting 'fixed')")
    labels_per_class: int | None = Field(None, ge=1, description="overrides the run's labels_per_class for this task")

    @property
    def label_column(self) -> str:
        return self.column or self.name


def parse_task_list(value: str) -> list[dict]:
    """``"age:regression,tags,species"`` -> task dicts; ``NAME:TYPE`` sets the type, otherwise it is inferred."""
    tasks = []
    for item in value.split(","):
        name, _, kind = item.strip().partition(":")
        if not name.strip():
            raise ValueError(f"empty task name in tasks {value!r}; expected COL1,COL2,... (optionally COL:TYPE)")
        tasks.append({"name": name.strip(), **({"type": kind.strip()} if kind else {})})
    return tasks


def format_validation_error(error: ValidationError, settings: type[BaseModel], source: str, method: str = "this method",
                            owners: dict[str, list[str]] | None = None) -> str:
    """One message for every problem of ``error`` (raised by ``settings``, the model of ``method``, for settings
    read from ``source``).

    ``owners`` maps a setting to the methods that take it: a setting this method's model lacks but others take is
    named with them ("applies to dann, cdan; not to finetune") instead of being called unknown.
    """
    owners = owners or {}
    fields = [*settings.model_fields, *(f.alias for f in settings.model_fields.values() if f.alias)]
    messages = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "config"
        if item["type"] == "extra_forbidden" and key in owners:
            messages.append(f"setting '{key}' ({flag_name(key)}) applies to {', '.join(owners[key])}; not to {method} "
                            f"(in {source})")
        elif item["type"] == "extra_forbidden":
            messages.append(f"unknown setting '{key}' in {source}{suggest(key, [*fields, *owners])}")
        elif item["type"] == "missing":
            description = settings.model_fields[key].description if key in settings.model_fields else None
            what = f" ({description})" if description else ""
            messages.append(f"missing required setting '{key}' in {source}{what}")
        elif not item["loc"]:  # a check across settings
            messages.append(f"{item['msg'].removeprefix('Value error, ')} (in {source})")
        else:
            value = item.get("input")
            shown = f" (got {value!r})" if not isinstance(value, dict) else ""
            messages.append(f"invalid '{key}' in {source}: {item['msg']}{shown}")
    return "; ".join(messages)


def load_config_file(path: Path) -> dict:
    """Read a YAML config file into a dict of settings; errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise TransferlabError(f"config file {path} is a directory; --config takes a YAML file of settings")
    if not path.is_file():
        raise TransferlabError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # a date like 2001-13-45, deep [[[
        raise TransferlabError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise TransferlabError(f"config file {path} must hold a mapping of settings, got {type(values).__name__}")
    return {str(key).replace("-", "_"): value for key, value in values.items()}
