"""Benchmark: one training step (forward, backward, SGD update) with contiguous vs channels-last convolution weights.

The training loop (`transferlab.engine.loop.Trainer`) moves models with 4-D (convolution) weights to the channels-last
memory format and their image batches with them. This script measures what that buys on this machine, per backbone,
in one process: the same model, batch and optimiser in both layouts, median of ``--steps`` timed steps after warm-up.

Rows: ``lenet`` on 64 + 64 digits at 28 px with a DANN discriminator (the adaptation benchmark's step), ``audio-cnn``
on 32 one-second clips (its log-mel front end runs inside the model), ``resnet18`` and ``efficientnet_lite0`` on 16
images at 224 px (random weights: speed does not depend on them).

Usage:  python bench/train_step_memory_format.py [--steps 10] [--backbones lenet audio-cnn resnet18 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from _common import machine_line
from transferlab.backbones.registry import create_backbone
from transferlab.methods.adaptation.modules import AdaptationInputs, DANNLoss

INPUTS = {  # backbone -> (batch inputs, create_backbone settings)
    "lenet": (lambda: torch.randn(128, 1, 28, 28), {"image_size": 28}),
    "audio-cnn": (lambda: {"input_values": torch.randn(32, 16000),
                           "attention_mask": torch.ones(32, 16000, dtype=torch.long)}, {}),
    "resnet18": (lambda: torch.randn(16, 3, 224, 224), {}),
    "efficientnet_lite0": (lambda: torch.randn(16, 3, 224, 224), {}),
}


def step_seconds(name: str, channels_last: bool, steps: int) -> float:
    torch.manual_seed(0)
    make_inputs, settings = INPUTS[name]
    backbone = create_backbone(name, pretrained=False, **settings)
    head = torch.nn.Linear(backbone.num_features, 10)
    adaptation = DANNLoss(backbone.num_features) if name == "lenet" else None
    modules = torch.nn.ModuleList([m for m in (backbone, head, adaptation) if m is not None])
    if channels_last:
        modules.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(modules.parameters(), lr=0.01, momentum=0.9)
    inputs = make_inputs()
    if channels_last and torch.is_tensor(inputs):
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (len(inputs) if torch.is_tensor(inputs) else 32,))
    times = []
    for step in range(steps + 3):
        started = time.perf_counter()
        features = backbone(inputs)
        logits = head(features)
        if adaptation is None:
            loss = F.cross_entropy(logits, labels)
        else:  # half the batch is the source domain, half the target
            f_s, f_t = features.chunk(2)
            l_s, l_t = logits.chunk(2)
            loss = F.cross_entropy(l_s, labels[: len(l_s)]) + adaptation(
                AdaptationInputs(f_s, f_t, l_s, l_t, 0.5, None))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 3:  # warm-up steps are not timed
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--backbones", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    args = parser.parse_args()
    print(machine_line(), flush=True)
    print("| backbone | contiguous (ms/step) | channels-last (ms/step) | speed-up |\n|---|---|---|---|")
    for name in args.backbones:
        plain, last = (step_seconds(name, layout, args.steps) for layout in (False, True))
        print(f"| {name} | {1000 * plain:.1f} | {1000 * last:.1f} | {plain / last:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
