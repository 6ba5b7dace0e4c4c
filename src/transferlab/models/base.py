"""The one contract every trained model kind keeps, and the registry that maps a run directory's kind to it.

A *model kind* (a classifier, a multi-task model, a speech recogniser, ...) is one `Predictor` subclass registered
with `register_kind`. It answers for itself how it reads evaluation data, evaluates, predicts, prints its metrics,
and saves to / loads from a run directory, so `transferlab.api`, the CLI and `transferlab.artifacts` never branch on
the kind of model they hold. A run directory's ``model.json`` names its kind; `load_predictor` dispatches on it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from transferlab.artifacts import (
    MODEL_JSON,
    check_weight_shapes,
    load_weights,
    read_model_info,
)
from transferlab.backbones import rebuild_backbone
from transferlab.backbones.base import Backbone
from transferlab.backbones.preprocess import preprocess_from_dict
from transferlab.data.text_tables import TextColumns
from transferlab.errors import TransferlabError, suggest
from transferlab.models.info import ModelInfo

__all__ = ["DataOptions", "FrozenBatchNormMixin", "KINDS", "Predictor", "load_predictor", "predictor_class",
           "rebuild_saved", "register_kind"]

log = logging.getLogger("transferlab")


@dataclass(frozen=True)
class DataOptions:
    """How a user's data is read for evaluation or prediction: bad files, text columns, and (multi-task runs) the
    one task to evaluate."""

    skip_bad_files: bool = False
    columns: TextColumns = field(default_factory=TextColumns)
    task: str | None = None


class Predictor(nn.Module):
    """A trained model of one kind. Subclasses set `kind` and implement every method below (``prediction_table`` or
    ``prediction_lines``; ``format_predictions`` and ``draw_predictions`` where ``output_formats`` and
    ``draws_predictions`` say so).

    ``evaluate`` and ``predict`` take the data object their kind reads (`load_eval_data` makes it from a spec for
    evaluation; prediction takes the examples a user points at: `transferlab.data.ImageData`, ``TextData`` or
    ``AudioData``).
    """

    kind: ClassVar[str]
    # the --format values `transferlab predict` may write for this kind: csv (`prediction_table`), json (`predict`'s
    # rows) and any the kind writes itself (`format_predictions`)
    output_formats: ClassVar[tuple[str, ...]] = ("csv", "json")
    # keyword options `predict` takes beyond precision and num_workers (e.g. a detector's score_threshold)
    prediction_options: ClassVar[tuple[str, ...]] = ()
    # whether `draw_predictions` can draw predictions onto the input images (predict --draw)
    draws_predictions: ClassVar[bool] = False
    # headline metrics (see `headline_metrics`) where lower is better, e.g. error rates
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    # None when the kind exports to ONNX (`transferlab export`: the graph is `prediction_outputs`, read back by
    # `rows_from_predictions`); else why it cannot, in a few words, for the one line export and --engine onnx print
    onnx_refusal: ClassVar[str | None] = "transferlab has no ONNX export for this kind of model"
    # whether `predict` and `evaluate` may read and fill the embedding cache (a kind whose backbone can be a frozen
    # pretrained one sets it per model, e.g. a ``features`` run); `transferlab serve` turns it off: uploads are
    # one-off files from strangers, which must not grow the cache on disk
    cache_features: bool = False

    def load_eval_data(self, spec: str, options: DataOptions) -> Any:
        """The labeled data at ``spec`` in the form `evaluate` takes."""
        raise NotImplementedError

    def evaluate(self, data: Any, *, precision: str = "auto", num_workers: int | None = None) -> dict:
        """Metrics of this model on labeled ``data`` (a JSON-serialisable dict)."""
        raise NotImplementedError

    def predict(self, data: Any, *, precision: str = "auto", num_workers: int | None = None) -> list[dict]:
        """One JSON-serialisable dict per example of ``data``."""
        raise NotImplementedError

    def prediction_table(self, rows: list[dict]) -> tuple[list[str], list[list[str]]]:
        """``(columns, cells)``: `predict`'s rows as CSV columns, one line per example (the example's name column is
        added by the caller). Kinds with several lines per example implement `prediction_lines` instead."""
        raise NotImplementedError

    def prediction_lines(self, rows: list[dict]) -> tuple[list[str], list[tuple[int, list[str]]]]:
        """``(columns, [(example index, cells), ...])``: `predict`'s rows as CSV lines, each with the example it
        belongs to; by default one per example (`prediction_table`), several for kinds that find several things
        in one example (a detector: one line per box)."""
        columns, cells = self.prediction_table(rows)
        return columns, list(enumerate(cells))

    def format_predictions(self, rows: list[dict], names: list[str], output_format: str) -> str:
        """`predict`'s rows for the examples ``names`` as a document in one of the kind's own `output_formats`
        (those beyond csv and json)."""
        raise NotImplementedError

    def draw_predictions(self, data: Any, rows: list[dict], out_dir: Path) -> list[Path]:
        """Write the examples of ``data`` with `predict`'s ``rows`` drawn on them into ``out_dir`` (never over an
        input); return the files written. Kinds with `draws_predictions` implement it."""
        raise NotImplementedError

    def prediction_outputs(self, batch: Any) -> dict[str, torch.Tensor]:
        """What an exported model computes from a batch of inputs (the tensor or dict the kind's preprocessing
        makes): named ``(B, ...)`` outputs a user reads (probabilities, values), never raw logits. ONNX export
        traces this method; kinds with an `onnx_refusal` need not implement it."""
        raise NotImplementedError

    def rows_from_predictions(self, predictions: dict[str, np.ndarray]) -> list[dict]:
        """`predict`'s rows from the values of `prediction_outputs` over every example (what the ONNX engine gives),
        so both engines print the same rows."""
        raise NotImplementedError

    def output_decisions(self) -> dict[str, str]:
        """How outputs of `prediction_outputs` become what a user reads, for the export's parity check: ``"argmax"``
        (the top column is the class) or ``"threshold"`` (every column at >= 0.5 is a class, multi-label). Outputs
        not named are values, compared within tolerance only. Kinds with an `onnx_refusal` need not implement it."""
        raise NotImplementedError

    def export_description(self) -> dict:
        """What an exported model's outputs hold, for the JSON beside it: e.g. ``{"classes": [...], "outputs":
        {name: meaning}}``."""
        raise NotImplementedError

    def metric_lines(self, metrics: dict, *, detail: bool = False) -> list[str]:
        """`evaluate`'s metrics as text lines; ``detail`` adds what a full evaluation report shows (e.g. a confusion
        matrix) to the one-glance summary."""
        raise NotImplementedError

    @classmethod
    def headline_metrics(cls, metrics: dict) -> dict[str, float]:
        """The few numbers of `evaluate`'s ``metrics`` that reports compare across runs, the main one first (what a
        leaderboard ranks by and verdicts judge); names in `lower_is_better` are better when smaller."""
        raise NotImplementedError

    def save(self, run_dir: Path) -> None:
        """Write the model into ``run_dir`` (``model.json`` with this `kind`, weights, preprocessing files)."""
        raise NotImplementedError

    @classmethod
    def from_run_dir(cls, run_dir: Path, info: dict) -> "Predictor":
        """Rebuild the model saved in ``run_dir`` whose ``model.json`` is ``info`` (eval mode, CPU)."""
        raise NotImplementedError

    @classmethod
    def wrote(cls, info: dict) -> bool:
        """Whether ``model.json`` without a ``kind`` (transferlab 0.1 did not record one) holds this kind."""
        return False


class FrozenBatchNormMixin(nn.Module):
    """``train()`` leaves BatchNorm layers whose parameters are all frozen in eval mode, so frozen parts keep their
    pretrained running statistics."""

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    params = list(module.parameters(recurse=False))
                    if params and not any(p.requires_grad for p in params):
                        module.eval()
        return self


KINDS: dict[str, type[Predictor]] = {}


def register_kind(cls: type[Predictor]) -> type[Predictor]:
    """Class decorator: run directories whose ``model.json`` says ``"kind": cls.kind`` load with ``cls``."""
    KINDS[cls.kind] = cls
    return cls


def load_predictor(run_dir: str | Path) -> Predictor:
    """Rebuild the trained model of a run directory, whatever its kind (eval mode, on the CPU)."""
    run_dir = Path(run_dir)
    info = read_model_info(run_dir)
    return predictor_class(run_dir, info).from_run_dir(run_dir, info).eval()


def predictor_class(run_dir: str | Path, info: dict | None = None) -> type[Predictor]:
    """The `Predictor` class of the model saved in ``run_dir`` (its ``model.json``, or ``info`` when given), without
    loading the model: what reads only a run's files (e.g. its metrics) asks it."""
    info = read_model_info(Path(run_dir)) if info is None else info
    kind = info.get("kind") or next((name for name, cls in KINDS.items() if cls.wrote(info)), "none")
    if kind not in KINDS:
        raise TransferlabError(f"{run_dir} holds a model of kind {kind!r}, which this version of transferlab does not "
                               f"know{suggest(kind, KINDS)}; known kinds: {', '.join(KINDS)}")
    return KINDS[kind]


