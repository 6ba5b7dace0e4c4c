"""Benchmark: SST-2 sentiment with the packaged sentence-transformers MiniLM (all-MiniLM-L6-v2): frozen features,
full fine-tuning and LoRA.

Data (/work/shared/data/sst2): ``train.tsv`` (60,614 sentences and phrases) trains, ``dev.tsv`` (6,735) selects,
``test.tsv`` (872 sentences = GLUE's labelled dev set) reports. Labels 0 negative / 1 positive.

Methods (every run: max_length 128 tokens, mean pooling, bf16 autocast where the CPU has it):
  * ``features``: the frozen encoder embeds every sentence once (cached on disk, so seeds after the first only refit
    the head), then logistic regression on standardised embeddings, C picked on all of dev.tsv. Trains on the full
    train.tsv. The fit is deterministic, so its seeds agree up to the bf16 embedding.
  * ``finetune``: new linear head, whole encoder trained; the first epoch trains the head alone, then everything
    with transferlab's layer-wise learning rates (``--finetune-lr`` for the head, decaying geometrically to a tenth
    of it for the embeddings). AdamW, cosine schedule, batch 32.
  * ``lora``: rank-8 LoRA adapters (alpha 16) on the attention query/value projections, head trained in full,
    ``--lora-lr``.
  ``finetune`` and ``lora`` train on a seeded stratified sample of ``--train-size`` sentences of train.tsv for
  ``--epochs`` epochs and validate every epoch on a seeded 1,000-sentence sample of dev.tsv (the best epoch is
  kept). The seed draws the samples, the head initialisation and the batch order.

Published anchor (other protocol): small distilled BERT-class encoders fine-tuned on all 67,349 GLUE training
sentences, on GPUs, with tuned learning rates and more epochs, reach about 90-91 % on the SST-2 dev set (DistilBERT
91.3, Sanh et al. 2019). Differences here: a sentence-embedding checkpoint (contrastively trained, not the MLM one),
CPU, 60,614 training sentences for ``features`` and a few thousand for ``finetune``/``lora``, three epochs, no
hyper-parameter search.

Usage:  python bench/text_sst2.py [--seeds 0 1 2] [--methods features finetune lora] [--train-size 4000|all]
            [--val-size 1000] [--epochs 3] [--finetune-lr 1e-3] [--head-epochs N] [--lora-lr 3e-3] [--backbone DIR]
            [--json results.json] [--out-dir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import (
    DATA,
    machine_line,
    markdown_table,
    mean_std,
    percent,
    sample_table,
    taken_by,
)

from transferlab.api import fit

METHODS = ("features", "finetune", "lora")
REFERENCE = ("published reference (other protocol): small distilled BERT-class models fine-tuned on all of GLUE's "
             "SST-2 train reach ~90-91 % on its dev set (= test.tsv here), e.g. DistilBERT 91.3 (Sanh et al. 2019)")


def settings(method: str, seed: int, args, tmp: Path) -> dict:
    """The fit settings of one run; the data samples it needs are written into ``tmp``."""
    data, name = args.data, f"{method}-{seed}"
    common = {"method": method, "seed": seed, "out": tmp / "runs" / name, "max_length": 128,
              **({"backbone": args.backbone} if args.backbone else {}),
              "precision": args.precision, **taken_by(method, args.overrides),
              "test": sample_table(data / "test.tsv", args.test_size, 0, tmp / "test.jsonl")}
    if method == "features":
        return {**common, "head": "logistic",
                "train": sample_table(data / "train.tsv", args.features_train_size, seed, tmp / f"{name}-train.jsonl"),
                "val": sample_table(data / "dev.tsv", args.features_val_size, seed, tmp / f"{name}-val.jsonl")}
    return {**common, "epochs": args.epochs, "batch_size": 32,
            "lr": args.finetune_lr if method == "finetune" else args.lora_lr,
            "train": sample_table(data / "train.tsv", args.train_size, seed, tmp / f"{name}-train.jsonl"),
            "val": sample_table(data / "dev.tsv", args.val_size, seed, tmp / f"{name}-val.jsonl")}


def run(method: str, seed: int, args, tmp: Path) -> dict:
    started = time.perf_counter()
    result = fit(settings(method, seed, args, tmp), progress=False)
    metrics = result.metrics
    row = {"method": method, "seed": seed, "test_accuracy": metrics["test"]["accuracy"],
           "test_macro_f1": metrics["test"]["macro_f1"], "val_accuracy": metrics["val"]["accuracy"],
           "train_examples": metrics["train_images"], "train_seconds": metrics["train_seconds"],
           "wall_seconds": round(time.perf_counter() - started, 1)}
    print(f"  seed {seed} {method}: test accuracy {row['test_accuracy']:.4f} (val {row['val_accuracy']:.4f}), "
          f"{row['train_examples']} training sentences, train {row['train_seconds']:.1f} s, "
          f"wall {row['wall_seconds']:.0f} s", flush=True)
    return row


def report(rows: list[dict], args, wall: float) -> None:
    table = []
    for method in args.methods:
        mine = [r for r in rows if r["method"] == method]
        examples = sorted({r["train_examples"] for r in mine})
        table.append([method, percent([r["test_accuracy"] for r in mine]),
                      percent([r["test_macro_f1"] for r in mine]), percent([r["val_accuracy"] for r in mine]),
                      mean_std([r["train_seconds"] for r in mine], 0), "/".join(map(str, examples))])
    print(f"\nSST-2, {args.backbone or 'all-MiniLM-L6-v2'}; accuracy in %, mean ± std over seeds {args.seeds}; "
          f"wall time {wall:.0f} s{' (QUICK MODE: tiny samples, not a result)' if args.quick else ''}")
    print(markdown_table(["method", "test accuracy", "test macro-F1", "val accuracy", "train time (s)",
                          "training sentences"], table))
    print(f"\n{REFERENCE}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--train-size", type=lambda v: None if v == "all" else int(v), default=4000,
                        help="finetune/lora: sampled training sentences, or 'all' (the whole train.tsv)")
    parser.add_argument("--val-size", type=int, default=1000, help="finetune/lora: sampled dev.tsv sentences")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=1e-3, help="head lr; the encoder's decays from it")
    parser.add_argument("--head-epochs", type=int, help="finetune: head-only epochs first (default: transferlab's)")
    parser.add_argument("--lora-lr", type=float, default=3e-3)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--backbone", help="another text encoder (a local model directory or hub name; default: "
                        "transferlab's, the packaged MiniLM)")
    parser.add_argument("--data", type=Path, default=DATA / "sst2")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("--out-dir", type=Path, help="keep the run directories here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny samples, seed 0, one epoch (no head-only epoch unless --head-epochs "
                             "says otherwise)")
    args = parser.parse_args()
    args.features_train_size = args.features_val_size = args.test_size = None  # full files
    args.overrides = {} if args.head_epochs is None else {"head_epochs": args.head_epochs}
    if args.quick:
        args.overrides.setdefault("head_epochs", 0)  # the one epoch trains the encoder too
        args.seeds, args.epochs, args.train_size, args.val_size = args.seeds[:1], 1, 64, 32
        args.features_train_size, args.features_val_size, args.test_size = 300, 100, 100
    return args


def main() -> None:
    args = parse_args()
    print(machine_line(), flush=True)
    print(f"seeds {args.seeds}, methods {args.methods}; finetune/lora: {args.train_size} training sentences, "
          f"{args.val_size} validation sentences, {args.epochs} epochs, lr {args.finetune_lr} / {args.lora_lr}",
          flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="text-sst2-") as tmp:
        work = args.out_dir or Path(tmp)
        rows = [run(method, seed, args, work) for method in args.methods for seed in args.seeds]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    report(rows, args, time.perf_counter() - started)


if __name__ == "__main__":
    main()
