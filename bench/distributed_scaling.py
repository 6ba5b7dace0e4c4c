"""Benchmark: one process vs ``torchrun`` with N processes on this machine (issue 16's evidence).

The same ``transferlab fit`` (same data, backbone, seed and *global* batch: N processes take ``batch / N`` each) as
one process with every core's threads, and as N processes with ``cores / N`` threads each (gloo). Reports, per
seed and as mean ± std: training images/s (training examples x epochs / training seconds), validation and test
accuracy, and the communication volume of one step: the bytes of the gradients DDP all-reduces (every trainable
parameter, float32) and what a ring all-reduce sends per process, ``2 (N - 1) / N`` of them.

On 2 cores, 2 processes are not expected to be faster than 1 process with 2 threads: the point is that they train
the same model (accuracy) at a cost that is measured, not guessed. Run it alone (another job on the cores slows torch
down up to 10x).

Usage:  python bench/distributed_scaling.py [--processes 2] [--seeds 0 1 2] [--epochs 3] [--batch-size 32]
            [--method finetune] [--backbone efficientnet_lite0] [--image-size 128] [--train SPEC] [--test SPEC]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import DATA, cpu_model, machine_line, mean_std

from transferlab.api import load


def run(processes: int, threads: int, settings: dict, out: Path) -> dict:
    flags = [part for key, value in settings.items() for part in (f"--{key.replace('_', '-')}", str(value))]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] \
        if processes > 1 else [sys.executable]
    command = [*launcher, "-m", "transferlab", "fit", *flags, "--out", str(out), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return json.loads((out / "metrics.json").read_text())


def gradient_bytes(run_dir: Path) -> int:
    """float32 bytes of the model's parameters: what DDP all-reduces each step when all of them train (the
    benchmark's settings freeze nothing)."""
    return 4 * sum(p.numel() for p in load(run_dir).parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch (split over the processes)")
    parser.add_argument("--method", default="finetune")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--train", default=str(DATA / "hymenoptera" / "train"))
    parser.add_argument("--test", default=str(DATA / "hymenoptera" / "val"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"# 1 process vs torchrun x {args.processes}\n\n{machine_line()}; CPU: {cpu_model()}\n", flush=True)
    base = {"method": args.method, "train": args.train, "test": args.test, "backbone": args.backbone,
            "image_size": args.image_size, "epochs": args.epochs, "precision": "fp32", "head_epochs": 0,
            "freeze": "none"}
    print(f"settings: {base}, global batch {args.batch_size}; fp32 in both (bf16 speed varies by CPU)\n", flush=True)
    layouts = {1: (1, cores), args.processes: (args.processes, max(1, cores // args.processes))}
    results: dict[int, list[dict]] = {count: [] for count in layouts}
    with tempfile.TemporaryDirectory(prefix="ddp-bench-") as scratch:
        for seed in args.seeds:
            for count, (processes, threads) in layouts.items():
                settings = {**base, "seed": seed, "batch_size": args.batch_size // processes}
                out = Path(scratch) / f"p{processes}-s{seed}"
                metrics = run(processes, threads, settings, out)
                speed = metrics["train_images"] * args.epochs / metrics["train_seconds"]
                results[count].append({"speed": speed, "val": metrics["val"]["accuracy"],
                                       "test": metrics["test"]["accuracy"], "out": out})
                print(f"  seed {seed}, {processes} process(es) x {threads} thread(s): {speed:.1f} img/s, val "
                      f"{metrics['val']['accuracy']:.3f}, test {metrics['test']['accuracy']:.3f}", flush=True)
        volume = gradient_bytes(results[1][0]["out"])
    print("\n| processes x threads | batch per process | train img/s | val accuracy | test accuracy |")
    print("|---|---|---|---|---|")
    for count, (processes, threads) in layouts.items():
        rows = results[count]
        print(f"| {processes} x {threads} | {args.batch_size // processes} | "
              f"{mean_std([r['speed'] for r in rows], 1)} | {mean_std([r['val'] for r in rows])} | "
              f"{mean_std([r['test'] for r in rows])} |")
    ratio = [two["speed"] / one["speed"] for one, two in zip(results[1], results[args.processes], strict=True)]
    print(f"\nspeed ratio ({args.processes} processes / 1): {mean_std(ratio, 2)}")
    sent = 2 * (args.processes - 1) / args.processes * volume
    print(f"all-reduced per step: {volume / 1e6:.1f} MB of float32 gradients; a ring all-reduce sends "
          f"{sent / 1e6:.1f} MB per process per step")
    print(f"\n{len(args.seeds)} seed(s); mean ± sample std.")


if __name__ == "__main__":
    main()
