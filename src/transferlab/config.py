"""`FitConfig`: every setting of a `fit` run, from a YAML file, the command line or Python, validated in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from transferlab.errors import TransferlabError, suggest

__all__ = ["FitConfig", "TaskSpec", "ADAPTATION_METHODS", "SCORERS", "WEIGHTINGS", "HEADS", "SCHEDULERS", "load_config_file", "build_config", "parse_task_list", "RECIPES"]

# unsupervised domain adaptation: labeled --source, unlabeled --target
ADAPTATION_METHODS = ("source-only", "dann", "cdan", "dan", "coral", "mcc", "mdd", "self-training")
Method = Literal[("scratch", "features", "finetune", "seed-recipe", "joint", "multitask", "lora", "ctc",
                  *ADAPTATION_METHODS)]
# label-free checkpoint scorers of the adaptation methods (transferlab.methods.adaptation.selection), and the oracle
SCORERS = ("source-accuracy", "dev", "iwv", "entropy", "snd", "oracle")
Scorer = Literal[SCORERS]
TaskType = Literal["classification", "multilabel", "regression"]
# weightings that balance several losses (transferlab.methods.weighting): meaningless for a single task
MULTI_LOSS_WEIGHTINGS = ("uncertainty", "dwa", "gradnorm", "upgrad", "pcgrad", "cagrad", "mgda", "imtl-g", "aligned-mtl",
                         "dualproj")
WEIGHTINGS = ("fixed", *MULTI_LOSS_WEIGHTINGS)
Weighting = Literal[WEIGHTINGS]
# classification heads (transferlab.model.build_head) and learning-rate schedules (transferlab.engine.optim)
HEADS = ("logistic", "linear", "mlp", "bottleneck")
SCHEDULERS = ("cosine", "onecycle", "inverse", "constant")


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


class FitConfig(BaseModel):
    """Settings of one training run. Field names are the YAML keys; ``--some-flag`` on the CLI is ``some_flag``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    # data
    train: str | None = Field(
        None, description="training data spec (folder, CSV, sklearn-digits, mnist:DIR, usps:DIR); required unless "
        "every multitask task has its own data"
    )
    val: str | None = Field(None, description="validation data spec; default: a stratified split of train")
    test: str | None = Field(None, description="optional test data spec, evaluated once at the end")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="fraction of train held out when no val is given")
    labels_per_class: int | None = Field(None, ge=1, description="keep N labeled training examples per class")
    classes: list[str] | None = Field(
        None, description="keep only the examples of these classes in every dataset (e.g. 'positive,negative')"
    )
    skip_bad_files: bool = Field(False, description="skip unreadable images or audio files with a warning instead of failing")
    text_column: str | None = Field(None, description="text column of CSV/TSV/JSONL data; default: 'text', else 'sentence'")
    label_column: str = Field("label", description="label column of CSV/TSV/JSONL text data and audio manifests")
    transcript_column: str = Field("transcript", description="transcript column of speech-recognition manifests (ctc)")
    empty_texts: Literal["skip", "error"] = Field(
        "skip", description="empty or whitespace-only texts: skip them with a warning and a count, or fail"
    )
    max_length: int = Field(128, ge=2, description="text backbones: tokens kept per text (longer texts are truncated)")
    max_seconds: float = Field(10.0, gt=0, description="audio backbones: seconds kept per clip (longer clips are cut)")

    # model
    method: Method = "finetune"
    backbone: str | None = Field(
        None, description="backbone name; default by the data's modality: efficientnet_lite0 (images), "
        "sentence-transformers/all-MiniLM-L6-v2 (text), resemblyzer (audio), all offline"
    )
    weights: Path | None = Field(None, description="local .safetensors/.pth backbone weights, or a run directory")
    pretrained: bool = Field(True, description="start from pretrained weights (ignored by 'scratch')")
    image_size: int | None = Field(None, ge=8, description="input size in pixels; default: the backbone's own")
    pool: Literal["avg", "flatten", "cls"] = Field(
        "avg", description="'avg' (images: global average; text/audio: mean over real tokens/frames), 'flatten' "
        "(images: flattened feature map), 'cls' (text: the first token)"
    )
    head: Literal[HEADS] = Field(
        "linear", description="'logistic' (scikit-learn, features only), 'linear', 'mlp', or 'bottleneck' (linear + "
        "batch norm + ReLU to head_hidden[0] features, then linear: the usual domain-adaptation head)"
    )
    head_hidden: list[int] = Field(default_factory=lambda: [512],
                                   description="hidden sizes of the mlp head; the width of the bottleneck head")
    dropout: float = Field(0.0, ge=0, lt=1)

    # fine-tuning
    freeze: str = Field("none", description="'all', 'none', N (first N parameter groups) or a name pattern")
    head_epochs: int = Field(1, ge=0, description="epochs that train only the head before unfreezing")
    layer_lr_ratio: float = Field(
        10.0, ge=1, description="head lr / first-group lr; groups in between decay geometrically"
    )
    l2sp_alpha: float = Field(0.0, ge=0, description="L2-SP weight toward the pretrained backbone weights")
    l2sp_beta: float = Field(0.0, ge=0, description="L2 weight on the new head (used with L2-SP)")
    augment: bool = Field(False, description="random crops, flips and colour jitter while training")

    # optimisation
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: float = Field(0.01, ge=0)
    scheduler: Literal[SCHEDULERS] = "cosine"
    patience: int | None = Field(None, ge=1, description="stop after N epochs without val improvement")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="'auto': bf16 where the CPU/GPU has it")
    seed: int = 0
    num_workers: int | None = Field(None, ge=0, description="image decoding processes; default: automatic")

    # joint source + target training (method 'joint'): L_S + lambda * L_T
    source: str | None = Field(None, description="labeled source-domain data spec (joint and adaptation methods)")
    lambda_: float = Field(1.0, alias="lambda", ge=0, description="weight of the target loss: L_S + lambda * L_T")
    lambda_warmup_epochs: int = Field(
        0, ge=0, description="ramp lambda linearly from lambda/N to lambda over the first N epochs (source-heavy first)"
    )
    source_share: float = Field(0.5, gt=0, lt=1, description="share of each joint batch drawn from the source")
    separate_heads: bool | None = Field(
        None, description="one head per domain; default: only when the class names of the two domains differ"
    )
    steps_per_epoch: int | None = Field(None, ge=1, description="joint steps per epoch; default: one pass over the larger domain")

    # multi-task learning (method 'multitask'): one backbone, one head per task
    tasks: list[TaskSpec] | None = Field(
        None, description="tasks: label columns of the train manifest ('a,b:regression') or task entries with data"
    )
    weighting: Weighting = Field("fixed", description="how task losses/gradients are combined")
    dwa_temperature: float = Field(2.0, gt=0, description="temperature T of dynamic weight averaging")
    gradnorm_alpha: float = Field(1.5, ge=0, description="restoring-force strength alpha of GradNorm")

    # domain adaptation (source-only, dann, cdan, dan, coral, mcc, mdd, self-training): --source + --target
    target: str | None = Field(None, description="target-domain data; labels, if any, are used only for reporting")
    trade_off: float = Field(1.0, ge=0, description="weight of the adaptation loss: CE_source + trade_off * L_adapt")
    selection: Scorer = Field(
        "source-accuracy", description="label-free checkpoint scorer: source-accuracy, dev, iwv, entropy, snd; 'oracle' reads "
        "target labels (reported as an oracle run)"
    )
    selection_samples: int = Field(2000, ge=10, description="target examples the scorers use each epoch (a sample)")
    discriminator_hidden: int = Field(1024, ge=1, description="hidden width of DANN/CDAN discriminators, MDD's head")
    cdan_entropy: bool = Field(True, description="CDAN+E: weight confident examples more in the discriminator loss")
    mcc_temperature: float = Field(2.5, gt=0, description="temperature of MCC's softmax")
    mdd_margin: float = Field(4.0, gt=0, description="margin gamma of MDD")
    pseudo_label_threshold: float = Field(0.9, gt=0, lt=1, description="self-training: minimum confidence")
    consistency: bool = Field(False, description="self-training: pseudo-labels from plain, loss on augmented views")

    # LoRA (method 'lora', through PEFT): low-rank adapters on the backbone, the head trained in full
    lora_r: int = Field(8, ge=1, description="rank r of the LoRA update")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha (the update is scaled by alpha / r)")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the LoRA branch")
    lora_targets: list[str] | None = Field(
        None, description="module names to adapt (e.g. query,value); default: the backbone's attention projections"
    )
    lora_save: Literal["merged", "adapter"] = Field(
        "merged", description="'merged': adapters folded into the weights (loads without PEFT); 'adapter': also save "
        "the adapter alone (adapter/ in the run directory)"
    )

    # output
    out: Path = Field(description="run directory to create")
    overwrite: bool = False
    resume: bool = False

    @field_validator("freeze")
    @classmethod
    def _check_freeze(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("freeze must be 'all', 'none', a number of groups or a parameter-name pattern")
        if value.lstrip("-").isdigit() and int(value) < 0:
            raise ValueError(f"freeze must not be negative, got {value}")
        return value.strip()

    @field_validator("classes", mode="before")
    @classmethod
    def _parse_classes(cls, value):
        if isinstance(value, str):
            value = [name.strip() for name in value.split(",") if name.strip()]
        if isinstance(value, list) and len(value) < 2:
            raise ValueError(f"classes must name at least two classes to keep, got {value!r}")
        return value

    @field_validator("lora_targets", mode="before")
    @classmethod
    def _parse_lora_targets(cls, value):
        if isinstance(value, str):
            names = [name.strip() for name in value.split(",") if name.strip()]
            if not names:
                raise ValueError("lora_targets must name at least one module, e.g. 'query,value'")
            return names
        return value

    @field_validator("tasks", mode="before")
    @classmethod
    def _parse_tasks(cls, value):
        if isinstance(value, str):
            return parse_task_list(value)
        if isinstance(value, list):
            return [parse_task_list(item)[0] if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> "FitConfig":
        self._check_data_roles()
        if self.head == "logistic" and self.method != "features":
            raise ValueError(f"head 'logistic' works only with method 'features', not '{self.method}'")
        if self.method == "joint" and self.source is None:
            raise ValueError("method 'joint' needs labeled source data: set source (--source SPEC)")
        if self.method == "joint" and self.batch_size < 2:
            raise ValueError(f"method 'joint' draws both domains in every batch: batch_size must be at least 2, got {self.batch_size}")
        if self.method == "ctc":
            self._check_ctc_settings()
        if self.method == "ctc" and self.backbone is None:
            raise ValueError("method 'ctc' fine-tunes a speech encoder with a CTC head: set backbone (--backbone) to a "
                             "wav2vec2-style model directory or Hugging Face name")
        if self.resume and self.overwrite:
            raise ValueError("choose either resume or overwrite, not both")
        return self

    # settings that mean nothing to speech recognition (a CTC head over characters), with their defaults
    _NOT_FOR_CTC = (("labels_per_class", None), ("classes", None), ("head", "linear"), ("pool", "avg"),
                    ("augment", False), ("l2sp_alpha", 0.0), ("l2sp_beta", 0.0))

    def _check_ctc_settings(self) -> None:
        given = [name for name, default in self._NOT_FOR_CTC if getattr(self, name) != default]
        if given:
            raise ValueError(f"method 'ctc' trains a CTC head on transcripts; these settings do not apply to it: "
                             f"{', '.join(given)}")

    def _check_data_roles(self) -> None:
        """Which data settings each kind of method needs: train, tasks, or source + target."""
        if self.method in ADAPTATION_METHODS:
            if self.source is None or self.target is None:
                raise ValueError(f"method '{self.method}' adapts labeled source data to target data: set source "
                                 "(--source SPEC) and target (--target SPEC)")
            if self.train is not None:
                raise ValueError(f"method '{self.method}' trains on source (labeled) and target (unlabeled) data; "
                                 "train is not used: give the labeled data as --source")
            if self.tasks is not None:
                raise ValueError(f"tasks are for method 'multitask', not '{self.method}'")
            return
        if self.target is not None:
            raise ValueError(f"target data is for the adaptation methods ({', '.join(ADAPTATION_METHODS)}), not "
                             f"'{self.method}' (joint trains on labeled target data given as train)")
        if self.method != "multitask":
            if self.tasks is not None:
                raise ValueError(f"tasks are for method 'multitask', not '{self.method}'")
            if self.train is None:
                raise ValueError("missing required setting 'train' (training data spec)")
            return
        if not self.tasks:
            raise ValueError("method 'multitask' needs tasks: --tasks COL1,COL2 (label columns of --train) or "
                             "task entries in the config")
        names = [task.name for task in self.tasks]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"task names must be unique; repeated: {', '.join(repeated)}")
        columns_without_manifest = [task.name for task in self.tasks if task.data is None and self.train is None]
        if columns_without_manifest:
            raise ValueError(f"task(s) {', '.join(columns_without_manifest)} read a label column of the training "
                             "manifest, but no train data is set (--train FILE.csv), and they have no data of their own")
        for task in self.tasks:
            if task.data is None and (task.val or task.test):
                raise ValueError(f"task '{task.name}' sets val/test data but no data of its own; "
                                 "use --val/--test manifests for manifest columns")
        if len(self.tasks) == 1 and self.weighting in MULTI_LOSS_WEIGHTINGS:
            raise ValueError(f"weighting '{self.weighting}' balances several tasks, but only one task "
                             f"('{self.tasks[0].name}') is given; use weighting 'fixed' or add tasks")


# Named recipes: fixed settings that a method name stands for.
RECIPES: dict[str, dict] = {
    # SEED.md section 5: VGG16 body (frozen) -> Flatten -> Dense(1024, relu) -> Dense(num_classes, softmax), Adam.
    "seed-recipe": {
        "backbone": "torchvision:vgg16",
        "pool": "flatten",
        "head": "mlp",
        "head_hidden": [1024],
        "freeze": "all",
        "head_epochs": 0,
        "optimizer": "adam",
        "weight_decay": 0.0,
        "scheduler": "constant",
    },
    "features": {"head": "logistic"},
    # domain adaptation: the bottleneck head of TLlib / CDAN / MDD / MCC code (linear + batch norm over both domains
    # + ReLU, 256 features the losses align); on MNIST -> USPS it lifted CDAN from 90.8 to 93.7 % (docs/benchmarks.md)
    **{method: {"head": "bottleneck", "head_hidden": [256]} for method in ADAPTATION_METHODS},
}


def _format_validation_error(error: ValidationError, source: str) -> str:
    messages = []
    fields = [*FitConfig.model_fields, *(f.alias for f in FitConfig.model_fields.values() if f.alias)]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "config"
        if item["type"] == "extra_forbidden":
            messages.append(f"unknown setting '{key}' in {source}{suggest(key, fields)}")
        elif item["type"] == "missing":
            messages.append(f"missing required setting '{key}' in {source}")
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
    if not path.is_file():
        raise TransferlabError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TransferlabError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise TransferlabError(f"config file {path} must hold a mapping of settings, got {type(values).__name__}")
    return {str(key).replace("-", "_"): value for key, value in values.items()}


def build_config(file_values: dict | None = None, overrides: dict | None = None, source: str = "config") -> FitConfig:
    """Merge recipe defaults < config-file values < command-line overrides and validate them.

    ``overrides`` holds only the flags the user actually gave (``None`` values are ignored).
    """
    values = dict(file_values or {})
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    method = values.get("method", FitConfig.model_fields["method"].default)
    recipe = RECIPES.get(method, {})
    user_keys = set(values)
    merged = {**{k: v for k, v in recipe.items() if k not in user_keys}, **values}
    try:
        return FitConfig(**merged)
    except ValidationError as exc:
        raise TransferlabError(_format_validation_error(exc, source)) from None
