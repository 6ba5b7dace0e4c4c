"""Few labels: `transferlab fit --method features --labels-per-class N` against the plain recipe a user would write.

The plain baseline embeds the same N labeled examples per class with the same frozen backbone (transferlab's
`extract_features`, so both sides read identical vectors) and fits scikit-learn's `LogisticRegression()` with its
defaults on all of them. transferlab runs exactly as a user would call it, without `--val`: what it does with the
few labels (hold some out? choose C how? refit?) is what is measured. Both are scored on the dataset's test split.
Every run prints how many labels it used for training and for model selection.

    python bench/few_labels.py [--seeds 0 1 2] [--settings hymenoptera:5 hymenoptera:20 usps:10 usps:20 sst2:16 sst2:200
                                                tweets:16 tweets:200 amazon:16 amazon:200]

``tweets`` and ``amazon`` are the VADER sentiment domains (``sentiment/*.csv``), binary as a user would set them up:
the rare ``neutral`` rows (score exactly 0: 4 of 4,200 tweets, 98 of 3,708 Amazon sentences) are dropped, and a seeded
stratified 70/30 train/test split is written to the scratch directory. Their smaller class (negative) keeps about 900
(tweets) and 1,040 (Amazon) training examples, so 200 per class fits.

Runs with the code on PYTHONPATH, so the same script measures an older checkout (``PYTHONPATH=old/src``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from _common import (
    DATA,
    machine_line,
    mean_std,
    read_table,
    stratified_split,
    write_jsonl,
)

SST2_SAMPLE = 4000  # sentences of SST-2's train.tsv the runs draw their labels from (and hold validation out of)
SENTIMENT_TEST = 0.3  # fraction of a VADER sentiment domain held out (stratified, seed 0) as its test split


def sentiment_split(domain: str, scratch: Path) -> tuple[Path, Path]:
    """``(train, test)`` JSONL tables of one VADER domain without its neutral rows: a seeded stratified split."""
    rows = [row for row in read_table(DATA / "sentiment" / f"{domain}.csv") if row["label"] != "neutral"]
    train, test = stratified_split([row["label"] for row in rows], SENTIMENT_TEST, seed=0)
    return tuple(write_jsonl(scratch / f"{domain}_{part}.jsonl", [rows[i] for i in indices], ("text", "label"))
                 for part, indices in (("train", train), ("test", test)))


def datasets(scratch: Path) -> dict[str, dict]:
    """name -> train spec, test spec and settings shared by both sides."""
    rows = read_table(DATA / "sst2" / "train.tsv")
    random.Random(0).shuffle(rows)
    sample = write_jsonl(scratch / "sst2_sample.jsonl", rows[:SST2_SAMPLE], ("sentence", "label"))
    test = write_jsonl(scratch / "sst2_test.jsonl", read_table(DATA / "sst2" / "test.tsv"), ("sentence", "label"))
    images, text = "efficientnet_lite0", "sentence-transformers/all-MiniLM-L6-v2"
    return {
        "hymenoptera": {"train": f"{DATA / 'hymenoptera'}@train", "test": f"{DATA / 'hymenoptera'}@val",
                        "backbone": images},
        "usps": {"train": f"usps:{DATA / 'usps'}@train", "test": f"usps:{DATA / 'usps'}@test", "image_size": 64,
                 "backbone": images},
        "sst2": {"train": str(sample), "test": str(test), "backbone": text},
        **{domain: {"train": str(train), "test": str(test), "backbone": text}
           for domain in ("tweets", "amazon") for train, test in [sentiment_split(domain, scratch)]},
    }


def build(overrides: dict):
    try:
        from transferlab.api import build_config
    except ImportError:  # transferlab 0.1
        from transferlab.config import build_config
    return build_config(overrides=overrides)


def run_transferlab(setting: dict, n: int, seed: int, out: Path, precision: str = "auto") -> dict:
    from transferlab.api import fit

    config = build({**setting, "method": "features", "labels_per_class": n, "seed": seed,
                    "out": out, "overwrite": True, "precision": precision})
    result = fit(config, progress=False)
    metrics = result.metrics
    labels = metrics.get("labels", {})
    return {"accuracy": metrics["test"]["accuracy"], "train_labels": metrics["train_images"],
            "selection_labels": labels.get("selection", metrics.get("val", {}).get("n", 0)),
            "selection": labels.get("selection_by", "validation split")}


def run_plain(setting: dict, n: int, seed: int, crop_pct: float | None = None) -> dict:
    """Embed N labels per class (drawn as transferlab draws them) and the test split; fit LogisticRegression().
    ``crop_pct`` replaces the backbone's eval center crop (timm's 0.875 for EfficientNet-Lite) for images."""
    from sklearn.linear_model import LogisticRegression

    from transferlab.backbones import create_backbone
    from transferlab.data import load_data, take_per_class
    from transferlab.embeddings import extract_features

    train = load_data(setting["train"], split_preference=("train", "all"))
    train = train.subset(take_per_class(train.labels, n, seed))
    test = load_data(setting["test"], split_preference=("test", "val", "all"))
    size = {"image_size": setting["image_size"]} if "image_size" in setting else {}
    backbone = create_backbone(setting["backbone"], **size)
    if crop_pct is not None:
        backbone.preprocess = dataclasses.replace(backbone.preprocess, crop_pct=crop_pct)
    x_train = extract_features(backbone, train, progress=False).numpy()
    x_test = extract_features(backbone, test, progress=False).numpy()
    classifier = LogisticRegression(max_iter=2000, random_state=seed).fit(x_train, train.labels)
    position = {name: i for i, name in enumerate(train.classes)}
    test_labels = np.array([position[test.classes[label]] for label in test.labels])
    return {"accuracy": float((classifier.predict(x_test) == test_labels).mean()), "train_labels": len(train)}


def crop_check(specs: dict, settings: list[str], seeds: list[int]) -> None:
    """Does the eval center crop (crop_pct 0.875) hurt small images? The plain baseline with and without it."""
    print("\n| dataset | labels per class | plain, crop_pct 0.875 (timm default) | plain, crop_pct 1.0 (no crop) |")
    print("|---|---|---|---|")
    for item in settings:
        name, n = item.split(":")
        if specs[name]["backbone"] != "efficientnet_lite0":
            continue
        cropped = [run_plain(specs[name], int(n), seed)["accuracy"] for seed in seeds]
        whole = [run_plain(specs[name], int(n), seed, crop_pct=1.0)["accuracy"] for seed in seeds]
        print(f"| {name} | {n} | {mean_std(cropped)} | {mean_std(whole)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=["hymenoptera:5", "hymenoptera:20", "usps:10", "usps:20",
                                                          "sst2:16", "sst2:200", "tweets:16", "tweets:200",
                                                          "amazon:16", "amazon:200"])
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="transferlab's precision (the plain side always embeds in fp32)")
    parser.add_argument("--crop-check", action="store_true",
                        help="image datasets only: the plain baseline with the backbone's center crop and without it")
    args = parser.parse_args()
    print(machine_line())
    print(subprocess.run(["bash", "-c", "lscpu | grep 'Model name'"], capture_output=True, text=True).stdout.strip())
    results = []
    with tempfile.TemporaryDirectory(prefix="few-labels-") as scratch:
        specs = datasets(Path(scratch))
        if args.crop_check:
            crop_check(specs, args.settings, args.seeds)
            return
        for item in args.settings:
            name, n = item.split(":")
            for seed in args.seeds:
                ours = run_transferlab(specs[name], int(n), seed, Path(scratch) / "run", args.precision)
                plain = run_plain(specs[name], int(n), seed)
                results.append({"dataset": name, "n": int(n), "seed": seed, "transferlab": ours, "plain": plain})
                print(json.dumps(results[-1]), flush=True)
    print("\n| dataset | labels per class | transferlab features | plain LogisticRegression | labels: train + selection |")
    print("|---|---|---|---|---|")
    for item in args.settings:
        name, n = item.split(":")
        rows = [r for r in results if r["dataset"] == name and r["n"] == int(n)]
        ours = mean_std([r["transferlab"]["accuracy"] for r in rows])
        plain = mean_std([r["plain"]["accuracy"] for r in rows])
        used = f"{rows[0]['transferlab']['train_labels']} + {rows[0]['transferlab']['selection_labels']}"
        print(f"| {name} | {n} | {ours} | {plain} | {used} ({rows[0]['transferlab']['selection']}) |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
