"""Benchmark: our DANN, CORAL and MCC against skada's deep DANN, DeepCoral and MCC on MNIST -> USPS (accuracy, time).

Split (per seed, shared by both libraries): source = MNIST train minus a seeded stratified 5 % held out as source
validation data (57,000 labeled images); target = USPS train *without labels* (7,291 images); scored on the USPS
test split (2,007 images). Images at 28 px: USPS upsampled from 16 px (ours: PIL bilinear per image in the data
loader; skada: the same images as one in-memory array, bilinear-upsampled with torch and rounded to grey levels,
checked at start to be within one grey level of our pipeline), then x/255, (x - 0.5) / 0.5.

Model (both): our ``lenet`` (500 features, random init) + one ``nn.Linear(500, 10)`` head; skada reads the
500-d features through ``layer_name="features"``.

Budget (both): ``--epochs`` x ``--steps`` optimiser steps (default 10 x 150 = 1,500, as bench/adaptation_digits.py)
of 32 source + 32 target images, AdamW (lr 3e-3, weight decay 0.01, over every trained parameter), cosine decay
to 0 stepped per batch, fp32, adaptation weight 1. skada's loader (its ``DomainBalancedDataLoader``: 32 + 32 a
step, the smaller domain cycled) is cut to ``--steps`` steps an epoch, so both take exactly the same number of
steps; the step count skada actually took is read back from its history and printed.

Methods matched to ours where skada exposes the setting:
  * dann -> skada ``DANN``: skada 0.6.0's default domain classifier ends in a softmax over one logit (constant 1,
    zero gradient, so it would not adapt at all); it gets our discriminator instead (500-1024-1024-1, BatchNorm,
    ReLU) behind skada's gradient reversal layer and a sigmoid. ``reg=0.5`` gives its loss
    ``BCE_s + BCE_t`` our scale ``0.5 (BCE_s + BCE_t)``. Left different: skada's reversal coefficient is 1 from
    the first step; ours ramps from 0 to 1 (Ganin & Lempitsky).
  * coral -> skada ``DeepCoral`` (``reg=1``): the same loss, ``||C_s - C_t||_F^2 / (4 d^2)``.
  * mcc -> skada ``MCC`` (``reg=1``, ``T=2.5``, our temperature): the same loss.

Checkpoints: ours keeps the epoch with the best source-validation accuracy (``selection: source-accuracy``);
skada keeps the last epoch. The epoch ours kept is printed with every run.

Time: wall seconds of the training call on this machine (torch threads as printed; other processes running
at the same time slow both). Ours (``train_seconds`` of ``fit``) includes building the model, decoding images
in the data loader, one checkpoint write per epoch and the validation after every epoch (the scorers a run with
the default settings logs: source accuracy, entropy, SND and the collapse check, on 3,000 source-validation and
2,000 target images, prepared once and kept); "ours excl. validation" subtracts the time of those validations,
replayed on the final model (the first, which prepares the images, and a later one for each further epoch: an
estimate). skada (``net.fit``) includes building its dataset and, every epoch, its sampler's pass over all
examples; it validates nothing (``train_split=None``). Neither includes loading the files or the test scoring.

One-epoch timing (``--epoch-timing``, on by default): our DANN, one epoch of ceil(60,000 / 32) = 1,875 steps of
32 MNIST + 32 USPS images, so the source is all of MNIST train, seen once (source validation: MNIST test); the
target, USPS train, is cycled (~8.2 passes). Reported: seconds, images per second counting both domains' images
(120,000), and the same without the epoch's validation (timed separately as above).

Usage:  python bench/skada_comparison.py [--seeds 0 1 2] [--epochs 10] [--steps 150] [--methods dann coral mcc]
            [--data ../shared/data] [--no-epoch-timing | --epoch-timing-only]
Needs skada and skorch (``pip install skada skorch``; not project dependencies; the install keeps torch as is).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from _common import (
    DIGITS_IMAGE_SIZE,
    DOMAIN_BATCH,
    compare_digits,
    digits_config,
    digits_parser,
    validation_seconds,
)
from skada.deep import DANN, MCC, DeepCoral
from skada.deep.base import DomainBalancedDataLoader
from skada.deep.modules import GradientReversalLayer
from skorch.callbacks import LRScheduler
from torch import nn

from transferlab.api import fit, prepare_splits
from transferlab.backbones.lenet import LeNet
from transferlab.config import FitConfig
from transferlab.methods.adaptation.modules import DomainDiscriminator

SKADA_NAMES = {"dann": "DANN", "coral": "DeepCoral", "mcc": "MCC"}


# -- skada ------------------------------------------------------------------------------------------------------
class LeNetClassifier(nn.Module):
    """Our lenet and linear head as one module; skada hooks the 500-d output of ``features``."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.features = LeNet(image_size=DIGITS_IMAGE_SIZE)
        self.head = nn.Linear(self.features.num_features, num_classes)

    def forward(self, x: torch.Tensor, sample_weight=None) -> torch.Tensor:  # skada passes sample_weight
        return self.head(self.features(x))


class ReversedDiscriminator(nn.Module):
    """Our DANN discriminator behind skada's gradient reversal layer, with the sigmoid skada's BCE loss expects."""

    def __init__(self, num_features: int, hidden: int):
        super().__init__()
        self.discriminator = DomainDiscriminator(num_features, hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.discriminator(GradientReversalLayer.apply(features, 1.0))).squeeze(1)


class FixedStepsLoader(DomainBalancedDataLoader):
    """skada's domain-balanced loader cut (or extended, cycling both domains) to ``steps`` steps an epoch."""

    def __init__(self, dataset, batch_size: int, steps: int, **kwargs):
        super().__init__(dataset, batch_size, **kwargs)
        self.sampler.num_samples = steps * batch_size


