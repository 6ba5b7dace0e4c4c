"""The ``onnx`` feature engine: a backbone's pooled features (``backbone(x)``) exported once to ONNX and run by
onnxruntime on the CPU, in fp32.

Why it exists: where ``precision auto`` is fp32 (CPUs without fast bf16), the plain PyTorch path embeds
EfficientNet-Lite0 features from JPEG at 2.55x a plain loop, onnxruntime at 5.12x, with the same features (cosine
1.000000; `bench/feature_throughput.py --engines`, docs/benchmarks.md). ``torch.compile`` (0.84-1.37x after 84 s of
compiling, measured while writing this on a loaded machine) was left out. Text backbones gain nothing through
`transferlab.embeddings`' lanes.

The exported file is cached under ``cache_root()/onnx/``, named by the backbone's fingerprint (architecture,
preprocessing, every weight) and the torch version that exported it, so a backbone is exported once (8-16 s for
EfficientNet-Lite0). Before a new file is kept, and the first time a process uses a kept one, it is checked against
PyTorch on a batch of the data: every row's cosine similarity must reach `MIN_COSINE`; a kept file that fails
(damaged, or not this backbone's) is exported again. Where the cache cannot be written, the export lives in a
temporary folder for the process. Its features are cached apart from PyTorch's
(`transferlab.embeddings.extract_features`).
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from transferlab.backbones.base import Backbone
from transferlab.engine.onnx_runtime import (
    OnnxSession,
    export_graph,
    model_batch,
    named_inputs,
    require_package,
)
from transferlab.errors import TransferlabError
from transferlab.fileio import atomic_path, cache_root

__all__ = ["AUTO_ONNX_MIN_EXAMPLES", "FEATURE_ENGINES", "MIN_COSINE", "OnnxFeatures", "choose_feature_engine",
           "require_feature_engine"]

log = logging.getLogger("transferlab")

FEATURE_ENGINES = ("auto", "torch", "onnx")
MIN_COSINE = 0.999
AUTO_ONNX_MIN_EXAMPLES = 1000
"""``auto`` picks ``onnx`` from this many images at 224 x 224 px to embed (or as many pixels at another size).
EfficientNet-Lite0 in fp32 at 224 px saves about 8 ms an image through onnxruntime (123 vs 61 images/s), and its
one-off export and check takes 8-16 s: it pays back within about 1,000 images (the saving shrinks with the pixels,
the export does not), and later runs with the same backbone reuse the export."""


def choose_feature_engine(engine: str, backbone: Backbone, precision: str, device: torch.device,
                          processes: int = 1, examples: int = 0) -> str:
    """The engine that embeds ``examples`` items: ``torch`` or ``onnx`` as given (refused in one line where it does
    not apply, `require_feature_engine`), or for ``auto`` the faster one that gives the same features: ``onnx``
    for an exportable image backbone in fp32 (``precision`` already resolved: CPUs without bf16) on the CPU, in one
    process, with onnxruntime installed and at least `AUTO_ONNX_MIN_EXAMPLES` images' worth of 224 px pixels; else
    ``torch``. Text backbones stay on torch (no gain measured), and so does bf16, which is as fast as onnxruntime's
    fp32 on the CPUs that have it."""
    if engine != "auto":
        require_feature_engine(engine, backbone, precision, device, processes)
        return engine
    if backbone.preprocess.modality != "image":
        return "torch"
    height, width = backbone.preprocess.input_size[-2:]
    worth = examples * height * width / 224**2
    faster = (backbone.onnx_refusal is None and device.type == "cpu" and processes == 1 and precision == "fp32"
              and worth >= AUTO_ONNX_MIN_EXAMPLES and importlib.util.find_spec("onnxruntime") is not None)
    if faster:
        log.info("engine auto: onnx (fp32 on the CPU, %d images of %dx%d px; --engine torch keeps PyTorch)",
                 examples, height, width)
    return "onnx" if faster else "torch"


def require_feature_engine(engine: str, backbone: Backbone, precision: str, device: torch.device,
                           processes: int = 1) -> None:
    """Refuse, in one line, an ``engine`` that is unknown or does not apply to this backbone, precision (already
    resolved), device or number of torchrun processes."""
    if engine not in FEATURE_ENGINES:
        raise TransferlabError(f"engine must be one of {', '.join(FEATURE_ENGINES)}, got {engine!r}")
    if engine in ("auto", "torch"):
        return
    if backbone.onnx_refusal is not None:
        raise TransferlabError(f"engine onnx: the {backbone.spec.get('name')} backbone cannot be exported to ONNX: "
                               f"{backbone.onnx_refusal}")
    if device.type != "cpu":
        raise TransferlabError(f"engine onnx runs on the CPU (onnxruntime); this run embeds on {device}: use engine "
                               "torch")
    if processes > 1:
        raise TransferlabError(f"engine onnx embeds in one process; this run has {processes} torchrun processes: "
                               "use engine torch")
    if precision != "fp32":
        raise TransferlabError(f"engine onnx computes in fp32; precision is {precision} (auto picks bf16 where the "
                               "CPU has it): pass precision fp32, or use engine torch")
    require_package("onnxruntime", "engine onnx")


class _Features(nn.Module):
    """``backbone(batch)`` with the graph's named inputs as positional arguments."""

    def __init__(self, backbone: Backbone, names: tuple[str, ...]):
        super().__init__()
        self.backbone = backbone
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.backbone(model_batch(self.names, inputs))


