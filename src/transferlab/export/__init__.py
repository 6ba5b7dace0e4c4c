"""Deployment of trained models: ONNX export with a parity check (`export_onnx`), and the engines that predict with
PyTorch or with the exported file under onnxruntime (`open_engine`)."""

from transferlab.export.engines import ENGINES, OnnxEngine, TorchEngine, open_engine
from transferlab.export.onnx_file import (
    ATOL,
    DEFAULT_FILE,
    EXPORT_FORMATS,
    RTOL,
    ExportResult,
    agreement_text,
    check_parity,
    export_onnx,
    require_exportable,
)

__all__ = ["ATOL", "DEFAULT_FILE", "ENGINES", "EXPORT_FORMATS", "RTOL", "ExportResult", "OnnxEngine", "TorchEngine",
           "agreement_text", "check_parity", "export_onnx", "open_engine", "require_exportable"]
