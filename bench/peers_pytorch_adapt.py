"""Benchmark: our DANN and MCC against pytorch-adapt's DANN and MCC hooks on MNIST -> USPS (accuracy, time).

Split, images, model and our side are skada_comparison.py's (shared in ``_common.py``): source = MNIST train minus
a seeded stratified 5 % source validation (57,000 labeled images), target = USPS train *without labels* (7,291),
scored on USPS test (2,007); 28 px, (x / 255 - 0.5) / 0.5; our ``lenet`` (500 features, random init) + one
``nn.Linear(500, 10)``. pytorch-adapt gets the same images as in-memory arrays (within one grey level of our data
loader's, checked at start) and the same modules: ``G`` = ``LeNet``, ``C`` = ``nn.Linear(500, 10)`` and, for DANN,
``D`` = our discriminator (500-1024-1024-1, BatchNorm, ReLU) followed by ``nn.Flatten(0)``: its BCE loss takes
``(B,)`` logits, and a ``(B, 1)`` output would be read as class logits for a cross-entropy.

pytorch-adapt 0.0.83 is used without a framework wrapper, as its README's "vanilla PyTorch" section does: the
adapters ``DANN`` (wraps ``DANNHook``) and ``Classifier`` (wraps ``ClassifierHook``) with ``hook_kwargs={"post":
[MCCHook(...)]}`` (MCC is a loss hook added to a classifier, as in the README's "build complex algorithms"), the
containers ``Models``, ``Optimizers`` and ``LRSchedulers``, the datasets ``SourceDataset``, ``TargetDataset`` and
``CombinedSourceAndTargetDataset`` in a ``DataLoader``; a short loop calls ``adapter.training_step(batch)`` (the
hook computes the losses and steps the optimizers) and ``lr_schedulers.step("per_step")``, after
``models.train()``, as its Ignite wrapper does.

Budget (both): ``--epochs`` x ``--steps`` optimiser steps (default 10 x 150 = 1,500) of 32 source + 32 target
images; AdamW (lr 3e-3, weight decay 0.01, every trained parameter; pytorch-adapt has one AdamW per model, G, C and
D, which is the same update, AdamW being element-wise); cosine decay to 0 stepped per batch (pytorch-adapt:
``CosineAnnealingLR(T_max=steps)``; ours: the same curve in closed form); fp32; adaptation weight 1.

Loss weights, matched by giving the hooks a ``SumWeighter``:
  * dann: ``CE_s + 0.5 BCE_s + 0.5 BCE_t`` as ours. pytorch-adapt's default ``MeanWeighter`` takes the mean
    ``(CE_s + BCE_s + BCE_t) / 3``, i.e. twice our domain weight relative to the cross-entropy.
  * mcc: ``CE_s + 1 * MCC(T=2.5)`` as ours. ``MCCLoss``'s default temperature is ``T=1`` (we pass 2.5); the
    default ``MeanWeighter`` would halve both terms. The loss itself is ours (read in ``layers/mcc_loss.py``):
    weights ``1 + exp(-H)`` scaled to mean 1, ``C = p^T diag(w) p``; ``C / C.sum(dim=1)`` divides columns, not
    rows, but ``C`` is symmetric, so the off-diagonal mass over the classes is the same number.

Left different (pytorch-adapt's design; stated, not changed):
  * Gradient reversal: ``DANNHook``'s ``GradientReversalHook`` multiplies by a constant ``-1`` from the first step
    (no schedule in the hook API); ours ramps the coefficient from 0 to 1 (Ganin & Lempitsky). (Its weight buffer is
    ``torch.tensor([weight])``: with the default ``gradient_reversal_weight=1``, an int64 tensor, so a hand-made
    ramp through ``GradientReversal.update_weight`` would truncate to 0 unless the weight is given as ``1.0``.)
  * The hooks run G, and D, once per domain: the discriminator's BatchNorm normalises source and target features
    separately; ours runs one pass over both domains, so its BatchNorm statistics mix them. (pytorch-adapt's own
    ``Discriminator`` has no BatchNorm; LeNet has none, so G computes the same function either way.)
  * Sampling: ``CombinedSourceAndTargetDataset`` walks the shuffled target and draws each source image uniformly
    at random, with replacement (``np.random.choice``); ours shuffles both domains without replacement and cycles.
    An epoch here is ``--steps`` batches of a loader that is restarted (reshuffled) when it runs out.
  * Checkpoints: ours keeps the epoch with the best source-validation accuracy; pytorch-adapt keeps the last
    (nothing is validated). The epoch ours kept is printed with every run.

Time: wall seconds of training on this machine, both in the same run (torch threads as printed; other processes
running at the same time slow both). Ours (``train_seconds`` of ``fit``) includes building the model, decoding
images in the data loader, one checkpoint write and one validation per epoch; "ours excl. validation" subtracts
those validations replayed on the final model (an estimate; see skada_comparison.py). pytorch-adapt: from building its datasets and
loader to the last step (arrays already in memory; nothing validated). Neither includes loading the files or the
test scoring.

Environment: pytorch-adapt 0.0.83 pins torchmetrics==0.9.3 and pytorch-metric-learning==1.6.3 (older than the dev
venv's), hence a venv of its own. torchmetrics 0.9.3 imports ``pkg_resources``, which setuptools 81 removed, so
setuptools stays below 81 (the smallest change that imports on torch 2.14.1). pip then reports that transferlab
wants torchmetrics>=1.4: transferlab imports torchmetrics only for detection metrics, never here. From the
repository root::

    python3 -m venv .venv-pytorch-adapt
    .venv-pytorch-adapt/bin/pip install torch==2.14.1 torchvision==0.29.1
    .venv-pytorch-adapt/bin/pip install -e .
    .venv-pytorch-adapt/bin/pip install pytorch-adapt==0.0.83 torch==2.14.1 torchvision==0.29.1 "setuptools<81"

Usage:  .venv-pytorch-adapt/bin/python bench/peers_pytorch_adapt.py [--seeds 0 1 2] [--epochs 10] [--steps 150]
            [--methods dann mcc] [--data ../shared/data] [--quick]
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from _common import (
    DIGITS_IMAGE_SIZE,
    DOMAIN_BATCH,
    compare_digits,
    cpu_model,
    digits_parser,
    machine_line,
)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlab.backbones.lenet import LeNet
from transferlab.config import FitConfig
from transferlab.methods.adaptation.modules import DomainDiscriminator

REPO = Path(__file__).resolve().parents[1]
INSTALL = (f"python3 -m venv .venv-pytorch-adapt && .venv-pytorch-adapt/bin/pip install torch==2.14.1 torchvision==0.29.1 "
           f"&& .venv-pytorch-adapt/bin/pip install -e {REPO} && .venv-pytorch-adapt/bin/pip install pytorch-adapt==0.0.83 "
           f"torch==2.14.1 torchvision==0.29.1 'setuptools<81'")

try:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        from pytorch_adapt.adapters import DANN, Classifier
        from pytorch_adapt.containers import LRSchedulers, Models, Optimizers
        from pytorch_adapt.datasets import (
            CombinedSourceAndTargetDataset,
            SourceDataset,
            TargetDataset,
        )
        from pytorch_adapt.hooks import MCCHook
        from pytorch_adapt.layers import MCCLoss
        from pytorch_adapt.weighters import SumWeighter
except ImportError as error:
    raise SystemExit(f"pytorch-adapt does not import ({error}); install it in a venv of its own: {INSTALL}") from error

PEER = "pytorch-adapt"
NAMES = {"dann": "DANNHook", "mcc": "ClassifierHook + MCCHook"}


def adapter_for(method: str, config: FitConfig, num_classes: int):
    """pytorch-adapt's adapter for ``method`` with our LeNet, head and discriminator, our optimiser, schedule and
    loss weights (`SumWeighter`: the source cross-entropy weighs 1)."""
    features = LeNet(image_size=DIGITS_IMAGE_SIZE)
    models = {"G": features, "C": nn.Linear(features.num_features, num_classes)}
    optimizers = Optimizers((torch.optim.AdamW, {"lr": config.lr, "weight_decay": config.weight_decay}))
    schedules = LRSchedulers((torch.optim.lr_scheduler.CosineAnnealingLR,
                              {"T_max": config.epochs * config.steps_per_epoch}))
    if method == "dann":
        models["D"] = nn.Sequential(DomainDiscriminator(features.num_features, config.discriminator_hidden),
                                    nn.Flatten(0))
        weighter = SumWeighter(weights={"src_domain_loss": 0.5 * config.trade_off,
                                        "target_domain_loss": 0.5 * config.trade_off})
        return DANN(models=Models(models), optimizers=optimizers, lr_schedulers=schedules,
                    hook_kwargs={"weighter": weighter})
    if method == "mcc":
        hook_kwargs = {"post": [MCCHook(loss_fn=MCCLoss(T=config.mcc_temperature))],
                       "weighter": SumWeighter(weights={"mcc_loss": config.trade_off})}
        return Classifier(models=Models(models), optimizers=optimizers, lr_schedulers=schedules,
                          hook_kwargs=hook_kwargs)
    raise ValueError(f"no pytorch-adapt counterpart for method '{method}'; choose from {', '.join(NAMES)}")


def endless_batches(digits: dict[str, np.ndarray]):
    """pytorch-adapt's pairing of the domains: 32 shuffled target images with 32 random source images a batch,
    the loader restarted whenever the target is used up."""
    source = TensorDataset(torch.from_numpy(digits["source"]), torch.from_numpy(digits["source_labels"]).long())
    pairs = CombinedSourceAndTargetDataset(SourceDataset(source), TargetDataset(torch.from_numpy(digits["target"])))
    loader = DataLoader(pairs, batch_size=DOMAIN_BATCH, shuffle=True, drop_last=True)
    return itertools.chain.from_iterable(itertools.repeat(loader))


def run_pytorch_adapt(method: str, config: FitConfig, digits: dict[str, np.ndarray]) -> dict:
    """pytorch-adapt's ``method`` trained on `digit_arrays` ``digits`` for our step budget: test accuracy of the
    last step, training seconds, steps taken."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)  # CombinedSourceAndTargetDataset draws the source images with numpy
    adapter = adapter_for(method, config, num_classes=int(digits["source_labels"].max()) + 1)
    started = time.perf_counter()
    batches = endless_batches(digits)
    adapter.models.train()
    steps = 0
    for _ in range(config.epochs):
        for batch in itertools.islice(batches, config.steps_per_epoch):
            adapter.training_step(batch)
            adapter.lr_schedulers.step("per_step")
            steps += 1
    seconds = time.perf_counter() - started
    adapter.models.eval()
    with torch.no_grad():
        logits = adapter.inference(torch.from_numpy(digits["test"]))["logits"]
    return {
        "accuracy": float((logits.argmax(1).numpy() == digits["test_labels"]).mean()),
        "seconds": seconds,
        "steps": steps,
    }


def main() -> None:
    parser = digits_parser(__doc__.splitlines()[0], NAMES)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 epoch x 5 steps, the first of --seeds and of --methods only")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.steps, args.seeds, args.methods = 1, 5, args.seeds[:1], args.methods[:1]
    print(f"{machine_line()}; {cpu_model()}; pytorch-adapt {version('pytorch-adapt')}, torchmetrics "
          f"{version('torchmetrics')}, load average {os.getloadavg()[0]:.1f}; seeds {args.seeds}, {args.epochs} "
          f"epochs x {args.steps} steps", flush=True)
    with tempfile.TemporaryDirectory(prefix="peers-pytorch-adapt-") as tmp:
        compare_digits(args, PEER, NAMES, run_pytorch_adapt, Path(tmp))


if __name__ == "__main__":
    main()
