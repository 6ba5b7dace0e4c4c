"""Benchmark: MNIST and USPS digit classification as two tasks on one backbone, against two single-task models.

Data: each task keeps ``--labels-per-class`` labeled training images per class (default 30: 300 images a task),
taken after a seeded, stratified 5 % validation hold-out of its train split (MNIST 3,000 / USPS 365 validation
images, used for best-epoch selection). Scored on the full test sets: MNIST 10,000, USPS 2,007 images.

Models: ``lenet`` from random init (USPS 16 px images resized to 28 px). A single-task model is lenet + one
10-way head; the multi-task model is the same lenet shared by two 10-way heads (1,700 more parameters).

Budget (all: batch 32 per task, AdamW, lr 3e-3, cosine schedule, fp32, no augmentation, 40 epochs of 10 steps):
each single-task model takes 400 steps of 32 images of its task; the multi-task model 400 steps of 32 images of
*each* task, so every head sees the same number of its own examples as its single-task twin.

Weightings: fixed (equal), uncertainty, dwa, gradnorm, and torchjd's upgrad, pcgrad, cagrad.
Delta-m (Maninis et al. 2019; Vandenhende et al. 2021): the mean over tasks of the relative accuracy change of the
multi-task model against the single-task model of the same seed, in percent (positive: multi-task is better).

Usage:  python bench/multitask_digits.py [--seeds 0 1 2] [--labels-per-class 30] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _common import DATA, mean_std
from transferlab.api import fit
from transferlab.api import build_config

WEIGHTINGS = ("fixed", "uncertainty", "dwa", "gradnorm", "upgrad", "pcgrad", "cagrad")
TASKS = ("mnist", "usps")
COMMON = {"backbone": "lenet", "batch_size": 32, "lr": 3e-3, "optimizer": "adamw", "scheduler": "cosine",
          "epochs": 40, "val_fraction": 0.05, "precision": "fp32"}
STEPS_PER_EPOCH = 10


def task_data(data: Path) -> dict[str, dict[str, str]]:
    return {name: {"data": f"{name}:{data / name}@train", "test": f"{name}:{data / name}@test"} for name in TASKS}


def run_seed(seed: int, data: Path, out: Path, labels_per_class: int) -> dict[str, tuple[dict[str, float], float]]:
    """Single-task runs and every weighting on one seed; label -> ({task: test accuracy}, train seconds)."""
    specs = task_data(data)
    results = {}

    def record(label: str, result, tasks: dict[str, str]) -> None:
        test = result.metrics["test"]
        accuracy = ({task: test["tasks"][task]["accuracy"] for task in tasks} if "tasks" in test
                    else {next(iter(tasks)): test["accuracy"]})
        results[label] = (accuracy, result.metrics["train_seconds"])
        shown = ", ".join(f"{task} {value:.4f}" for task, value in accuracy.items())
        print(f"  seed {seed} {label}: test accuracy {shown}, {result.metrics['train_seconds']:.1f} s", flush=True)

    for name in TASKS:
        config = build_config(overrides={
            **COMMON, "method": "scratch", "seed": seed, "out": out / f"single-{name}-{seed}",
            "train": specs[name]["data"], "test": specs[name]["test"], "labels_per_class": labels_per_class,
        })
        record(f"single-task {name}", fit(config, progress=False), {name: name})
    for weighting in WEIGHTINGS:
        config = build_config(overrides={
            **COMMON, "method": "multitask", "pretrained": False, "seed": seed, "weighting": weighting,
            "steps_per_epoch": STEPS_PER_EPOCH, "out": out / f"multitask-{weighting}-{seed}",
            "tasks": [{"name": name, **specs[name], "labels_per_class": labels_per_class} for name in TASKS],
        })
        record(f"multitask {weighting}", fit(config, progress=False), dict.fromkeys(TASKS))
    return results


def delta_m(multi: dict[str, float], single: dict[str, float]) -> float:
    """Mean relative change (%) of each task's accuracy against its single-task model (higher is better)."""
    return 100 * statistics.mean((multi[task] - single[task]) / single[task] for task in single)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels-per-class", type=int, default=30)
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding mnist/ and usps/")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"seeds {args.seeds}, {args.labels_per_class} labels per class", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="multitask-digits-") as tmp:
        per_seed = [run_seed(seed, args.data, Path(tmp), args.labels_per_class) for seed in args.seeds]

    single = [{task: r[f"single-task {task}"][0][task] for task in TASKS} for r in per_seed]
    print(f"\nMNIST + USPS, {args.labels_per_class} labels per class each: test accuracy, Delta-m against the "
          f"single-task models, training time; mean ± std over {len(args.seeds)} seeds "
          f"(wall time {time.perf_counter() - started:.0f} s)")
    print("| model | MNIST test accuracy | USPS test accuracy | Delta-m (%) | train time (s) |\n|---|---|---|---|---|")
    print(f"| single-task (two models) | {mean_std([s['mnist'] for s in single])} | "
          f"{mean_std([s['usps'] for s in single])} | 0 | "
          f"{mean_std([sum(r[f'single-task {t}'][1] for t in TASKS) for r in per_seed], 1)} |")
    for weighting in WEIGHTINGS:
        label = f"multitask {weighting}"
        accuracy = [r[label][0] for r in per_seed]
        deltas = [delta_m(a, s) for a, s in zip(accuracy, single, strict=True)]
        print(f"| {label} | {mean_std([a['mnist'] for a in accuracy])} | {mean_std([a['usps'] for a in accuracy])} "
              f"| {mean_std(deltas, 2)} | {mean_std([r[label][1] for r in per_seed], 1)} |")


if __name__ == "__main__":
    main()
