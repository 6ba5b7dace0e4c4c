"""Benchmark: what grouping texts by length saves, in embedding and in training, against random order.

On SST-2 sentences with the packaged MiniLM (all-MiniLM-L6-v2), in one process, in interleaved rounds (medians):
  * embedding ``--embed-size`` sentences of ``train.tsv`` with `extract_features` (no cache): longest first (what
    transferlab does) vs the file's order, and the largest difference between the two sets of features;
  * one epoch of ``fit --method finetune`` (head_epochs 0, batch 32, ``--train-size`` sentences, 5 % validated):
    length-grouped batches (what transferlab does) vs random batches (the loader's other sampler), ``train_seconds``.
Precision ``--precision`` (default ``auto``: bf16 where the CPU has it, as printed).

Usage:  python bench/text_batching.py [--embed-size 4000] [--train-size 2000] [--rounds 3] [--precision auto]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import torch
from _common import DATA, machine_line, markdown_table, sample_table

from transferlab import embeddings
from transferlab.api import fit
from transferlab.backbones import create_backbone
from transferlab.data import load_data
from transferlab.engine import distributed
from transferlab.engine.precision import resolve_precision

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def in_file_order():
    """Embedding in the dataset's own order instead of longest first."""
    return mock.patch.object(embeddings, "_longest_first", lambda dataset: range(len(dataset)))


def random_batches():
    """Training batches drawn at random (the loader's sampler for data without lengths)."""
    return mock.patch.object(distributed, "lengths_of", lambda dataset: None)


def time_embedding(backbone, data, precision: str, plain: bool) -> tuple[float, torch.Tensor]:
    with in_file_order() if plain else nullcontext():
        started = time.perf_counter()
        features = embeddings.extract_features(backbone, data, precision=precision, use_cache=False, progress=False)
        return time.perf_counter() - started, features


def time_training(train: str, precision: str, plain: bool, out: Path) -> float:
    settings = {"method": "finetune", "train": train, "val_fraction": 0.05, "epochs": 1, "head_epochs": 0,
                "batch_size": 32, "max_length": 128, "precision": precision, "seed": 0, "out": out}
    with random_batches() if plain else nullcontext():
        return fit(settings, progress=False).metrics["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-size", type=int, default=4000)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--data", type=Path, default=DATA / "sst2")
    args = parser.parse_args()
    precision = resolve_precision(args.precision, torch.device("cpu"))
    print(machine_line(), flush=True)
    print(f"precision {args.precision} -> {precision}; {args.rounds} interleaved rounds, medians", flush=True)
    with tempfile.TemporaryDirectory(prefix="text-batching-") as tmp:
        tmp = Path(tmp)
        backbone = create_backbone(MINILM)
        embed_data = load_data(sample_table(args.data / "train.tsv", args.embed_size, 0, tmp / "embed.jsonl"),
                               split_preference=("train",))
        train = sample_table(args.data / "train.tsv", args.train_size, 1, tmp / "train.jsonl")
        times = {key: [] for key in ("embed sorted", "embed plain", "train grouped", "train plain")}
        largest_gap = 0.0
        for round_ in range(args.rounds):
            (sorted_s, sorted_x), (plain_s, plain_x) = (time_embedding(backbone, embed_data, precision, plain)
                                                        for plain in (False, True))
            times["embed sorted"].append(sorted_s)
            times["embed plain"].append(plain_s)
            largest_gap = max(largest_gap, float((sorted_x - plain_x).abs().max()))
            for plain, key in ((False, "train grouped"), (True, "train plain")):
                times[key].append(time_training(train, precision, plain, tmp / f"{key}-{round_}".replace(" ", "-")))
            print(f"  round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
    median = {key: statistics.median(values) for key, values in times.items()}
    rows = [["embed (extract_features)", f"{args.embed_size} sentences", f"{median['embed sorted']:.1f}",
             f"{median['embed plain']:.1f}", f"{median['embed plain'] / median['embed sorted']:.2f}x"],
            ["finetune, one epoch", f"{args.train_size} sentences", f"{median['train grouped']:.1f}",
             f"{median['train plain']:.1f}", f"{median['train plain'] / median['train grouped']:.2f}x"]]
    print(markdown_table(["what", "data", "by length (s)", "random / file order (s)", "speed-up"], rows))
    print(f"largest difference between the two orders' features: {largest_gap:.2e} (precision {precision})")


if __name__ == "__main__":
    main()
