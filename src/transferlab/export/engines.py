"""Prediction engines: the model itself under PyTorch, or its exported ONNX file under onnxruntime.

Both give the rows of the model kind's ``predict`` (the ONNX engine through `Predictor.rows_from_predictions`), so
``transferlab predict`` and ``transferlab serve`` print and return the same columns whichever runs.
"""

from __future__ import annotations

from pathlib import Path

from transferlab.data import Examples
from transferlab.engine.onnx_runtime import OnnxSession
from transferlab.errors import TransferlabError
from transferlab.export.inputs import example_batches
from transferlab.export.onnx_file import (
    DEFAULT_FILE,
    read_export_metadata,
    require_exportable,
    weights_digest,
)
from transferlab.models import Predictor

__all__ = ["ENGINES", "OnnxEngine", "TorchEngine", "open_engine"]

ENGINES = ("torch", "onnx")


class TorchEngine:
    """The loaded model, predicting with PyTorch (`Predictor.predict`)."""

    name = "torch"

    def __init__(self, model: Predictor):
        self.model = model

    def predict(self, data: Examples, *, num_workers: int | None = None, **options) -> list[dict]:
        """One row per example of ``data``; ``num_workers`` decoding processes (default: by the data's size);
        ``options``: the kind's prediction options (``None`` left out)."""
        options = {key: value for key, value in options.items() if value is not None}
        return self.model.predict(data, num_workers=num_workers, **options)


class OnnxEngine:
    """A run's exported ONNX file under onnxruntime, with the run's model for its preprocessing and rows.

    Args:
        model: the run's model (loaded from ``run_dir``).
        run_dir: the run directory.
        path: the exported file (default ``run_dir/model.onnx``).

    Raises:
        TransferlabError: the kind cannot export, the run has no exported file (the message gives the export
            command), the file's JSON is missing, or the file was exported from other weights than the run holds.
    """

    name = "onnx"

    def __init__(self, model: Predictor, run_dir: Path, path: Path | None = None):
        require_exportable(model, "--engine onnx")
        path = Path(path) if path is not None else Path(run_dir) / DEFAULT_FILE
        if not path.is_file():
            raise TransferlabError(f"--engine onnx: {run_dir} has no exported model {path.name}; export it first: "
                                   f"transferlab export {run_dir} --format onnx")
        self.metadata = read_export_metadata(path)
        digest = weights_digest(run_dir)
        if self.metadata.get("weights_sha256") != digest:
            raise TransferlabError(f"{path} was exported from other weights than {run_dir} holds now; export it "
                                   f"again: transferlab export {run_dir} --format onnx --overwrite")
        self.model = model
        self.session = OnnxSession(path)

    def predict(self, data: Examples, *, batch_size: int = 64, num_workers: int | None = None, **options
                ) -> list[dict]:
        """One row per example of ``data``, in the form of the kind's ``predict`` (decoded in this process:
        ``num_workers`` is accepted for the torch engine's sake and ignored)."""
        given = [key for key, value in options.items() if value is not None]
        if given:
            raise TransferlabError(f"{given[0]} does not apply to --engine onnx")
        if len(data) == 0:
            return []
        batches = example_batches(data, self.model.preprocess, limit=len(data), batch_size=batch_size)
        return self.model.rows_from_predictions(self.session.run_all(batches))

    def predict_batch(self, batch) -> list[dict]:
        """Rows for one ready batch (the tensor or dict the preprocessing makes)."""
        return self.model.rows_from_predictions(self.session.run(batch))


def open_engine(model: Predictor, run_dir: Path, engine: str = "torch") -> TorchEngine | OnnxEngine:
    """The engine named ``engine`` (`ENGINES`) for the model of ``run_dir``."""
    if engine == "torch":
        return TorchEngine(model)
    if engine == "onnx":
        return OnnxEngine(model, run_dir)
    raise TransferlabError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
