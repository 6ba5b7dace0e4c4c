"""Benchmark: does transfer pay off? Accuracy and training time of scratch / features / finetune over seeds.

Two settings, each method on the same split and budget:
  * ``hymenoptera``: ImageNet EfficientNet-Lite0 -> ants vs bees photos (../shared/data/hymenoptera, its train/val split);
  * ``digits``: the `transferlab demo` setting (UCI digits, 10 labels per class).
Prints mean and std over the seeds of the held-out accuracy and of the training time.

Usage:  python bench/transfer_payoff.py [--setting hymenoptera|digits|both] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch

from transferlab.api import fit
from transferlab.api import build_config
from transferlab.demo import BACKBONE, DEMO_RUNS, IMAGE_SIZE, demo_splits

HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera"

# same budget for the two methods that train the network: epochs, batch size, peak learning rate
HYMENOPTERA_RUNS = {
    "scratch": {"method": "scratch", "epochs": 4, "batch_size": 16, "lr": 1e-3},
    "features": {"method": "features"},
    "finetune": {"method": "finetune", "epochs": 4, "batch_size": 16, "lr": 1e-3, "head_epochs": 1},
}


def run_setting(name: str, seeds: list[int], out: Path) -> list[tuple[str, list[float], list[float]]]:
    rows = []
    runs = HYMENOPTERA_RUNS if name == "hymenoptera" else DEMO_RUNS
    for label, settings in runs.items():
        accuracies, seconds = [], []
        for seed in seeds:
            common = {"seed": seed, "out": out / f"{name}-{label}-{seed}", "backbone": BACKBONE, **settings}
            if name == "hymenoptera":
                config = build_config(overrides={"train": str(HYMENOPTERA), **common})
                result = fit(config, progress=False)
                accuracies.append(result.metrics["val"]["accuracy"])
            else:
                splits = demo_splits(10, seed)
                config = build_config(overrides={"train": splits.train.name, "image_size": IMAGE_SIZE, **common})
                result = fit(config, splits=splits, progress=False)
                accuracies.append(result.metrics["test"]["accuracy"])
            seconds.append(result.metrics["train_seconds"])
            print(f"  {name} {label} seed {seed}: accuracy {accuracies[-1]:.4f}, {seconds[-1]:.1f} s", flush=True)
        rows.append((label, accuracies, seconds))
    return rows


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=("hymenoptera", "digits", "both"), default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    settings = ["hymenoptera", "digits"] if args.setting == "both" else [args.setting]
    print(f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"seeds {args.seeds}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in settings:
            rows = run_setting(name, args.seeds, Path(tmp))
            held_out = "val (153 photos)" if name == "hymenoptera" else "test"
            print(f"\n{name}: {held_out} accuracy and training time, mean ± std over {len(args.seeds)} seeds")
            print(f"| method | accuracy | train time (s) |\n|---|---|---|")
            for label, accuracies, seconds in rows:
                print(f"| {label} | {mean_std(accuracies)} | {mean_std(seconds)} |")


if __name__ == "__main__":
    main()
