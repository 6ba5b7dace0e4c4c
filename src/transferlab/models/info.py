"""What a run's ``model.json`` must hold, checked before anything is rebuilt from it.

Each model kind declares its ``model.json`` as a pydantic model (a `ModelInfo` subclass: the backbone, the feature
size and the preprocessing every kind has, plus its own fields) and reads it with `read_info`. A file that lacks a
field or holds a value of the wrong type or range is one `TransferlabError` naming the file, what wrote it (its
``format`` and ``kind``) and every bad field, instead of a ``KeyError`` deep inside a constructor. Sizes are bounded
so that no value can ask for an absurd allocation before the weights file is compared with the architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from transferlab.artifacts import MODEL_JSON
from transferlab.config import HEADS
from transferlab.errors import TransferlabError

__all__ = ["BackboneInfo", "HeadInfo", "ModelInfo", "TASKS", "read_info"]

MAX_SIZE = 1 << 20  # features, hidden units, tokens, samples per second: far above any real model
MAX_IMAGE_SIZE = 1 << 14
Size = Annotated[int, Field(ge=1, le=MAX_SIZE)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Text = Annotated[str, Field(min_length=1)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class BackboneInfo(_Part):
    """``backbone``: what `transferlab.backbones.rebuild_backbone` builds the architecture from (more keys allowed:
    each backbone family keeps its own, e.g. ``hf_config``)."""

    name: Text = Field(description="the backbone's name")
    modality: Literal["image", "text", "audio"] | None = None
    pool: Literal["avg", "flatten", "cls"] = "avg"
    image_size: int | None = Field(None, ge=8, le=MAX_IMAGE_SIZE)
    num_features: Size | None = None


class HeadInfo(_Part):
    """``head``: how the classification head(s) were built."""

    kind: Literal[HEADS] = Field(description="the head's kind")
    hidden: list[Size] = []
    dropout: float = Field(0.0, ge=0, lt=1)


class ImagePreprocessInfo(_Part):
    model_config = ConfigDict(extra="forbid", frozen=True)

    modality: Literal["image"] = "image"
    input_size: tuple[Literal[1, 3], Annotated[int, Field(ge=1, le=MAX_IMAGE_SIZE)],
                      Annotated[int, Field(ge=1, le=MAX_IMAGE_SIZE)]] = Field(
        description="(channels, height, width) of the backbone's input")
    mean: list[Finite] = Field(min_length=1, max_length=3, description="per-channel mean of the normalisation")
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        min_length=1, max_length=3, description="per-channel standard deviation of the normalisation")
    interpolation: Literal["nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"] = "bilinear"
    crop_pct: float = Field(1.0, gt=0, le=1)
    crop_mode: Literal["center", "squash", "border"] = "center"

    @model_validator(mode="after")
    def _one_value_per_channel(self):
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.input_size[0]):
                raise ValueError(f"'{name}' needs 1 or {self.input_size[0]} values (one per channel), got "
                                 f"{len(getattr(self, name))}")
        return self


class TextPreprocessInfo(_Part):
    modality: Literal["text"]
    max_length: int = Field(ge=2, le=MAX_SIZE, description="tokens kept per text")
    tokenizer: Text = "tokenizer"


class AudioPreprocessInfo(_Part):
    modality: Literal["audio"]
    sampling_rate: Size = Field(description="samples per second the backbone reads")
    max_seconds: float = Field(gt=0, allow_inf_nan=False, description="seconds kept per clip")
    feature_extractor: Text | None = None
    extra: dict = {}


PREPROCESS = {"image": ImagePreprocessInfo, "text": TextPreprocessInfo, "audio": AudioPreprocessInfo}


class ModelInfo(_Part):
    """What every kind's ``model.json`` holds: the format, the kind, the backbone, its feature size and the
    preprocessing (checked by its modality's schema: images, text or audio)."""

    format: str
    kind: str | None = None
    backbone: BackboneInfo = Field(description="the backbone architecture")
    num_features: Size = Field(description="the backbone's feature size")
    preprocess: dict = Field(description="how inputs are preprocessed")

    def parts(self) -> list[tuple[str, type[BaseModel], object]]:
        """``(where, schema, values)`` of the parts whose schema depends on a value (`read_info` checks them)."""
        return [("preprocess", PREPROCESS[self.preprocess.get("modality", "image")], self.preprocess)]

    @model_validator(mode="after")
    def _known_modality(self):
        modality = self.preprocess.get("modality", "image")
        if not isinstance(modality, str) or modality not in PREPROCESS:
            raise ValueError(f"preprocess.modality must be one of {', '.join(PREPROCESS)}, got {modality!r}")
        return self


class _Task(_Part):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Text = Field(description="the task's name")
    column: str | None = None


class _ClassesTask(_Task):
    classes: list[str] = Field(min_length=1, description="the task's class names")


class ClassificationTaskInfo(_ClassesTask):
    type: Literal["classification"]


class MultiLabelTaskInfo(_ClassesTask):
    type: Literal["multilabel"]


class RegressionTaskInfo(_Task):
    type: Literal["regression"]
    mean: Finite = 0.0
    std: float = Field(1.0, ge=0, allow_inf_nan=False)


TASKS = {"classification": ClassificationTaskInfo, "multilabel": MultiLabelTaskInfo, "regression": RegressionTaskInfo}

Info = TypeVar("Info", bound=BaseModel)


def read_info(schema: type[Info], run_dir: Path, info: dict) -> Info:
    """``info`` (a run's ``model.json``) validated by its kind's ``schema``, and then its `ModelInfo.parts`.

    Raises:
        TransferlabError: naming the file, its format and kind, and every missing or invalid field.
    """
    try:
        model = schema.model_validate(info)
    except ValidationError as exc:
        raise TransferlabError(_message(Path(run_dir), info, _problems(exc, schema))) from None
    problems = []
    for where, part, values in model.parts():
        try:
            part.model_validate(values)
        except ValidationError as exc:
            problems += _problems(exc, part, where)
    if problems:
        raise TransferlabError(_message(Path(run_dir), info, problems))
    return model


def _problems(exc: ValidationError, schema: type[BaseModel], prefix: str = "") -> list[str]:
    problems = []
    for item in exc.errors():
        key = ".".join([prefix] * bool(prefix) + [str(part) for part in item["loc"]])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            field = schema.model_fields.get(str(item["loc"][0])) if len(item["loc"]) == 1 else None
            problems.append(f"missing '{key}'" + (f" ({field.description})" if field and field.description else ""))
        elif not key:
            problems.append(message)
        else:
            shown = item.get("input")
            problems.append(f"'{key}': {message}" + (f" (got {_short(shown)})" if not isinstance(shown, dict) else ""))
    return problems


def _message(run_dir: Path, info: dict, problems: list[str]) -> str:
    written = f"format {info.get('format')!r}" + (f", kind {info['kind']!r}" if info.get("kind") else "")
    shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
    return (f"{run_dir / MODEL_JSON} ({written}) cannot be loaded: {shown}; was it edited, or written by another "
            "program?")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