class OnnxFeatures:
    """``backbone(batch)`` computed by onnxruntime: call it with a batch the backbone's preprocessing makes.

    Args:
        backbone: the backbone (in eval mode while exporting and checking).
        fingerprint: its `transferlab.embeddings.backbone_fingerprint`, which names the cached file.
        example: a batch of the data to embed, to trace the graph (a new file only) and check it against PyTorch.

    Raises:
        TransferlabError: neither exporter can export the backbone, or the exported graph's features differ from
            PyTorch's (a row's cosine below `MIN_COSINE`; nothing is cached then).
    """

    def __init__(self, backbone: Backbone, fingerprint: str, example):
        cached = cache_root() / "onnx" / f"{fingerprint[:24]}-torch{torch.__version__.split('+')[0]}.onnx"
        self.path = _ELSEWHERE.get(cached, cached)
        if _state(self.path) in _CHECKED:  # this process checked this very file already
            return
        backbone.eval()
        with torch.inference_mode():
            expected = backbone(example).float()
        if self.path.is_file():
            problem = _disagreement(self.path, example, expected)
            if problem is None:
                _CHECKED.add(_state(self.path))
                return
            log.warning("engine onnx: the cached export %s %s; exporting again", self.path, problem)
            _session.cache_clear()
        try:
            _export_checked(backbone, example, expected, self.path)
        except OSError as error:  # an unwritable cache costs the reuse, not the run
            folder = tempfile.mkdtemp(prefix="transferlab-onnx-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            self.path = _ELSEWHERE[cached] = Path(folder) / cached.name
            log.warning("engine onnx: cannot keep the export in the cache (%s); using %s for this process",
                        error, self.path)
            _export_checked(backbone, example, expected, self.path)
        _CHECKED.add(_state(self.path))

    def __call__(self, batch) -> torch.Tensor:
        """``(B, num_features)`` float32 features of ``batch``, with as many onnxruntime threads as torch has on the
        calling thread; several threads may embed at once (as `transferlab.embeddings` lanes do)."""
        return torch.from_numpy(_session(self.path, torch.get_num_threads()).run(batch)["features"])


_CHECKED: set[tuple[str, int, int]] = set()  # exported files (path, mtime, size) this process has checked
_ELSEWHERE: dict[Path, Path] = {}  # cache path -> where this process keeps the export when the cache is unwritable


def _state(path: Path) -> tuple[str, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return str(path), stat.st_mtime_ns, stat.st_size


def _disagreement(path: Path, example, expected: torch.Tensor) -> str | None:
    """Why the graph at ``path`` cannot stand in for PyTorch on ``example`` (unreadable, or a row's cosine to
    ``expected`` below `MIN_COSINE`), or ``None``."""
    try:
        got = torch.from_numpy(OnnxSession(path, threads=1).run(example)["features"])
    except Exception as error:  # a damaged or foreign file: onnxruntime raises its own error types
        return f"does not load or run ({type(error).__name__}: {str(error)[:120]})"
    cosine = torch.nn.functional.cosine_similarity(got, expected).min().item() if got.shape == expected.shape else -1
    return None if cosine >= MIN_COSINE else f"gives other features than PyTorch (cosine {cosine:.4f} < {MIN_COSINE})"


def _export_checked(backbone: Backbone, example, expected: torch.Tensor, path: Path) -> None:
    inputs = named_inputs(example)
    module = _Features(backbone, tuple(inputs)).eval()
    with atomic_path(path) as tmp:
        export_graph(module, inputs, ("features",), None, tmp)
        problem = _disagreement(tmp, example, expected)
        if problem is not None:
            raise TransferlabError(f"engine onnx: the {backbone.spec.get('name')} backbone's ONNX export {problem}: "
                                   "use engine torch")


@functools.lru_cache(maxsize=4)
def _session(path: Path, threads: int) -> OnnxSession:
    """One session per exported file and thread count, shared by the embedding lanes (the last few kept open).
    Lanes of one-thread runs measured 1.3x one two-thread session on 2 cores."""
    return OnnxSession(path, threads=threads)
