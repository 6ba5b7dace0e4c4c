"""Benchmark: one optimizer step, torch's per-tensor loop vs its fused kernel (what `build_optimizer` uses), over the
parameters of a real training: LeNet + a linear head + the DANN discriminator (the MNIST -> USPS comparisons).

Prints the median milliseconds per step of each (interleaved rounds, both in this process), their ratio, and the
largest difference between the two sets of parameters after 5 identical steps. CPU model printed.

Usage:  python bench/optimizer_step.py [--rounds 30] [--optimizers adamw sgd]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import cpu_model, machine_line

from transferlab.backbones.lenet import LeNet
from transferlab.engine.optim import build_optimizer
from transferlab.methods.adaptation.modules import DomainDiscriminator


def parameters(seed: int = 0) -> list[torch.nn.Parameter]:
    """LeNet (28 px) + Linear(500, 10) + the DANN discriminator, each with a random gradient."""
    torch.manual_seed(seed)
    backbone = LeNet(28)
    modules = [backbone, torch.nn.Linear(backbone.num_features, 10), DomainDiscriminator(backbone.num_features)]
    params = [param for module in modules for param in module.parameters()]
    for param in params:
        param.grad = torch.randn_like(param)
    return params


def optimizer(name: str, fused: bool) -> torch.optim.Optimizer:
    built = build_optimizer(name, [{"params": parameters(), "lr": 3e-3}], weight_decay=0.01)
    if not fused:
        built.param_groups[0]["fused"] = None  # torch's per-tensor loop, as before transferlab fused them
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--optimizers", nargs="+", default=["adamw", "sgd"])
    args = parser.parse_args()
    print(f"{machine_line()}; CPU {cpu_model()}")
    for name in args.optimizers:
        candidates = {"per-tensor": optimizer(name, False), "fused": optimizer(name, True)}
        times = {label: [] for label in candidates}
        for _ in range(args.rounds):
            for label, built in candidates.items():
                started = time.perf_counter()
                for _ in range(10):
                    built.step()
                times[label].append((time.perf_counter() - started) / 10)
        plain, fused = (1000 * statistics.median(times[label]) for label in candidates)
        same = [optimizer(name, False), optimizer(name, True)]
        for _ in range(5):
            for built in same:
                built.step()
        diff = max((a - b).abs().max().item() for a, b in zip(same[0].param_groups[0]["params"],
                                                              same[1].param_groups[0]["params"]))
        count = sum(p.numel() for p in same[0].param_groups[0]["params"])
        print(f"{name}: {count:,} parameters; per-tensor {plain:.2f} ms/step, fused {fused:.2f} ms/step, "
              f"{plain / fused:.2f}x; max difference after 5 steps {diff:.2e}")


if __name__ == "__main__":
    main()
