"""Benchmark: sentiment polarity under domain shift, movie reviews -> tweets and movie reviews -> Amazon reviews, with
the packaged sentence-transformers MiniLM (all-MiniLM-L6-v2).

Data (/work/shared/data/sentiment, VADER ground truth): each file's texts rated ``positive`` or ``negative`` (the
few ``neutral`` ones are dropped everywhere, so the unlabeled target pool holds only polar texts: closed-set
adaptation). Each target file is split once (``--split-seed``), stratified, into target-train (60 %) and
target-test (40 %). Target-train is written WITHOUT its label column for the adaptation methods (``--report-oracle``
keeps it so that transferlab can report the target accuracy of the chosen and of the best epoch; it never trains
or selects on it). Source: per seed, a stratified sample of ``--source-size`` labeled movie sentences for training
and ``--source-val-size`` other ones for validation.

Rows (every run: ``classes: [positive, negative]``, max_length 128, AdamW, cosine schedule, ``--lr`` for the head
with transferlab's layer-wise decay for the encoder, first epoch head-only):
  * ``source-only``, ``dann``, ``mcc`` (``cdan``, ... with ``--methods``): source labels + unlabeled target-train,
    ``--epochs`` epochs of batch 32 (16 + 16 texts a step, ``--steps`` steps an epoch, default one pass over the
    larger domain: 188 steps for 3,000 source texts), trade-off 1; the
    checkpoint is chosen without target labels by source validation accuracy (transferlab's default scorer), with
    the scorers rating ``--selection-samples`` target-train texts every epoch.
  * ``target-supervised (10 labels/class)``: ``--supervised-method`` (default finetune; ``features`` = frozen
    encoder + logistic regression) on 10 labeled target-train texts per class (the seed draws them), batch 8,
    ``--supervised-epochs``; validation (best epoch, or logistic C) on the source validation sentences, so no
    target labels beyond the 20 are used.

Reported: target-test accuracy and macro-F1 (mean ± std over seeds) next to the target-test majority-class rate
(both targets are mostly positive); for adaptation runs with ``--report-oracle`` also the target-train-sample
accuracy of the label-free selected epoch and of the best epoch in hindsight (oracle).

Published text-adaptation anchors use other data and protocols (e.g. the Amazon product-category pairs of Blitzer
et al. 2007, with thousands of unlabeled target reviews); we know of no published adaptation baseline for these VADER
movie -> tweet / Amazon pairs.

Usage:  python bench/text_domain_shift.py [--seeds 0 1 2] [--targets tweets amazon] [--methods dann mcc]
            [--source-size 3000] [--epochs 3] [--steps N] [--supervised-method finetune] [--no-supervised]
            [--report-oracle]
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
    read_table,
    stratified_sample,
    stratified_split,
    taken_by,
    write_jsonl,
)

from transferlab.api import fit
from transferlab.methods.adaptation import ADAPTATION_METHODS

SOURCE = "movies"
POLAR = ["positive", "negative"]
SUPERVISED = "target-supervised (10 labels/class)"


def polar_rows(path: Path) -> list[dict]:
    return [row for row in read_table(path) if row["label"] in POLAR]


def split_target(name: str, args, tmp: Path) -> dict:
    """Write target-train (unlabeled, and labeled for the supervised row) and target-test once per target."""
    rows = polar_rows(args.data / f"{name}.csv")
    if args.target_rows:  # quick mode
        rows = [rows[i] for i in stratified_sample([r["label"] for r in rows], args.target_rows, args.split_seed)]
    train, test = stratified_split([r["label"] for r in rows], args.target_test_fraction, args.split_seed)
    train_rows, test_rows = [rows[i] for i in train], [rows[i] for i in test]
    unlabeled_columns = ("text", "label") if args.report_oracle else ("text",)
    test_labels = [r["label"] for r in test_rows]
    majority = max(test_labels.count(c) for c in POLAR) / len(test_labels)
    print(f"target {name}: {len(train_rows)} target-train texts ("
          f"{'labels kept for reporting only' if args.report_oracle else 'label column dropped'}), "
          f"{len(test_rows)} target-test texts (majority class {100 * majority:.1f} %)", flush=True)
    return {"majority": majority,
            "target": str(write_jsonl(tmp / f"{name}-train-unlabeled.jsonl", train_rows, unlabeled_columns)),
            "labeled": str(write_jsonl(tmp / f"{name}-train-labeled.jsonl", train_rows, ("text", "label"))),
            "test": str(write_jsonl(tmp / f"{name}-test.jsonl", test_rows, ("text", "label")))}


def source_sample(seed: int, args, tmp: Path) -> tuple[str, str]:
    """Seeded stratified source training sample and a disjoint validation sample (JSONL files)."""
    rows = polar_rows(args.data / f"{SOURCE}.csv")
    rest, train = stratified_split([r["label"] for r in rows], args.source_size, seed)
    val = [rest[i] for i in stratified_sample([rows[i]["label"] for i in rest], args.source_val_size, seed)]
    return (str(write_jsonl(tmp / f"source-train-{seed}.jsonl", [rows[i] for i in train], ("text", "label"))),
            str(write_jsonl(tmp / f"source-val-{seed}.jsonl", [rows[i] for i in val], ("text", "label"))))


def settings(method: str, target: dict, source: tuple[str, str], seed: int, args, out: Path) -> dict:
    name = method if method != SUPERVISED else args.supervised_method
    common = {"classes": POLAR, "seed": seed, "out": out, "max_length": 128, "precision": args.precision,
              "val": source[1], "test": target["test"], **taken_by(name, args.quick_overrides)}
    if method != SUPERVISED:
        return {**common, "method": method, "source": source[0], "target": target["target"], "epochs": args.epochs,
                "batch_size": 32, "steps_per_epoch": args.steps, "selection_samples": args.selection_samples,
                "lr": args.lr}
    if args.supervised_method == "features":  # scikit-learn fits the logistic head: no learning rate
        return {**common, "method": "features", "head": "logistic", "train": target["labeled"], "labels_per_class": 10}
    return {**common, "method": args.supervised_method, "train": target["labeled"], "labels_per_class": 10,
            "epochs": args.supervised_epochs, "batch_size": 8, "lr": args.lr}


def run(method: str, target_name: str, target: dict, seed: int, args, tmp: Path) -> dict:
    started = time.perf_counter()
    source = source_sample(seed, args, tmp)
    out = tmp / "runs" / f"{SOURCE}-{target_name}-{method.split()[0]}-{seed}"
    metrics = fit(settings(method, target, source, seed, args, out), progress=False).metrics
    selection = metrics.get("selection", {})
    row = {"pair": f"{SOURCE}->{target_name}", "method": method, "seed": seed, "majority": target["majority"],
           "test_accuracy": metrics["test"]["accuracy"], "test_macro_f1": metrics["test"]["macro_f1"],
           "selected": selection.get("target_accuracy_selected"),
           "oracle": selection.get("target_accuracy_best_in_hindsight"),
           "selected_epoch": selection.get("selected_epoch"), "train_examples": metrics["train_images"],
           "train_seconds": metrics["train_seconds"], "wall_seconds": round(time.perf_counter() - started, 1)}
    gap = (f", selected {row['selected']:.4f} / oracle {row['oracle']:.4f} on target-train"
           if row["oracle"] is not None else "")
    print(f"  {row['pair']} seed {seed} {method}: target-test accuracy {row['test_accuracy']:.4f}{gap}, "
          f"train {row['train_seconds']:.1f} s, wall {row['wall_seconds']:.0f} s", flush=True)
    return row


def report(rows: list[dict], args, wall: float) -> None:
    print(f"\nsentiment domain shift, all-MiniLM-L6-v2; accuracy in %, mean ± std over seeds {args.seeds}; "
          f"wall time {wall:.0f} s{' (QUICK MODE: tiny samples, not a result)' if args.quick else ''}")
    for pair in dict.fromkeys(r["pair"] for r in rows):
        table = []
        for method in [SUPERVISED if m == SUPERVISED else m for m in args.rows]:
            mine = [r for r in rows if r["pair"] == pair and r["method"] == method]
            label = f"{method} ({args.supervised_method})" if method == SUPERVISED else method
            table.append([label, percent([r["test_accuracy"] for r in mine]),
                          percent([r["test_macro_f1"] for r in mine]),
                          percent([r["selected"] for r in mine if r["selected"] is not None]),
                          percent([r["oracle"] for r in mine if r["oracle"] is not None]),
                          mean_std([r["train_seconds"] for r in mine], 0),
                          mean_std([r["wall_seconds"] for r in mine], 0)])
        majority = next(r["majority"] for r in rows if r["pair"] == pair)
        print(f"\n{pair}: target-test accuracy (majority class: {100 * majority:.1f} %) and macro-F1; accuracy of the "
              "label-free selected and of the best epoch (oracle) on a target-train sample (with --report-oracle)")
        print(markdown_table(["method", "target-test accuracy", "target-test macro-F1", "selected (target-train)",
                              "oracle (target-train)", "train time (s)", "wall per run (s)"], table))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--targets", nargs="+", choices=["tweets", "amazon"], default=["tweets", "amazon"])
    parser.add_argument("--methods", nargs="+", choices=[m for m in ADAPTATION_METHODS if m != "source-only"],
                        default=["dann", "mcc"], help="adaptation methods (source-only always runs)")
    parser.add_argument("--source-size", type=int, default=3000)
    parser.add_argument("--source-val-size", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int,
                        help="adaptation steps per epoch (default: one pass over the larger domain)")
    parser.add_argument("--lr", type=float, default=1e-3, help="head lr; the encoder's decays from it")
    parser.add_argument("--selection-samples", type=int, default=1000, help="target texts the scorers rate per epoch")
    parser.add_argument("--supervised-method", choices=["finetune", "features", "lora"], default="finetune")
    parser.add_argument("--supervised-epochs", type=int, default=10)
    parser.add_argument("--target-test-fraction", type=float, default=0.4)
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the one target-train/test split")
    parser.add_argument("--report-oracle", action="store_true",
                        help="keep target-train labels (never trained on) to report selected vs best-epoch accuracy")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--data", type=Path, default=DATA / "sentiment")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("--out-dir", type=Path, help="keep data samples and run directories here")
    parser.add_argument("--no-supervised", action="store_true", help="skip the target-supervised row")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: one pair, tiny samples, seed 0, one epoch (no head-only epoch)")
    args = parser.parse_args()
    args.target_rows, args.quick_overrides = None, {}
    if args.quick:
        args.quick_overrides = {"head_epochs": 0}  # the one epoch trains the encoder too
        args.seeds, args.targets, args.epochs, args.steps = args.seeds[:1], args.targets[:1], 1, 2
        args.source_size, args.source_val_size, args.target_rows, args.selection_samples = 32, 16, 80, 16
        args.supervised_epochs = 1
    args.rows = ["source-only", *args.methods, *([] if args.no_supervised else [SUPERVISED])]
    return args


def main() -> None:
    args = parse_args()
    print(machine_line(), flush=True)
    print(f"seeds {args.seeds}; source {SOURCE}: {args.source_size} training + {args.source_val_size} validation "
          f"texts; {args.epochs} epochs, {args.steps or 'one pass'} steps an epoch, lr {args.lr}", flush=True)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="text-domain-shift-") as tmp:
        work = args.out_dir or Path(tmp)
        for name in args.targets:
            target = split_target(name, args, work)
            rows += [run(method, name, target, seed, args, work) for method in args.rows for seed in args.seeds]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    report(rows, args, time.perf_counter() - started)


if __name__ == "__main__":
    main()
