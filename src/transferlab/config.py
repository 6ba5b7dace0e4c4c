"""`FitConfig`: every setting of a `fit` run, from a YAML file, the command line or Python, validated in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from transferlab.errors import TransferlabError, suggest

__all__ = ["FitConfig", "load_config_file", "build_config", "RECIPES"]

Method = Literal["scratch", "features", "finetune", "seed-recipe", "joint"]


class FitConfig(BaseModel):
    """Settings of one training run. Field names are the YAML keys; ``--some-flag`` on the CLI is ``some_flag``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    # data
    train: str = Field(description="training data spec (folder, CSV, sklearn-digits, mnist:DIR, usps:DIR)")
    val: str | None = Field(None, description="validation data spec; default: a stratified split of train")
    test: str | None = Field(None, description="optional test data spec, evaluated once at the end")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="fraction of train held out when no val is given")
    labels_per_class: int | None = Field(None, ge=1, description="keep N labeled training examples per class")
    skip_bad_files: bool = Field(False, description="skip unreadable images with a warning instead of failing")

    # model
    method: Method = "finetune"
    backbone: str = "efficientnet_lite0"
    weights: Path | None = Field(None, description="local .safetensors/.pth backbone weights, or a run directory")
    pretrained: bool = Field(True, description="start from pretrained weights (ignored by 'scratch')")
    image_size: int | None = Field(None, ge=8, description="input size in pixels; default: the backbone's own")
    pool: Literal["avg", "flatten"] = "avg"
    head: Literal["logistic", "linear", "mlp"] = Field(
        "linear", description="'logistic' (scikit-learn, features only), 'linear' or 'mlp'"
    )
    head_hidden: list[int] = Field(default_factory=lambda: [512], description="hidden sizes of the mlp head")
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
    scheduler: Literal["cosine", "onecycle", "constant"] = "cosine"
    patience: int | None = Field(None, ge=1, description="stop after N epochs without val improvement")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="'auto': bf16 where the CPU/GPU has it")
    seed: int = 0
    num_workers: int | None = Field(None, ge=0, description="image decoding processes; default: automatic")

    # joint source + target training (method 'joint'): L_S + lambda * L_T
    source: str | None = Field(None, description="labeled source-domain data spec (method 'joint')")
    lambda_: float = Field(1.0, alias="lambda", ge=0, description="weight of the target loss: L_S + lambda * L_T")
    lambda_warmup_epochs: int = Field(
        0, ge=0, description="ramp lambda linearly from lambda/N to lambda over the first N epochs (source-heavy first)"
    )
    source_share: float = Field(0.5, gt=0, lt=1, description="share of each joint batch drawn from the source")
    separate_heads: bool | None = Field(
        None, description="one head per domain; default: only when the class names of the two domains differ"
    )
    steps_per_epoch: int | None = Field(None, ge=1, description="joint steps per epoch; default: one pass over the larger domain")

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

    @model_validator(mode="after")
    def _check_combinations(self) -> "FitConfig":
        if self.head == "logistic" and self.method != "features":
            raise ValueError(f"head 'logistic' works only with method 'features', not '{self.method}'")
        if self.method == "joint" and self.source is None:
            raise ValueError("method 'joint' needs labeled source data: set source (--source SPEC)")
        if self.method == "joint" and self.batch_size < 2:
            raise ValueError(f"method 'joint' draws both domains in every batch: batch_size must be at least 2, got {self.batch_size}")
        if self.resume and self.overwrite:
            raise ValueError("choose either resume or overwrite, not both")
        return self


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
