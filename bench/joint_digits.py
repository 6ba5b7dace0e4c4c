"""Benchmark: MNIST -> USPS with 10 USPS labels per class: target-only, source-only, pretrain + fine-tune, joint.

Source: MNIST train, all 60,000 labels. Target: USPS train with 10 labels per class; as in every fit run the
validation set (20 % of USPS train, stratified, seeded) is held out before the 10 labels per class are taken, so
all target-trained methods of one seed share the same 100 images and the same validation set. Everything is
scored on the USPS test set (2,007 images). Backbone ``lenet`` (random init; USPS 16 px images resized to 28 px).

Methods (per seed):
  * ``target-only``: scratch on the 100 USPS images;
  * ``source-only``: scratch on MNIST (validation: MNIST test, so all 60k train labels are used), scored on USPS;
  * ``pretrain+finetune``: finetune from the source-only run of the same seed on the 100 USPS images
    (freeze none, head_epochs 1, default layer_lr_ratio 10);
  * ``joint l=0.1|1|10``: L_S + lambda * L_T, every batch 16 MNIST + 16 USPS images.

Budget (all: batch 32, AdamW, lr 3e-3, cosine schedule, fp32 on this CPU, no augmentation, best epoch by
validation accuracy). Optimizer steps are kept in the same range (~1,000-3,750):
  * target-only, pretrain+finetune: 250 epochs x 4 steps = 1,000 steps (each epoch also validates 1,458 images);
  * source-only: 2 epochs x 1,875 steps = 3,750 steps;
  * joint: 4 epochs x 500 steps = 2,000 steps (32,000 MNIST + 32,000 USPS draws).
Joint runs set ``pretrained: false`` (lenet has no pretrained weights): before commit 61a24ee the default
``pretrained: true`` made joint treat the random backbone as pretrained (head-only first epoch, 10x lower conv1
rate); since then both settings give identical runs.
Measured on 2 cores (fp32): 11.3 minutes for 3 seeds; per run about 60 s target-only and pretrain+finetune
(most of it the 250 validations), 35 s source-only, 20 s each joint run.

Usage:  python bench/joint_digits.py [--seeds 0 1 2] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from _common import DATA, mean_std
from transferlab.api import fit, prepare_splits
from transferlab.api import build_config


COMMON = {"backbone": "lenet", "batch_size": 32, "lr": 3e-3, "optimizer": "adamw", "scheduler": "cosine"}
# method label -> settings beyond COMMON; see the module docstring for the step counts
BUDGET: dict[str, dict] = {
    "target-only": {"method": "scratch", "epochs": 250},
    "source-only": {"method": "scratch", "epochs": 2},
    "pretrain+finetune": {"method": "finetune", "epochs": 250, "freeze": "none", "head_epochs": 1},
    **{f"joint l={lam:g}": {"method": "joint", "lambda": lam, "epochs": 4, "steps_per_epoch": 500, "pretrained": False}
       for lam in (0.1, 1.0, 10.0)},
}


def run_seed(seed: int, data: Path, out: Path, scale: float) -> dict[str, tuple[float, float]]:
    """All methods on one seed's split; returns label -> (USPS test accuracy, train seconds)."""
    mnist, usps = f"mnist:{data / 'mnist'}", f"usps:{data / 'usps'}"
    target = {"train": f"{usps}@train", "test": f"{usps}@test", "labels_per_class": 10}

    def settings(label: str) -> dict:
        budget = dict(BUDGET[label])
        key = "steps_per_epoch" if "steps_per_epoch" in budget else "epochs"  # --scale: shorter smoke-test runs
        budget[key] = max(1, round(budget[key] * scale))
        return {**COMMON, "seed": seed, "out": out / f"{label.replace(' ', '_')}-{seed}", **budget}

    # the USPS split (train 100 / val / test) and the MNIST source, loaded once and shared by every target run
    joint_config = build_config(overrides={**target, **settings("joint l=1"), "source": f"{mnist}@train"})
    joint_splits = prepare_splits(joint_config)
    target_splits = replace(joint_splits, source=None)
    assert len(target_splits.train) == 100, len(target_splits.train)

    results: dict[str, tuple[float, float]] = {}

    def record(label: str, result) -> None:
        accuracy, seconds = result.metrics["test"]["accuracy"], result.metrics["train_seconds"]
        results[label] = (accuracy, seconds)
        print(f"  seed {seed} {label}: USPS test accuracy {accuracy:.4f} (val {result.metrics['val']['accuracy']:.4f}),"
              f" {seconds:.1f} s", flush=True)

    record("target-only", fit(build_config(overrides={**target, **settings("target-only")}),
                              splits=target_splits, progress=False))
    source_config = build_config(overrides={"train": f"{mnist}@train", "val": f"{mnist}@test", "test": f"{usps}@test",
                                            **settings("source-only")})
    source_run = fit(source_config, progress=False)
    record("source-only", source_run)
    record("pretrain+finetune", fit(build_config(overrides={**target, **settings("pretrain+finetune"),
                                                            "weights": source_run.run_dir}),
                                    splits=target_splits, progress=False))
    for label in (name for name in BUDGET if name.startswith("joint")):
        config = build_config(overrides={**target, **settings(label), "source": f"{mnist}@train"})
        record(label, fit(config, splits=joint_splits, progress=False))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding mnist/ and usps/")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply epochs (steps per epoch for joint); "
                        "below 1 for a quick smoke test")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"seeds {args.seeds}, scale {args.scale:g}", flush=True)
    started = time.perf_counter()
    per_seed = []
    with tempfile.TemporaryDirectory(prefix="joint-digits-") as tmp:
        for seed in args.seeds:
            per_seed.append(run_seed(seed, args.data, Path(tmp), args.scale))
    labels = list(BUDGET)
    accuracy = {label: [r[label][0] for r in per_seed] for label in labels}
    seconds = {label: [r[label][1] for r in per_seed] for label in labels}

    print(f"\nMNIST -> USPS, 10 USPS labels per class: USPS test accuracy and training time, mean ± std over "
          f"{len(args.seeds)} seeds (wall time {time.perf_counter() - started:.0f} s)")
    print("| method | USPS test accuracy | train time (s) |\n|---|---|---|")
    for label in labels:
        print(f"| {label} | {mean_std(accuracy[label])} | {mean_std(seconds[label], 1)} |")

    best = max(labels, key=lambda label: statistics.mean(accuracy[label]))
    mean = {label: statistics.mean(accuracy[label]) for label in labels}
    print(f"\nbest: {best} ({mean[best]:.3f}); "
          f"{100 * (mean[best] - mean['target-only']):+.1f} points over target-only, "
          f"{100 * (mean[best] - mean['source-only']):+.1f} points over source-only")
    for other in ("target-only", "source-only"):
        if best != other:
            gaps = [a - b for a, b in zip(accuracy[best], accuracy[other], strict=True)]
            print(f"  per-seed gap {best} - {other}: {', '.join(f'{100 * g:+.1f}' for g in gaps)} points")


if __name__ == "__main__":
    main()