def rebuild_saved(run_dir: Path, info: ModelInfo, build: Callable[[Backbone], Predictor]) -> Predictor:
    """The model of a run directory: ``build(backbone)`` on the backbone ``info`` describes, with the saved weights
    and preprocessing.

    The architecture is first built on the meta device (no memory) and compared with the tensors the weights file
    holds, so a ``model.json`` that does not describe its weights is an error naming both, never an allocation of
    whatever sizes it claims. (A backbone that cannot be built on the meta device skips this comparison; loading
    the weights still checks every name and shape.)
    """
    spec = info.backbone.model_dump(exclude_unset=True)
    try:
        # a dry run: what a backbone does with memory it does not have (e.g. copy packaged weights) is moot
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            skeleton = build(_saved_backbone(run_dir, info, spec))
    except TransferlabError:
        raise
    except Exception as exc:  # noqa: BLE001 - only the early comparison is skipped; the real build follows
        log.debug("cannot build %s on the meta device (%s): weights are compared when loaded", spec["name"], exc)
        skeleton = None
    if skeleton is not None:
        check_weight_shapes(run_dir, {name: tuple(t.shape) for name, t in skeleton.state_dict().items()})
    backbone = _saved_backbone(run_dir, info, spec)
    backbone.preprocess = preprocess_from_dict(info.preprocess, run_dir)
    model = build(backbone)
    load_weights(run_dir, model)
    return model


def _saved_backbone(run_dir: Path, info: ModelInfo, spec: dict) -> Backbone:
    backbone = rebuild_backbone(spec)
    if backbone.num_features != info.num_features:
        raise TransferlabError(f"{Path(run_dir) / MODEL_JSON} says num_features {info.num_features}, but its backbone "
                               f"{spec['name']!r} gives {backbone.num_features}")
    return backbone
