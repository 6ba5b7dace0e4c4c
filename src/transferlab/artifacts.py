"""Run directories on disk: the files every model kind shares, written atomically and checked when read.

Layout::

    RUN_DIR/
      model.json          "format", "kind" (which `transferlab.models` class loads the run) and what that kind
                          needs to rebuild itself: architecture spec, heads, class names or tasks, preprocessing
      model.safetensors   the model's weights
      tokenizer/          text runs: the backbone's tokenizer (feature_extractor/ for Hugging Face audio encoders)
      config.json         every setting of the run
      metrics.json        final metrics (validation, test, timings)
      history.csv         per-epoch metrics
      checkpoint.pt       last training state, for --resume
      best.safetensors    weights of the best epoch so far (what training restores at its end)

This module knows the files, not the kinds: `transferlab.models.load_predictor` reads ``model.json`` here and hands
the run to the class registered for its kind.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from transferlab.errors import TransferlabError
from transferlab.fileio import atomic_path, read_json, write_json

__all__ = ["FORMAT", "MODEL_JSON", "MODEL_WEIGHTS", "check_weight_shapes", "load_weights", "read_model_info",
           "save_weights", "write_model_info"]

FORMAT = "transferlab-model/1"
MODEL_WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"


def save_weights(run_dir: Path, module: nn.Module) -> None:
    """Write ``module``'s state dict to ``run_dir/model.safetensors``."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
    with atomic_path(Path(run_dir) / MODEL_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})


def load_weights(run_dir: Path, module: nn.Module) -> None:
    """Load ``run_dir/model.safetensors`` into ``module`` (every key must match)."""
    path = Path(run_dir) / MODEL_WEIGHTS
    try:
        state = load_file(str(path))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise TransferlabError(f"cannot read weights {path}: {exc}") from None
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise TransferlabError(f"weights in {path} do not fit {Path(run_dir) / MODEL_JSON}: {exc}") from None


def check_weight_shapes(run_dir: Path, expected: dict[str, tuple[int, ...]]) -> None:
    """Compare the tensors ``model.safetensors`` holds (read from its header only) with the names and shapes of the
    architecture ``model.json`` describes, before that architecture is allocated.

    Raises:
        TransferlabError: the weights cannot be read, or do not fit: naming the first differences.
    """
    path = Path(run_dir) / MODEL_WEIGHTS
    try:
        with safe_open(str(path), framework="pt") as handle:
            saved = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise TransferlabError(f"cannot read weights {path}: {exc}") from None
    problems = [f"missing {key}" for key in expected if key not in saved]
    problems += [f"unexpected {key}" for key in saved if key not in expected]
    problems += [f"{key} is {list(saved[key])} in the weights, {list(shape)} in {MODEL_JSON}"
                 for key, shape in expected.items() if key in saved and saved[key] != shape]
    if problems:
        shown = "; ".join(problems[:4]) + ("; ..." if len(problems) > 4 else "")
        raise TransferlabError(f"weights in {path} do not fit the model {Path(run_dir) / MODEL_JSON} describes: {shown}")


def write_model_info(run_dir: Path, kind: str, info: dict) -> None:
    """Write ``model.json``: the format, the model's ``kind`` and ``info``."""
    write_json(Path(run_dir) / MODEL_JSON, {"format": FORMAT, "kind": kind, **info})


def read_model_info(run_dir: Path) -> dict:
    """``model.json`` of a finished run (its ``kind`` is absent in run directories written by transferlab 0.1).

    Raises:
        TransferlabError: no run directory, no ``model.json`` (the fit did not finish), not a JSON object, or
            another format. What each kind needs is checked by the kind (`transferlab.models.info`).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TransferlabError(f"run directory not found: {run_dir}")
    if not (run_dir / MODEL_JSON).is_file():
        raise TransferlabError(f"{run_dir} holds no trained model ({MODEL_JSON} missing): did its fit finish?")
    info = read_json(run_dir / MODEL_JSON)
    if not isinstance(info, dict):
        raise TransferlabError(f"{run_dir / MODEL_JSON} must hold a JSON object (format {FORMAT!r}), got "
                               f"{type(info).__name__}; was it edited, or written by another program?")
    if info.get("format") != FORMAT:
        raise TransferlabError(f"{run_dir / MODEL_JSON} has format {info.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(info.get("kind", ""), (str, type(None))):
        raise TransferlabError(f"{run_dir / MODEL_JSON} (format {FORMAT!r}) has kind {info['kind']!r}, expected the "
                               "name of a model kind")
    return info
