"""Benchmark: classification -> detection transfer on the raccoon photos (issue 14's evidence).

Per seed, a seeded 80/20 split of the 200 raccoon images (the 80% train, of which ``--method detection`` holds out
20% for model selection; the 20% test is only scored at the end). Conditions, each with the same budget (epochs,
batch size, learning rate, image size):

  * ``finetune``: the ImageNet-pretrained backbone fine-tuned (head-only first epoch, discriminative learning rates,
    frozen BatchNorm: the method's defaults);
  * ``frozen``: the same backbone frozen (``--freeze backbone``): only the FPN and the detector's heads train;
  * ``scratch``: the same architecture from random weights (``--no-pretrained``; BatchNorm trains).

Reports mean and std over the seeds of test mAP@0.5 and mAP (0.5:0.95), training time, seconds per epoch and
inference images/s, for every ``--detectors`` x ``--backbones`` combination. Prints the CPU model: run it alone (two
cores shared with another job slow torch down up to 10x).

Usage:  python bench/detection_raccoon.py [--seeds 0 1 2] [--epochs 12] [--detectors fasterrcnn,fcos]
            [--backbones efficientnet_lite0,torchvision:mobilenet_v2] [--conditions finetune,frozen,scratch]
            [--limit N] [--out DIR]
A quick smoke run:  python bench/detection_raccoon.py --seeds 0 --epochs 1 --limit 20 --conditions finetune
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import DATA, cpu_model, machine_line, mean_std, mobilenet_weights

from transferlab.api import fit
from transferlab.data.detection import load_detection_data

RACCOON = DATA / "raccoon"
# backbones whose ImageNet weights come from a package file rather than the registry's own loader
LOCAL_WEIGHTS = {"torchvision:mobilenet_v2": mobilenet_weights}
CONDITIONS = {
    "finetune": {},
    "frozen": {"freeze": "backbone", "head_epochs": 0},
    "scratch": {"pretrained": False},
}


def split_folder(root: Path, seed: int, limit: int | None) -> Path:
    """A VOC view of the raccoon set (links to its files) with ``ImageSets/Main/{train,test}.txt``: a seeded 80/20
    split of the images (the first ``limit`` images of a seeded shuffle when given, for smoke runs)."""
    stems = sorted(path.stem for path in (RACCOON / "annotations").glob("*.xml"))
    order = np.random.default_rng(seed).permutation(len(stems))[: limit or len(stems)]
    cut = round(0.8 * len(order))
    folder = root / f"raccoon-seed{seed}-{len(order)}"
    if not folder.exists():
        (folder / "ImageSets" / "Main").mkdir(parents=True)
        (folder / "images").symlink_to(RACCOON / "images")
        (folder / "annotations").symlink_to(RACCOON / "annotations")
        for split, part in (("train", order[:cut]), ("test", order[cut:])):
            (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{stems[i]}\n" for i in part))
    return folder


def images_per_second(model, data) -> float:
    started = time.perf_counter()
    model.detect(data, precision="auto")
    return len(data) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--min-size", type=int, default=384)
    parser.add_argument("--max-size", type=int, default=640)
    parser.add_argument("--detectors", default="fasterrcnn,fcos")
    parser.add_argument("--backbones", default="efficientnet_lite0")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--limit", type=int, default=None, help="use this many images (smoke runs)")
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args()
    print(f"# detection transfer on raccoon\n\n{machine_line()}; CPU: {cpu_model()}\n", flush=True)
    out = args.out or Path(tempfile.mkdtemp(prefix="detection-raccoon-"))
    budget = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "min_size": args.min_size,
              "max_size": args.max_size}
    print(f"budget: {budget}; runs in {out}\n", flush=True)
    rows = []
    for backbone in args.backbones.split(","):
        for detector in args.detectors.split(","):
            for condition in args.conditions.split(","):
                scores = {"map_50": [], "map": [], "seconds": [], "epoch_seconds": [], "images_per_second": []}
                for seed in args.seeds:
                    data = split_folder(out, seed, args.limit)
                    settings = {"method": "detection", "train": f"{data}@train", "test": f"{data}@test",
                                "backbone": backbone, "detector": detector, "seed": seed,
                                **({"weights": str(LOCAL_WEIGHTS[backbone]())}
                                   if backbone in LOCAL_WEIGHTS and condition != "scratch" else {}),
                                "out": str(out / f"{backbone.replace(':', '-')}-{detector}-{condition}-{seed}"),
                                "overwrite": True,
                                **budget, **CONDITIONS[condition]}
                    torch.manual_seed(seed)
                    result = fit(settings, progress=False)
                    test = result.metrics["test"]
                    scores["map_50"].append(test["map_50"])
                    scores["map"].append(test["map"])
                    scores["seconds"].append(result.metrics["train_seconds"])
                    scores["epoch_seconds"].append(float(np.mean([row["seconds"] for row in result.history])))
                    test_data = load_detection_data(f"{data}@test", split_preference=("test",))
                    scores["images_per_second"].append(images_per_second(result.model, test_data))
                    print(f"  {backbone} {detector} {condition} seed {seed}: test mAP@0.5 {test['map_50']:.3f}, "
                          f"mAP {test['map']:.3f}, {scores['seconds'][-1]:.0f} s", flush=True)
                rows.append((backbone, detector, condition, scores))
    print("\n| backbone | detector | condition | test mAP@0.5 | test mAP | train s | s/epoch | inference img/s |")
    print("|---|---|---|---|---|---|---|---|")
    for backbone, detector, condition, scores in rows:
        print(f"| {backbone} | {detector} | {condition} | {mean_std(scores['map_50'])} | {mean_std(scores['map'])} | "
              f"{mean_std(scores['seconds'], 0)} | {mean_std(scores['epoch_seconds'], 1)} | "
              f"{mean_std(scores['images_per_second'], 1)} |")
    print(f"\n{len(args.seeds)} seed(s); mean ± sample std.")


if __name__ == "__main__":
    main()
