"""ONNX plumbing shared by ``transferlab export`` (a run's model) and the ``onnx`` feature engine (a backbone):
batches as a graph's named inputs, exporting a module with the dynamo exporter or the TorchScript one, and an
onnxruntime CPU session.

A batch is what a model's preprocessing makes (`transferlab.data.torch_dataset.make_dataset` and its loader): an
image tensor ``(B, C, H, W)``, named `IMAGE_INPUT` in an exported graph, or a text/audio dict of ``(B, T)``
tensors, whose names it keeps. Images have a fixed size (the preprocessing crops them), so only their batch axis
varies; every axis of a text or audio input varies (batches are padded to their longest member).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferlab.errors import TransferlabError

__all__ = ["IMAGE_INPUT", "OnnxSession", "dynamic_axes", "export_graph", "model_batch", "named_inputs",
           "require_package"]

log = logging.getLogger("transferlab")

IMAGE_INPUT = "pixel_values"


def require_package(name: str, purpose: str):
    """The module ``name``, or an error saying which extra installs it (``pip install 'transferlab[deploy]'``)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise TransferlabError(f"{purpose} needs the Python package {name}: pip install 'transferlab[deploy]'") from None


def named_inputs(batch) -> dict[str, torch.Tensor]:
    """A batch as the exported graph's named inputs: an image tensor as `IMAGE_INPUT`, a dict as it is."""
    return {IMAGE_INPUT: batch} if torch.is_tensor(batch) else dict(batch)


def model_batch(names: tuple[str, ...], inputs: tuple[torch.Tensor, ...]):
    """The batch a model takes from the graph's inputs ``names`` (the inverse of `named_inputs`)."""
    if names == (IMAGE_INPUT,):
        return inputs[0]
    return dict(zip(names, inputs, strict=True))


def dynamic_axes(inputs: dict[str, torch.Tensor]) -> dict[str, dict[int, str]]:
    """Which axes of each named input vary: the batch axis of an image, every axis of text and audio inputs."""
    if list(inputs) == [IMAGE_INPUT]:
        return {IMAGE_INPUT: {0: "batch"}}
    return {name: {0: "batch", **{axis: "sequence" for axis in range(1, tensor.dim())}}
            for name, tensor in inputs.items()}


def export_graph(module: nn.Module, inputs: dict[str, torch.Tensor], output_names: tuple[str, ...],
                 opset: int | None, path: Path) -> tuple[str, int]:
    """Export ``module`` (taking ``inputs``' tensors as positional arguments) to ``path``; return the exporter used
    (``dynamo``, tried first, or ``torchscript`` when it fails) and the opset.

    Raises:
        TransferlabError: onnx or onnxscript is missing, or both exporters fail (one line each).
    """
    axes = dynamic_axes(inputs)
    settings = {"input_names": list(inputs), "output_names": list(output_names)}
    if opset is not None:
        settings["opset_version"] = opset
    args = tuple(inputs.values())
    onnx = require_package("onnx", "ONNX export")
    require_package("onnxscript", "ONNX export with the dynamo exporter")
    try:
        with _quiet_exporters():
            program = torch.onnx.export(module, args, dynamo=True, verbose=False,
                                        dynamic_shapes=_dynamic_shapes(axes), **settings)
            program.save(str(path), external_data=False)
        exporter = "dynamo"
    except Exception as exc:  # noqa: BLE001 - any failure of the dynamo exporter falls back to the older one
        first = f"{type(exc).__name__}: {_first_line(exc)}"
        log.warning("the dynamo ONNX exporter failed (%s); exporting with the TorchScript exporter", first)
        try:
            with _quiet_exporters():
                torch.onnx.export(module, args, str(path), dynamo=False, dynamic_axes=axes, **settings)
        except Exception as second:  # noqa: BLE001 - reported in one line
            raise TransferlabError(f"neither ONNX exporter could export this model (dynamo: {first}; TorchScript: "
                                   f"{type(second).__name__}: {_first_line(second)})") from None
        exporter = "torchscript"
    opsets = {entry.domain: entry.version for entry in onnx.load(str(path), load_external_data=False).opset_import}
    return exporter, int(opsets.get("", opsets.get("ai.onnx", 0)))


def _dynamic_shapes(axes: dict[str, dict[int, str]]) -> tuple:
    """torch.export's form of ``axes`` for a module taking the inputs as positional arguments: one
    `torch.export.Dim` per axis name (axes of one name share a size)."""
    dims: dict[str, torch.export.Dim] = {}
    specs = tuple({axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in input_axes.items()}
                  for input_axes in axes.values())
    return (specs,)


def _first_line(exc: Exception, limit: int = 200) -> str:
    """The gist of an exporter's error: the summary torch.export gives, else the first line; without terminal
    colours or the graph dump it may carry."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "## Exception summary" in lines and lines.index("## Exception summary") + 1 < len(lines):
        lines = lines[lines.index("## Exception summary") + 1:]
    line = lines[0].split(" [Caused by")[0] if lines else ""
    return line if len(line) <= limit else f"{line[:limit]}..."


@contextlib.contextmanager
def _quiet_exporters():
    """Keep the exporters' own output (graph dumps on failure, optimiser notes) off the terminal: their Python
    warnings are ignored and whatever they write to the standard streams, from Python or C++, is dropped."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")  # the exporters' notes on axis names and deprecations
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for descriptor in saved:
            os.close(descriptor)


class OnnxSession:
    """onnxruntime's CPU session of one ``.onnx`` file, with all graph optimisations (``ORT_ENABLE_ALL``, the
    default; a development measurement on a loaded EPYC put it at 2.2x ``ORT_ENABLE_EXTENDED``).

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime's threads per run; default as many as torch uses. Runs from several threads at once
            are safe.

    Raises:
        TransferlabError: onnxruntime cannot read the file (the message names it).
    """

    def __init__(self, path: Path, threads: int | None = None):
        onnxruntime = require_package("onnxruntime", "running ONNX models")

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
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
