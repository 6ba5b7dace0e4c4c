"""Benchmark: feature-extraction throughput of transferlab vs a plain PyTorch loop, on the same images.

Prints images/s of
  * a plain loop: fp32, ``torch.no_grad``, batch 32, images decoded one by one in the main process;
  * transferlab's `extract_features` (inference_mode, channels_last, bf16 autocast where the CPU has it,
    JPEG draft decoding; on CPU, threads that each decode a small chunk and embed it), without its cache;
their ratio, the fraction of this machine's measured matmul peak each reaches, the validation accuracy of a
logistic regression on each set of features (to show the speed-up leaves accuracy unchanged), and the time of a
``features`` run against a cached re-run of the same command.

With ``--engines``, instead: the plain loop and the feature engines in fp32 side by side (``torch``, and ``onnx``:
the backbone under onnxruntime), each embedding the validation images from their files without the cache, in
interleaved rounds (plain, torch, onnx, plain, ...; medians), with the one-off ONNX export timed apart and the
smallest cosine similarity of each to the torch engine's features. fp32 is what ``precision auto`` picks on CPUs
without bf16.

Usage:  python bench/feature_throughput.py [--data ../shared/data/hymenoptera] [--backbone efficientnet_lite0]
        python bench/feature_throughput.py --engines [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.flop_counter import FlopCounterMode

from transferlab.api import fit
from transferlab.backbones import create_backbone
from transferlab.api import build_config
from transferlab.data import load_splits
from transferlab.data.torch_dataset import build_transform
from transferlab.embeddings import extract_features
from transferlab.engine.precision import resolve_precision
from _common import cpu_model

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera"


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a ``size``^2 matmul in ``dtype`` on this machine (best of ``repeats``)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def flops_per_image(backbone) -> float:
    x = torch.randn(1, *backbone.preprocess.input_size)
    backbone.eval()  # in train mode this random batch would move the batch-norm running statistics
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        backbone(x)
    return counter.get_total_flops()


def plain_loop(backbone, data, batch_size: int = 32) -> tuple[torch.Tensor, float]:
    """The baseline: decode one image at a time, fp32, torch.no_grad."""
    transform = build_transform(backbone.preprocess)
    backbone.eval()
    features = []
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = [transform(data.load_image(i).convert("RGB")) for i in range(start, min(start + batch_size, len(data)))]
            features.append(backbone(torch.stack(batch)))
    return torch.cat(features), time.perf_counter() - started


def fast_path(backbone, data, precision: str, engine: str = "torch") -> tuple[torch.Tensor, float]:
    started = time.perf_counter()
    features = extract_features(backbone, data, precision=precision, engine=engine, use_cache=False, progress=False)
    return features, time.perf_counter() - started


def probe_accuracy(train_x, train_y, val_x, val_y) -> float:
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return classifier.fit(train_x, train_y).score(val_x, val_y)


def cached_rerun(data_spec: str, backbone: str) -> tuple[float, float]:
    """Wall time of ``fit --method features`` with an empty cache, then of the same command again."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TRANSFERLAB_CACHE"] = str(Path(tmp) / "cache")
        times = []
        for attempt in range(2):
            config = build_config(overrides={"train": data_spec, "method": "features", "backbone": backbone,
                                             "out": Path(tmp) / f"run{attempt}"})
            started = time.perf_counter()
            fit(config, progress=False)
            times.append(time.perf_counter() - started)
    return times[0], times[1]


def compare_engines(backbone, data, rounds: int) -> None:
    """Print images/s of the plain loop and of each feature engine in fp32 (median of interleaved rounds), the
    ratio to the plain loop and the smallest cosine similarity to the torch engine's features; the first onnx call
    (export and check) timed apart."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TRANSFERLAB_CACHE"] = str(Path(tmp) / "cache")  # a fresh export, timed
        started = time.perf_counter()
        extract_features(backbone, data.subset(np.arange(2)), precision="fp32", engine="onnx", use_cache=False,
                         progress=False)
        print(f"one-off ONNX export and check: {time.perf_counter() - started:.1f} s")
        runs = {"plain loop": lambda: plain_loop(backbone, data)}
        for engine in ("torch", "onnx"):  # engine auto picks one of these two
            runs[f"engine {engine}"] = lambda engine=engine: fast_path(backbone, data, "fp32", engine)
        features, seconds = {}, {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                features[name], elapsed = run()
                seconds[name].append(elapsed)
    base = len(data) / statistics.median(seconds["plain loop"])
    print(f"{len(data)} images from files, fp32, {rounds} interleaved rounds (medians):")
    for name in runs:
        rate = len(data) / statistics.median(seconds[name])
        cosine = torch.nn.functional.cosine_similarity(features[name], features["engine torch"]).min().item()
        print(f"  {name:13s} {rate:7.1f} img/s  {rate / base:5.2f}x the plain loop  min cosine to engine torch "
              f"{cosine:.6f}")
    print("(the plain loop decodes JPEGs in full, the engines in PIL's draft mode: their pixels, so features, differ)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="image folder with train/ and val/")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--engines", action="store_true", help="time the feature engines in fp32 side by side")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --engines")
    args = parser.parse_args()

    splits = load_splits(args.data)
    train, val = splits["train"], splits["val"]
    backbone = create_backbone(args.backbone)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} (other jobs slow torch down)")
    if args.engines:
        compare_engines(backbone, val, args.rounds)
        return
    precision = resolve_precision("auto", torch.device("cpu"))
    flops = flops_per_image(backbone)
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"backbone {args.backbone}: {flops / 1e9:.3f} GFLOP/image at {backbone.preprocess.input_size[1]} px; "
          f"matmul peak fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")

    images = len(train) + len(val)
    fast_path(backbone, val.subset(np.arange(min(64, len(val)))), precision)  # warm-up: workers, autocast kernels
    plain_train, plain_train_s = plain_loop(backbone, train)
    plain_val, plain_val_s = plain_loop(backbone, val)
    fast_train, fast_train_s = fast_path(backbone, train, precision)
    fast_val, fast_val_s = fast_path(backbone, val, precision)
    plain_rate = images / (plain_train_s + plain_val_s)
    fast_rate = images / (fast_train_s + fast_val_s)
    peak = peak16 if precision == "bf16" else peak32
    print(f"{images} images ({args.data})")
    print(f"plain loop (fp32, no_grad, batch 32, serial decode): {plain_rate:7.1f} img/s, "
          f"{plain_rate * flops / 1e9 / peak32:.1%} of fp32 matmul peak")
    print(f"transferlab extract_features ({precision}):           {fast_rate:7.1f} img/s, "
          f"{fast_rate * flops / 1e9 / peak:.1%} of {precision} matmul peak")
    print(f"speed-up: {fast_rate / plain_rate:.2f}x")
    print(f"val accuracy of logistic regression: plain {probe_accuracy(plain_train, train.labels, plain_val, val.labels):.4f}, "
          f"transferlab {probe_accuracy(fast_train, train.labels, fast_val, val.labels):.4f}")
    cosine = torch.nn.functional.cosine_similarity(plain_val, fast_val).mean().item()
    print(f"mean cosine similarity of the two feature sets: {cosine:.4f}")
    first, second = cached_rerun(args.data, args.backbone)
    print(f"fit --method features: first run {first:.1f} s, cached re-run {second:.2f} s, {first / second:.1f}x faster")


if __name__ == "__main__":
    main()
