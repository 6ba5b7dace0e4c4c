"""`TransferModel`: a backbone plus a classification head, with class names and preprocessing (kind ``classifier``)."""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field
from torch import nn

from transferlab.artifacts import save_weights, write_model_info
from transferlab.backbones.base import Backbone
from transferlab.data import load_data
from transferlab.errors import TransferlabError
from transferlab.evaluate import confusion_lines, evaluate_model, predict_proba
from transferlab.fileio import read_json
from transferlab.models.base import DataOptions, FrozenBatchNormMixin, Predictor, rebuild_saved, register_kind
from transferlab.models.heads import build_head
from transferlab.models.info import HeadInfo, ModelInfo, read_info

__all__ = ["ClassifierInfo", "TransferModel", "HeadSettings", "build_saved_head", "refuse_task"]

HeadSettings = dict  # {"kind": head kind, "hidden": hidden sizes, "dropout": p}: what `build_head` takes


def refuse_task(options: DataOptions, run_dir_kind: str) -> None:
    """``--task`` names a task of a multi-task run; any other kind refuses it."""
    if options.task is not None:
        raise TransferlabError(f"--task {options.task} is for multi-task runs; this run holds a {run_dir_kind}")


@register_kind
class TransferModel(FrozenBatchNormMixin, Predictor):
    """``head(backbone(x))`` with the class names it predicts.

    Args:
        backbone: any `Backbone`.
        head: a module mapping ``(B, backbone.num_features)`` to ``(B, len(classes))`` logits.
        classes: class names, in logit order.
        head_settings: how ``head`` was built (kind, hidden sizes, dropout), saved to rebuild it.
        cache_features: the backbone is a frozen pretrained one (a ``features`` run): its embeddings may be read
            from and written to the feature cache when evaluating and predicting.
    """

    kind = "classifier"
    onnx_refusal = None

    def __init__(self, backbone: Backbone, head: nn.Module, classes: list[str],
                 head_settings: HeadSettings | None = None,
                 *, cache_features: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.classes = list(classes)
        self.head_settings = dict(head_settings or {"kind": "linear", "hidden": [], "dropout": 0.0})
        self.cache_features = cache_features
        self.feature_engine = "torch"  # what embeds for the cache; a features run sets its --engine (not saved)

    @property
    def preprocess(self):
        return self.backbone.preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        """The backbone's named groups (prefixed ``backbone.``) followed by a ``head`` group, input to output."""
        return [*self._backbone_groups(), ("head", [f"head.{name}" for name, _ in self.head.named_parameters()])]

    def _backbone_groups(self) -> list[tuple[str, list[str]]]:
        return [(f"backbone.{name}", [f"backbone.{p}" for p in params])
                for name, params in self.backbone.parameter_groups()]

    # --- the predictor contract ------------------------------------------------------------------------------

    def load_eval_data(self, spec, options):
        refuse_task(options, "single-task classifier")
        return load_data(spec, split_preference=("test", "val", "all"), skip_bad_files=options.skip_bad_files,
                         columns=options.columns)

    def evaluate(self, data, *, precision="auto", num_workers=None):
        """Accuracy, macro-F1 and confusion matrix (`transferlab.evaluate.evaluate_model`)."""
        return evaluate_model(self, data, precision=precision, num_workers=num_workers,
                              feature_cache=self.cache_features, feature_engine=self.feature_engine)

    def predict(self, data, *, precision="auto", num_workers=None):
        """``{"label": best class, "probabilities": {class: p}}`` per example."""
        probabilities = predict_proba(self, data, precision=precision, num_workers=num_workers,
                                      feature_cache=self.cache_features, feature_engine=self.feature_engine)
        return self.rows_from_predictions({"probabilities": probabilities})

    def prediction_outputs(self, batch):
        """``{"probabilities": (B, len(classes))}``, the softmax of the logits."""
        return {"probabilities": torch.softmax(self(batch), dim=1)}

    def rows_from_predictions(self, predictions):
        return [{"label": self.classes[int(row.argmax())],
                 "probabilities": {name: float(p) for name, p in zip(self.classes, row, strict=True)}}
                for row in predictions["probabilities"]]

    def output_decisions(self):
        return {"probabilities": "argmax"}

    def export_description(self):
        return {"classes": self.classes,
                "outputs": {"probabilities": "(batch, classes) softmax probabilities, in the order of 'classes'"}}

    def prediction_table(self, rows):
        columns = ["label", *[f"p_{name}" for name in self.classes]]
        return columns, [[row["label"], *[f"{row['probabilities'][c]:.6f}" for c in self.classes]] for row in rows]

    def metric_lines(self, metrics, *, detail=False):
        averaged = metrics.get("macro_f1_classes", metrics["classes"])
        over = f" (over the {len(averaged)} of {len(metrics['classes'])} classes the data has)" \
            if len(averaged) < len(metrics["classes"]) else ""
        if not detail:
            return [f"accuracy: {metrics['accuracy']:.4f}  macro-F1: {metrics['macro_f1']:.4f}{over}"]
        return [f"examples: {metrics['n']}", f"accuracy: {metrics['accuracy']:.4f}",
                f"macro-F1: {metrics['macro_f1']:.4f}{over}", "confusion matrix (rows: true, columns: predicted):",
                *confusion_lines(metrics["classes"], metrics["confusion_matrix"])]

    @classmethod
    def headline_metrics(cls, metrics):
        return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}

    def save(self, run_dir: Path) -> None:
        save_weights(run_dir, self)
        if hasattr(self.preprocess, "save"):  # a text tokenizer or an audio feature extractor: files of their own
            self.preprocess.save(run_dir)
        write_model_info(run_dir, self.kind, {**self._architecture(), "classes": self.classes,
                                              "cache_features": self.cache_features})

    def _architecture(self) -> dict:
        return {"backbone": self.backbone.spec, "num_features": self.backbone.num_features, "head": self.head_settings,
                "preprocess": self.preprocess.to_dict()}

    @classmethod
    def wrote(cls, info):
        return "classes" in info and "tasks" not in info

    @classmethod
    def from_run_dir(cls, run_dir, info):
        saved = read_info(ClassifierInfo, run_dir, info)
        cache_features = saved.cache_features if saved.cache_features is not None else _legacy_features_run(run_dir)

        def build(backbone):
            return cls(backbone, build_saved_head(saved, len(saved.classes)), saved.classes, saved.head.model_dump(),
                       cache_features=cache_features)

        return rebuild_saved(run_dir, saved, build)


class ClassifierInfo(ModelInfo):
    """``model.json`` of a ``classifier`` run."""

    head: HeadInfo = Field(description="how the head was built")
    classes: list[str] = Field(min_length=1, description="the class names, in logit order")
    cache_features: bool | None = None


def build_saved_head(info: ModelInfo, outputs: int) -> nn.Module:
    """A head as ``model.json``'s ``head`` settings describe it, with ``outputs`` outputs."""
    head = info.head
    return build_head(head.kind, info.num_features, outputs, list(head.hidden), head.dropout)


def _legacy_features_run(run_dir: Path) -> bool:
    """Run directories written before ``cache_features`` was recorded: a ``features`` run's config says so."""
    config = Path(run_dir) / "config.json"
    if not config.is_file():
        return False
    saved = read_json(config)
    return isinstance(saved, dict) and saved.get("method") == "features"
