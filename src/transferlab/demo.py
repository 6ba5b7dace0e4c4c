"""``transferlab demo``: does transfer pay off? ImageNet EfficientNet-Lite0 -> UCI handwritten digits (scikit-learn's
embedded copy) with a few labels per class, comparing training from scratch, feature extraction and fine-tuning on
the same split. Runs offline on a laptop CPU in a few minutes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from transferlab.compare import Grid, run_compare
from transferlab.data import load_data, stratified_split, take_per_class
from transferlab.methods.base import Splits

__all__ = ["DEMO_RUNS", "demo_splits", "run_demo"]

BACKBONE = "efficientnet_lite0"
IMAGE_SIZE = 112  # 8x8 digits gain nothing from 224 px; 112 keeps the demo inside a few minutes on 2 cores

# method -> settings; scratch and finetune get the same budget (epochs, batch size, peak learning rate)
DEMO_RUNS: dict[str, dict] = {
    "scratch": {"method": "scratch", "epochs": 15, "batch_size": 16, "lr": 3e-3},
    "features": {"method": "features"},
    "finetune": {"method": "finetune", "epochs": 15, "batch_size": 16, "lr": 3e-3, "head_epochs": 3},
}


def demo_splits(labels_per_class: int, seed: int) -> Splits:
    """Digits split once: N labeled training images per class, N per class for validation, the rest for test."""
    digits = load_data("sklearn-digits", split_preference=("all",))
    rest_index, test_index = stratified_split(digits.labels, 0.5, seed)
    rest = digits.subset(rest_index)
    train_index = take_per_class(rest.labels, labels_per_class, seed)
    remaining = np.setdiff1d(np.arange(len(rest)), train_index)
    val_index = remaining[take_per_class(rest.labels[remaining], labels_per_class, seed + 1)]
    test_index = np.concatenate([test_index, rest_index[np.setdiff1d(remaining, val_index)]])
    name = f"sklearn-digits ({labels_per_class} labels per class)"
    return Splits(
        train=_named(rest.subset(train_index), name + " train"),
        val=_named(rest.subset(val_index), name + " val"),
        test=_named(digits.subset(np.sort(test_index)), "sklearn-digits test"),
    )


def _named(data, name):
    data.name = name
    return data


def run_demo(out: Path | None = None, labels_per_class: int = 10, seed: int = 0, progress: bool = True) -> str:
    """Compare every method of `DEMO_RUNS` on the same split (`transferlab.compare`, one cell per method); return
    the comparison table as text. With ``out``, the cells stay there and a rerun reuses the finished ones."""
    splits = demo_splits(labels_per_class, seed)
    grid = Grid(methods=list(DEMO_RUNS), backbones=[BACKBONE], labels_per_class=[labels_per_class], seeds=[seed])
    method_settings = {name: {k: v for k, v in settings.items() if k != "method"} for name, settings in DEMO_RUNS.items()}
    with tempfile.TemporaryDirectory(prefix="transferlab-demo-") as scratch_dir:
        root = Path(out) if out is not None else Path(scratch_dir)
        result = run_compare(grid, {"train": splits.train.name, "image_size": IMAGE_SIZE}, root,
                             method_settings=method_settings, splits=splits, progress=progress)
    rows = [(row.method, row.metrics["accuracy"].mean, row.train_seconds.mean) for row in result.leaderboard]
    header = (f"transferlab demo: {BACKBONE} (ImageNet) -> UCI digits, {labels_per_class} labels per class, "
              f"{len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test images\n")
    table = [f"{'method':<10} {'test accuracy':>14} {'train time (s)':>15}"]
    table += [f"{label:<10} {accuracy:>14.3f} {seconds:>15.1f}" for label, accuracy, seconds in rows]
    return header + "\n".join(table + [f"note: {note}" for note in result.notes])
