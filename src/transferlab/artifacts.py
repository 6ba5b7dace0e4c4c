"""Run directories: save a trained `TransferModel` as safetensors + JSON, and load it back without the training code.

Layout::

    RUN_DIR/
      model.safetensors   weights of backbone and head
      tokenizer/          text runs: the backbone's tokenizer (feature_extractor/ for Hugging Face audio encoders)
      model.json          architecture spec, head, class names (or, for a multi-task model, every task: name,
                          type, classes or target scaling), preprocessing (enough to rebuild the model)
      config.json         every setting of the run
      metrics.json        final metrics (validation, test, timings)
      history.csv         per-epoch metrics
      ctc/                speech-recognition runs (model.json "kind": "ctc"): the transformers CTC model and its
                          processor, saved with save_pretrained, instead of model.safetensors
      checkpoint.pt       last training state, for --resume
      best.safetensors    weights of the best epoch so far (what training restores at its end)
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from transferlab.backbones import rebuild_backbone
from transferlab.backbones.preprocess import preprocess_from_dict
from transferlab.errors import TransferlabError
from transferlab.fileio import atomic_path, read_json, write_json
from transferlab.model import MultiTaskModel, TransferModel, build_head
from transferlab.tasks import task_from_dict

__all__ = ["save_model", "load", "FORMAT"]

FORMAT = "transferlab-model/1"
MODEL_WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"


def save_model(run_dir: Path, model: TransferModel, head_settings: dict) -> None:
    """Write ``model.safetensors`` and ``model.json``; ``head_settings`` = kind, hidden sizes, dropout."""
    run_dir = Path(run_dir)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(run_dir / MODEL_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    if hasattr(model.preprocess, "save"):  # a text tokenizer or an audio feature extractor: files of their own
        model.preprocess.save(run_dir)
    write_json(
        run_dir / MODEL_JSON,
        {
            "format": FORMAT,
            "backbone": model.backbone.spec,
            "num_features": model.backbone.num_features,
            "head": head_settings,
            "classes": model.classes,
            **({"tasks": [task.to_dict() for task in model.tasks]} if isinstance(model, MultiTaskModel) else {}),
            "preprocess": model.preprocess.to_dict(),
        },
    )


def load(run_dir: str | Path) -> TransferModel | MultiTaskModel:
    """Rebuild the trained model of a run directory (eval mode, on the CPU)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TransferlabError(f"run directory not found: {run_dir}")
    if not (run_dir / MODEL_JSON).is_file():
        raise TransferlabError(f"{run_dir} holds no trained model ({MODEL_JSON} missing): did its fit finish?")
    info = read_json(run_dir / MODEL_JSON)
    if info.get("format") != FORMAT:
        raise TransferlabError(f"{run_dir / MODEL_JSON} has format {info.get('format')!r}, expected {FORMAT!r}")
    if info.get("kind") == "ctc":  # speech recognition: a transformers CTC model saved with save_pretrained
        from transferlab.speech.recognizer import load_recognizer

        return load_recognizer(run_dir)
    backbone = rebuild_backbone(info["backbone"])
    backbone.preprocess = preprocess_from_dict(info["preprocess"], run_dir)
    head = info["head"]

    def make_head(outputs: int):
        return build_head(head["kind"], info["num_features"], outputs, head.get("hidden", []), head.get("dropout", 0.0))

    if "tasks" in info:
        tasks = [task_from_dict(values) for values in info["tasks"]]
        model = MultiTaskModel(backbone, {task.name: make_head(task.num_outputs) for task in tasks}, tasks)
    else:
        model = TransferModel(backbone, make_head(len(info["classes"])), info["classes"])
    try:
        state = load_file(str(run_dir / MODEL_WEIGHTS))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise TransferlabError(f"cannot read weights {run_dir / MODEL_WEIGHTS}: {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise TransferlabError(f"weights in {run_dir / MODEL_WEIGHTS} do not fit {run_dir / MODEL_JSON}: {exc}") from None
    return model.eval()
