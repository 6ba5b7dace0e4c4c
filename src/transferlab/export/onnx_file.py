"""Export a trained model to ONNX, check it against PyTorch, and write what a consumer needs beside it.

``FILE.onnx`` computes the model kind's `Predictor.prediction_outputs` (probabilities or values, never raw logits)
from the inputs its preprocessing makes. Beside it:

- ``FILE.onnx.json``: the model's kind, classes or tasks, inputs and outputs, the preprocessing (image size, mean,
  std, interpolation, crop; text: tokenizer folder and ``max_length``), which exporter and opset wrote it, a digest
  of the run's weights, and the parity check;
- ``FILE.onnx.preprocessing/``: files the preprocessing needs (a tokenizer), when it needs any.

The parity check runs the exported file with onnxruntime and the model with PyTorch (fp32) on the same batches
(real examples when given, else made-up ones of the right shape): every output must agree within `ATOL` + `RTOL`
and every example must keep its decisions (`check_parity`: its top class, or each class at 0.5 for multi-label
outputs) unless they were near-ties. A failed check writes nothing. The JSON is written last, once the new
``.onnx`` is in place (an old JSON is removed before that): an interrupted export leaves a ``.onnx`` without JSON,
which readers refuse, never a model paired with another model's JSON.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferlab.artifacts import MODEL_WEIGHTS
from transferlab.data import Examples
from transferlab.engine.onnx_runtime import (
    OnnxSession,
    dynamic_axes,
    export_graph,
    named_inputs,
)
from transferlab.errors import TransferlabError
from transferlab.export.inputs import (
    example_batches,
    generated_batches,
    model_batch,
    preprocessing_description,
)
from transferlab.fileio import atomic_path, read_json, sha256_file, write_json
from transferlab.models import Predictor
from transferlab.tasks import MULTILABEL_THRESHOLD

__all__ = ["ATOL", "DEFAULT_FILE", "EXPORT_FORMATS", "RTOL", "ExportResult", "agreement_text", "check_parity",
           "export_onnx", "metadata_path", "preprocessing_path", "read_export_metadata", "require_exportable",
           "weights_digest"]

log = logging.getLogger("transferlab")

EXPORT_FORMATS = ("onnx",)
DEFAULT_FILE = "model.onnx"
ATOL, RTOL = 1e-4, 1e-3


@dataclass
class ExportResult:
    """What `export_onnx` wrote: the ``.onnx`` file, its JSON and the JSON's content."""

    path: Path
    metadata_path: Path
    metadata: dict


def metadata_path(path: Path) -> Path:
    """The JSON beside an exported file: ``FILE.onnx.json``."""
    return Path(f"{path}.json")


def preprocessing_path(path: Path) -> Path:
    """The folder of preprocessing files beside an exported file: ``FILE.onnx.preprocessing``."""
    return Path(f"{path}.preprocessing")


def require_exportable(model: Predictor, what: str = "export") -> None:
    """Refuse, in one line, a model whose kind (`Predictor.onnx_refusal`) or backbone
    (`transferlab.backbones.base.Backbone.onnx_refusal`) has no ONNX export."""
    if model.onnx_refusal is not None:
        raise TransferlabError(f"{what}: this run holds a {model.kind} model, which cannot be exported to ONNX: "
                               f"{model.onnx_refusal}")
    if model.backbone.onnx_refusal is not None:
        raise TransferlabError(f"{what}: this run's {model.kind} model reads with the {model.backbone.spec.get('name')} "
                               f"backbone, which cannot be exported to ONNX: {model.backbone.onnx_refusal}")


def weights_digest(run_dir: Path) -> str | None:
    """SHA-256 of the run's weights file (what an export was made from), or ``None`` without one."""
    path = Path(run_dir) / MODEL_WEIGHTS
    if not path.is_file():
        return None
    return sha256_file(path)


def read_export_metadata(path: Path) -> dict:
    """The JSON beside an exported file; an error naming it when it is missing or not an object."""
    meta_path = metadata_path(path)
    if not meta_path.is_file():
        raise TransferlabError(f"{path} has no {meta_path.name} beside it; export the run again with "
                               "'transferlab export RUN --format onnx --overwrite'")
    metadata = read_json(meta_path)
    if not isinstance(metadata, dict):
        raise TransferlabError(f"{meta_path} must hold an object, got {type(metadata).__name__}")
    return metadata