def skada_net(method: str, config: FitConfig, num_classes: int):
    """skada's estimator for ``method`` with our model, optimiser, schedule and step budget."""
    total_steps = config.epochs * config.steps_per_epoch
    common = dict(
        module=LeNetClassifier(num_classes), layer_name="features", batch_size=DOMAIN_BATCH,
        max_epochs=config.epochs, train_split=None, optimizer=torch.optim.AdamW, lr=config.lr,
        optimizer__weight_decay=config.weight_decay, device="cpu", verbose=0,
        callbacks=[LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR, T_max=total_steps,
                               step_every="batch")],
    )
    if method == "dann":
        discriminator = ReversedDiscriminator(LeNet(DIGITS_IMAGE_SIZE).num_features, config.discriminator_hidden)
        net = DANN(reg=0.5 * config.trade_off, domain_classifier=discriminator, **common)
    elif method == "coral":
        net = DeepCoral(reg=config.trade_off, **common)
    elif method == "mcc":
        net = MCC(reg=config.trade_off, T=config.mcc_temperature, **common)
    else:
        raise ValueError(f"no skada counterpart for method '{method}'; choose from {', '.join(SKADA_NAMES)}")
    # skada's factories fix iterator_train; skorch lets it be replaced afterwards
    return net.set_params(iterator_train=FixedStepsLoader, iterator_train__steps=config.steps_per_epoch)


def skada_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """skada's convention, from `digit_arrays`: source ``sample_domain`` positive, target negative with labels
    masked as -1."""
    source, target = arrays["source"], arrays["target"]
    return {
        "X": np.concatenate([source, target]),
        "y": np.concatenate([arrays["source_labels"], np.full(len(target), -1)]),
        "sample_domain": np.concatenate([np.ones(len(source), dtype=np.int64), -np.ones(len(target), dtype=np.int64)]),
        "X_test": arrays["test"],
        "y_test": arrays["test_labels"],
    }


def run_skada(method: str, config: FitConfig, digits: dict[str, np.ndarray]) -> dict:
    """skada's ``method`` trained on `digit_arrays` ``digits``: test accuracy, seconds of ``fit``, steps taken."""
    arrays = skada_arrays(digits)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    net = skada_net(method, config, num_classes=int(arrays["y"].max()) + 1)
    started = time.perf_counter()
    net.fit(arrays["X"], arrays["y"], sample_domain=arrays["sample_domain"])
    seconds = time.perf_counter() - started
    predicted = net.predict(arrays["X_test"], sample_domain=-np.ones(len(arrays["X_test"]), dtype=np.int64))
    return {
        "accuracy": float((predicted == arrays["y_test"]).mean()),
        "seconds": seconds,
        "steps": sum(len(epoch["batches"]) for epoch in net.history),
    }


# -- the benchmark ----------------------------------------------------------------------------------------------
def epoch_timing(data: Path, seed: int, out: Path) -> None:
    """One epoch of our DANN over all of MNIST train (1,875 steps) and USPS train: time and images per second."""
    config = digits_config("dann", data, seed, epochs=1, steps=None, out=out, val=f"mnist:{data / 'mnist'}@test")
    splits = prepare_splits(config)
    steps = math.ceil(len(splits.train) / DOMAIN_BATCH)  # one pass over MNIST train
    config = config.model_copy(update={"steps_per_epoch": steps})
    result = fit(config, splits=splits, progress=False)
    epoch = result.history[0]["seconds"]
    validation = validation_seconds(result.model, splits, config)
    images = steps * config.batch_size
    print(f"\none epoch of our DANN, {steps} steps x ({DOMAIN_BATCH} MNIST + {DOMAIN_BATCH} USPS) = {images:,} "
          f"images ({len(splits.train):,} MNIST train images once, {len(splits.target):,} USPS train images "
          f"~{steps * DOMAIN_BATCH / len(splits.target):.1f} times), {torch.get_num_threads()} torch threads:")
    print(f"  fit total {result.metrics['train_seconds']:.1f} s; the epoch {epoch:.1f} s = "
          f"{images / epoch:,.0f} images/s, of which validation {validation:.1f} s ({len(splits.val):,} MNIST test + "
          f"{min(config.selection_samples, len(splits.target)):,} USPS images, timed separately)")
    print(f"  training steps alone: {epoch - validation:.1f} s = {images / (epoch - validation):,.0f} images/s; "
          f"target test accuracy {100 * result.metrics['test']['accuracy']:.1f} %", flush=True)


def main() -> None:
    parser = digits_parser(__doc__.splitlines()[0], SKADA_NAMES)
    parser.add_argument("--epoch-timing", action=argparse.BooleanOptionalAction, default=True,
                        help="also time one epoch of our DANN over MNIST train + USPS train")
    parser.add_argument("--epoch-timing-only", action="store_true", help="only the one-epoch timing (no skada)")
    args = parser.parse_args()
    if args.epoch_timing_only:
        with tempfile.TemporaryDirectory(prefix="skada-comparison-") as tmp:
            epoch_timing(args.data, args.seeds[0], Path(tmp) / "epoch-timing")
        return
    print(f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"skada {version('skada')}, skorch {version('skorch')}, load average {os.getloadavg()[0]:.1f}; seeds "
          f"{args.seeds}, {args.epochs} epochs x {args.steps} steps", flush=True)
    with tempfile.TemporaryDirectory(prefix="skada-comparison-") as tmp:
        compare_digits(args, "skada", SKADA_NAMES, run_skada, Path(tmp))
        if args.epoch_timing:
            epoch_timing(args.data, args.seeds[0], Path(tmp) / "epoch-timing")


if __name__ == "__main__":
    main()
