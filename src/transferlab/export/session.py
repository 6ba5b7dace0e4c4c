"""An exported ONNX model run by onnxruntime on the batches a model's preprocessing makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from transferlab.errors import TransferlabError
from transferlab.export.inputs import named_inputs, require_package

__all__ = ["OnnxSession"]


class OnnxSession:
    """onnxruntime's CPU session of one ``.onnx`` file, as many threads as torch uses.

    Args:
        path: the ``.onnx`` file.

    Raises:
        TransferlabError: onnxruntime cannot read the file (the message names it).
    """

    def __init__(self, path: Path):
        onnxruntime = require_package("onnxruntime", "running ONNX models")

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # errors only: no graph-optimisation notes on stderr
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for unreadable files
            raise TransferlabError(f"onnxruntime cannot read {path}: {str(exc).splitlines()[0]}") from None
        self.path = Path(path)
        self.input_names = tuple(item.name for item in self.session.get_inputs())
        self.output_names = tuple(item.name for item in self.session.get_outputs())

    def run(self, batch) -> dict[str, np.ndarray]:
        """The graph's named outputs for one batch (an image tensor or a text/audio dict of tensors)."""
        inputs = named_inputs(batch)
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise TransferlabError(f"{self.path} takes inputs {', '.join(self.input_names)}, but the batch has "
                                   f"{', '.join(inputs)} (missing {', '.join(missing)})")
        feed = {name: inputs[name].detach().cpu().contiguous().numpy() for name in self.input_names}
        return dict(zip(self.output_names, self.session.run(list(self.output_names), feed), strict=True))

    def run_all(self, batches) -> dict[str, np.ndarray]:
        """The named outputs of every batch, concatenated over examples."""
        chunks = [self.run(batch) for batch in batches]
        if not chunks:
            return {name: np.zeros((0,), dtype=np.float32) for name in self.output_names}
        return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in self.output_names}