class _Exported(nn.Module):
    """``model.prediction_outputs`` with the graph's named inputs as positional arguments and a tuple of outputs."""

    def __init__(self, model: Predictor, input_names: tuple[str, ...], output_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.output_names = output_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model.prediction_outputs(model_batch(self.input_names, inputs))
        return tuple(outputs[name] for name in self.output_names)


def export_onnx(model: Predictor, run_dir: Path, out: Path | None = None, *, opset: int | None = None,
                data: Examples | None = None, overwrite: bool = False) -> ExportResult:
    """Write ``model`` (loaded from ``run_dir``) as ONNX to ``out`` (default ``run_dir/model.onnx``), checked
    against PyTorch on ``data`` (its first 32 examples) or on made-up inputs.

    The dynamo exporter (``torch.onnx.export(..., dynamo=True)``) is tried first, the TorchScript exporter when it
    fails; the JSON records which wrote the file.

    Raises:
        TransferlabError: the kind cannot export, ``out`` (or its JSON) exists without ``overwrite``,
            ``FILE.onnx.preprocessing`` is a file, both exporters fail, or the parity check fails (nothing is
            written then).
    """
    require_exportable(model)
    out = Path(out) if out is not None else Path(run_dir) / DEFAULT_FILE
    if out.suffix != ".onnx":
        raise TransferlabError(f"--out {out}: an ONNX file name ends in .onnx")
    if preprocessing_path(out).exists() and not preprocessing_path(out).is_dir():
        raise TransferlabError(f"{preprocessing_path(out)} is a file, where the export keeps its preprocessing folder; "
                               "move it away or export to another --out")
    existing = [path for path in (out, metadata_path(out), preprocessing_path(out)) if path.exists()]
    if existing and not overwrite:
        raise TransferlabError(f"{existing[0]} exists; pass --overwrite to replace it")
    model = model.cpu().eval()
    trace = named_inputs(generated_batches(model.preprocess, count=2, batch_size=2)[0])
    with torch.inference_mode():
        output_names = tuple(model.prediction_outputs(model_batch(tuple(trace), tuple(trace.values()))))
    clash = sorted(set(output_names) & set(trace))
    if clash:
        raise TransferlabError(f"output {clash[0]!r} has the name of an input of the graph; rename the task")
    batches = example_batches(data, model.preprocess) if data is not None else generated_batches(model.preprocess)
    with atomic_path(out) as tmp:
        # in eval mode: the TorchScript exporter restores the training flag of the module it is given, recursively
        exported = _Exported(model, tuple(trace), output_names).eval()
        exporter, opset_used = export_graph(exported, trace, output_names, opset, tmp)
        parity = check_parity(model, OnnxSession(tmp), batches)
        parity["data"] = data.name if data is not None else "generated inputs"
        if not parity["passed"]:
            raise TransferlabError(
                f"the ONNX export of {run_dir} disagrees with PyTorch on {parity['data']}: max abs difference "
                f"{parity['max_abs_diff']:.3g} (allowed {ATOL} + {RTOL} x |value|){agreement_text(parity)}; "
                "nothing was written"
            )
        metadata = _metadata(model, run_dir, out, trace, output_names, exporter, opset_used, parity)
        metadata_path(out).unlink(missing_ok=True)  # from here on, an old JSON never describes the new model
        metadata["preprocessing"] = _write_preprocessing(model.preprocess, out, overwrite)
    write_json(metadata_path(out), metadata)  # last, once the new .onnx is in place
    return ExportResult(out, metadata_path(out), metadata)


def check_parity(model: Predictor, session: OnnxSession, batches: list) -> dict:
    """PyTorch (fp32) against onnxruntime on the same ``batches``: per output the max abs difference and whether all
    values agree within `ATOL` + `RTOL` x |torch value|; for outputs that decide something
    (`Predictor.output_decisions`) the share of decisions that agree and how many of the others are near-ties, which
    rounding may swap: an ``argmax`` output's top class (torch's top two within twice that tolerance), a ``threshold``
    output's classes at >= 0.5 (a probability within twice that tolerance of 0.5). ``passed`` when all values agree
    and every decision that is not a near-tie agrees. (With every value within tolerance a flipped decision is
    necessarily a near-tie: the tolerance is what passes or fails; the decision shares say what a flip changed.)"""
    model.eval()
    with torch.inference_mode():
        expected = [{name: value.float().numpy() for name, value in model.prediction_outputs(batch).items()}
                    for batch in batches]
    got = [session.run(batch) for batch in batches]
    decisions = model.output_decisions()
    report, passed = {}, True
    for name in session.output_names:
        reference = np.concatenate([chunk[name] for chunk in expected])
        exported = np.concatenate([chunk[name] for chunk in got]).astype(np.float32)
        close = bool(np.allclose(exported, reference, atol=ATOL, rtol=RTOL))
        entry = {"max_abs_diff": float(np.abs(exported - reference).max()) if reference.size else 0.0,
                 "within_tolerance": close}
        decisive_flips = 0
        if name in decisions and reference.size:
            agree, near_tie = _decisions(decisions[name], reference, exported)
            key = "top1" if decisions[name] == "argmax" else "threshold"
            entry[f"{key}_agreement"] = float(agree.mean())
            entry[f"{key}_near_ties"] = int((~agree & near_tie).sum())
            decisive_flips = int((~agree & ~near_tie).sum())
        passed = passed and close and decisive_flips == 0
        report[name] = entry
    examples = sum(len(next(iter(chunk.values()))) for chunk in expected)
    summary = {"examples": examples, "atol": ATOL, "rtol": RTOL, "passed": passed,
               "max_abs_diff": max(entry["max_abs_diff"] for entry in report.values())}
    for key in ("top1_agreement", "threshold_agreement"):
        shares = [entry[key] for entry in report.values() if key in entry]
        if shares:
            summary[key] = min(shares)
    return {**summary, "outputs": report}


def agreement_text(parity: dict) -> str:
    """``", top-1 agreement 100.00%"`` and/or ``", multi-label decisions agree 100.00%"``: the decision shares of a
    `check_parity` report, for one line of output (empty for a model of values only)."""
    names = {"top1_agreement": "top-1 agreement", "threshold_agreement": "multi-label decisions agree"}
    return "".join(f", {label} {parity[key]:.2%}" for key, label in names.items() if key in parity)


def _decisions(rule: str, reference: np.ndarray, exported: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(agree, near_tie)`` boolean arrays: per example (``argmax``) or per example and class (``threshold``),
    whether onnxruntime decides as torch did, and whether torch's decision was within rounding of the other one."""
    margin = 2 * ATOL
    if rule == "argmax":
        top_two = np.sort(reference, axis=1)[:, -2:]
        near_tie = top_two[:, 1] - top_two[:, 0] <= margin + 2 * RTOL * np.abs(top_two[:, 1])
        return exported.argmax(1) == reference.argmax(1), near_tie
    if rule == "threshold":
        near_tie = np.abs(reference - MULTILABEL_THRESHOLD) <= margin + 2 * RTOL * MULTILABEL_THRESHOLD
        return (exported >= MULTILABEL_THRESHOLD) == (reference >= MULTILABEL_THRESHOLD), near_tie
    raise ValueError(f"unknown decision rule {rule!r}: expected 'argmax' or 'threshold'")


def _metadata(model: Predictor, run_dir: Path, out: Path, inputs: dict[str, torch.Tensor],
              output_names: tuple[str, ...], exporter: str, opset: int, parity: dict) -> dict:
    axes = dynamic_axes(inputs)
    described_inputs = [{"name": name, "dtype": str(tensor.dtype).removeprefix("torch."),
                         "shape": [axes[name].get(axis, size) for axis, size in enumerate(tensor.shape)]}
                        for name, tensor in inputs.items()]
    return {
        "format": "onnx",
        "file": out.name,
        "kind": model.kind,
        "backbone": model.backbone.spec.get("name"),
        "run": str(run_dir),
        "weights_sha256": weights_digest(run_dir),
        **model.export_description(),
        "inputs": described_inputs,
        "output_names": list(output_names),
        "exporter": exporter,
        "opset": opset,
        "versions": {"transferlab": _version("transferlab"), "torch": torch.__version__,
                     "onnx": _version("onnx"), "onnxruntime": _version("onnxruntime")},
        "parity": parity,
    }


def _write_preprocessing(preprocess, out: Path, overwrite: bool) -> dict:
    """The preprocessing's description; its files (a tokenizer) saved into ``FILE.onnx.preprocessing``."""
    final = preprocessing_path(out)
    if not hasattr(preprocess, "save"):
        if final.exists() and overwrite:
            shutil.rmtree(final)
        return preprocessing_description(preprocess)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=out.parent))
    try:
        preprocess.save(staging)
        described = preprocessing_description(preprocess, staging, final.name)
        if not any(staging.iterdir()):
            return described
        mask = os.umask(0)
        os.umask(mask)
        staging.chmod(0o777 & ~mask)  # mkdtemp makes folders private; keep the usual umask instead
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return described


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
