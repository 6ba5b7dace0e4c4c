"""Benchmark: unsupervised domain adaptation MNIST -> USPS and USPS -> MNIST with a LeNet trained from scratch.

Protocol (ours): source = the source domain's train split, all labels, minus a seeded stratified 5 % held out as
source validation data; target = the target domain's train split *without labels* (MNIST 60,000 / USPS 7,291
images). Images at 28 px (USPS upsampled from 16 px). Every method (defaults): LeNet + the adaptation methods'
bottleneck head (linear 256 + batch norm + ReLU, then linear), batch 128 (64 source + 64 target), AdamW, lr 3e-3,
cosine schedule, fp32, ``--epochs`` x ``--steps`` = 10 x 500 steps, trade-off 1. After every epoch the label-free
scorers rate the model on the source validation set and a seeded sample of 2,000 target-train images; the run keeps
the checkpoint its scorer (``--selection``, default: the project default) picks.

Reported per method (mean ± std over seeds):
  * target accuracy of the label-free selected checkpoint, on the 2,000-image target sample (labels used only to
    measure) and on the target *test* split (USPS 2,007 / MNIST 10,000 images);
  * oracle: target accuracy of the best checkpoint in hindsight on the same 2,000-image sample;
  * the target accuracy each scorer's pick would give (one run rates every epoch with every scorer).

Published anchors use other protocols: TLlib (its examples' digit scripts: LeNet + bottleneck 256, SGD lr 0.01
(0.1 for USPS -> MNIST), 20 epochs x 2,500 iterations of 128 + 128 images, i.e. 20x our images, evaluated on the
target test split with the best epoch reported); skada-bench (its own networks and a validation-based selection).

Usage:  python bench/adaptation_digits.py [--seeds 0 1 2] [--epochs 10] [--steps 500] [--methods dann mcc ...]
            [--directions mnist->usps] [--batch-size 128] [--head bottleneck] [--selection source-accuracy]
            [--precision fp32] [--ema 0.999] [--ceiling] [--json results.json]

``--ceiling`` adds, per direction and seed, the same LeNet trained with the target's own train labels and scored
on the target test split: the bound a label-free method works under.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import DATA, mean_std, peer_header
from transferlab.api import fit
from transferlab.api import build_config
from transferlab.methods.adaptation import ADAPTATION_METHODS
from transferlab.methods.adaptation.selection import SCORERS

def run(method: str, source: str, target: str, seed: int, args, out: Path) -> dict:
    data = args.data
    config = build_config(overrides={
        "method": method, "backbone": "lenet", "image_size": 28, "pretrained": False,
        "source": f"{source}:{data / source}@train", "target": f"{target}:{data / target}@train",
        "test": f"{target}:{data / target}@test", "val_fraction": 0.05, "batch_size": args.batch_size, "lr": args.lr,
        "optimizer": args.optimizer, "scheduler": args.scheduler, "weight_decay": args.weight_decay,
        "head": args.head, **({"head_hidden": [args.bottleneck]} if args.head == "bottleneck" else {}),
        "precision": args.precision, "epochs": args.epochs, **({"ema": args.ema} if args.ema else {}),
        "steps_per_epoch": args.steps, "seed": seed, "out": out / f"{method}-{source}-{target}-{seed}",
        "selection_all_scorers": True,  # the gap table compares every scorer's pick
        **({"selection": args.selection} if args.selection else {}),
    })
    result = fit(config, progress=False)
    selection = result.metrics["selection"]
    row = {
        "selected": selection["target_accuracy_selected"],
        "oracle": selection["target_accuracy_best_in_hindsight"],
        "test": result.metrics["test"]["accuracy"],
        "seconds": result.metrics["train_seconds"],
        **{f"by_{name}": pick["target_accuracy"] for name, pick in selection["by_scorer"].items()},
    }
    print(f"  {source}->{target} seed {seed} {method}: selected {row['selected']:.4f} (test {row['test']:.4f}), "
          f"oracle {row['oracle']:.4f}, {row['seconds']:.0f} s", flush=True)
    return row


def ceiling(target: str, seed: int, args, out: Path) -> float:
    """Test-split accuracy of the same LeNet trained *with* the target's train labels (``finetune`` from scratch,
    ``--ceiling-epochs`` epochs of 64, AdamW lr 3e-3, a 10 % hold-out picks the epoch): what a label-free method
    can hope for."""
    config = build_config(overrides={
        "method": "finetune", "backbone": "lenet", "image_size": 28, "pretrained": False,
        "train": f"{target}:{args.data / target}@train", "test": f"{target}:{args.data / target}@test",
        "val_fraction": 0.1, "batch_size": 64, "lr": 3e-3, "epochs": args.ceiling_epochs, "precision": args.precision,
        "seed": seed, "out": out / f"ceiling-{target}-{seed}"})
    accuracy = fit(config, progress=False).metrics["test"]["accuracy"]
    print(f"  {target} with its own train labels, seed {seed}: test split {accuracy:.4f}", flush=True)
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--methods", nargs="*", default=list(ADAPTATION_METHODS))
    parser.add_argument("--batch-size", type=int, default=128, help="source + target images per step")
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--scheduler", default="cosine")
    parser.add_argument("--head", default="bottleneck", help="bottleneck (the default of adaptation methods) or linear")
    parser.add_argument("--bottleneck", type=int, default=256, help="width of the bottleneck head")
    parser.add_argument("--directions", nargs="+", default=["mnist->usps", "usps->mnist"])
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding mnist/ and usps/")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("--precision", default="fp32", help="fp32 (the tables' setting), bf16 or auto")
    parser.add_argument("--ema", type=float, help="moving average of the weights, this decay per step (default: none)")
    parser.add_argument("--ceiling", action="store_true", help="also train on the target's own labels (a bound)")
    parser.add_argument("--ceiling-epochs", type=int, default=15, help="epochs of the --ceiling runs")
    parser.add_argument("--selection", choices=SCORERS, help="checkpoint scorer (default: the project default)")
    args = parser.parse_args()
    print(peer_header(), flush=True)  # machine, date, torch threads, CPU model and its bf16 flags
    print(f"seeds {args.seeds}, {args.epochs} epochs x {args.steps} steps", flush=True)
    started = time.perf_counter()
    results: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="adaptation-digits-") as tmp:
        for pair in args.directions:
            source, target = pair.split("->")
            results[pair] = {m: [run(m, source, target, s, args, Path(tmp)) for s in args.seeds] for m in args.methods}
            if args.ceiling:
                bound = [100 * ceiling(target, s, args, Path(tmp)) for s in args.seeds]
                print(f"  {pair}: target-supervised ceiling on the {target} test split {mean_std(bound, 1)} %")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"\nwall time {time.perf_counter() - started:.0f} s; accuracy in %, mean ± std over {len(args.seeds)} seeds")
    for pair, by_method in results.items():
        print(f"\n{pair}: target accuracy of the checkpoint chosen without target labels and of the oracle")
        print("| method | selected (sample) | selected (test split) | oracle (sample) | train time (s) |")
        print("|---|---|---|---|---|")
        for method, rows in by_method.items():
            pct = lambda key: mean_std([100 * r[key] for r in rows], 1)  # noqa: E731
            print(f"| {method} | {pct('selected')} | {pct('test')} | {pct('oracle')} | "
                  f"{mean_std([r['seconds'] for r in rows], 0)} |")
        print(f"\n{pair}: target accuracy (sample) of each scorer's pick, mean over methods and seeds")
        print("| " + " | ".join(SCORERS) + " |\n|" + "---|" * len(SCORERS))
        cells = []
        for name in SCORERS:
            values = [100 * r[f"by_{name}"] for rows in by_method.values() for r in rows if f"by_{name}" in r]
            cells.append(mean_std(values, 1) if values else "-")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
