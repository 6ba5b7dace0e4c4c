"""Benchmark: does transfer pay off without labels? Retrieval and clustering quality of embeddings.

For each data set, the labeled test split is the gallery and every example queries it (leave-one-out), with
``transferlab evaluate EMB``'s metrics (`retrieval_metrics`: recall@1, mAP@R; k-means NMI). Rows:

  raw         the no-transfer baseline: pixels (32 x 32), TF-IDF (fitted on the gallery's texts), MFCC means
  frozen      the pretrained backbone, as ``transferlab embed`` writes it
  whitened    frozen + PCA-whitening fitted on the gallery itself without labels (``embed --whiten``, 90 % variance)
  fine-tuned  the backbone of a ``fit --method finetune`` run on the data's *train* split (disjoint from the
              gallery; 3 seeds, mean ± std), embedded with ``embed --backbone RUN``

Data: hymenoptera val (153 photos, train split 244), USPS test (2,007 digits at 64 px; fine-tuned on 2,000 of
train), MNIST test (10,000, 32 px; no fine-tuned row), VADER tweets (positive/negative, 1,000 sampled; fine-tuned on
2,000 movie reviews: a domain shift), FSDD test (300 clips, label = speaker; Resemblyzer; no fine-tuned row).

Usage:  python bench/retrieval_quality.py [--seeds 0 1 2] [--sets hymenoptera usps mnist tweets fsdd]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import numpy as np
from _common import DATA, machine_line, mean_std, read_table, stratified_sample, write_jsonl, write_manifest

from transferlab.api import build_config, fit
from transferlab.data import load_data
from transferlab.unsupervised import BackboneSource, embed_data
from transferlab.unsupervised.retrieval_metrics import retrieval_metrics

POLAR = ["positive", "negative"]


def sets(scratch: Path) -> dict[str, dict]:
    """name -> gallery spec, train spec for fine-tuning (or None), backbone settings, raw-feature kind."""
    tweets = [row for row in read_table(DATA / "sentiment" / "tweets.csv") if row["label"] in POLAR]
    tweets = [tweets[i] for i in stratified_sample([r["label"] for r in tweets], 1000, 0)]
    movies = [row for row in read_table(DATA / "sentiment" / "movies.csv") if row["label"] in POLAR]
    movies = [movies[i] for i in stratified_sample([r["label"] for r in movies], 2000, 0)]
    clips = sorted((DATA / "fsdd" / "recordings").glob("*.wav"))
    test_clips = [(path, path.stem.split("_")[1]) for path in clips if int(path.stem.split("_")[2]) < 5]
    return {
        "hymenoptera": dict(gallery=f"{DATA / 'hymenoptera'}@val", train=f"{DATA / 'hymenoptera'}@train",
                            backbone="efficientnet_lite0", image_size=None, raw="pixels", epochs=4),
        "usps": dict(gallery=f"usps:{DATA / 'usps'}@test", train=f"usps:{DATA / 'usps'}@train",
                     train_size=2000, backbone="efficientnet_lite0", image_size=64, raw="pixels", epochs=3),
        "mnist": dict(gallery=f"mnist:{DATA / 'mnist'}@test", train=None, backbone="efficientnet_lite0",
                      image_size=32, raw="pixels"),
        "tweets": dict(gallery=str(write_jsonl(scratch / "tweets.jsonl", tweets, ("text", "label"))),
                       train=str(write_jsonl(scratch / "movies.jsonl", movies, ("text", "label"))),
                       backbone=None, image_size=None, raw="tfidf", epochs=2),
        "fsdd": dict(gallery=str(write_manifest(scratch / "fsdd-test.csv", test_clips)), train=None, backbone=None,
                     image_size=None, raw="mfcc"),
    }


def raw_features(kind: str, data) -> np.ndarray:
    if kind == "pixels":
        return np.stack([np.asarray(data.load_image(i).convert("RGB").resize((32, 32)), dtype=np.float32).ravel()
                         for i in range(len(data))])
    if kind == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(sublinear_tf=True, min_df=2).fit_transform(data.texts).toarray().astype(np.float32)
    import librosa

    rows = []
    for path in data.paths:
        samples, rate = librosa.load(path, sr=8000)
        rows.append(librosa.feature.mfcc(y=samples, sr=rate, n_mfcc=20).mean(axis=1))
    return np.stack(rows).astype(np.float32)


def scores(vectors: np.ndarray, labels: np.ndarray) -> dict:
    metrics = retrieval_metrics(vectors, labels)
    return {"recall@1": metrics["recall@1"], "map@r": metrics["map@r"], "nmi": metrics["nmi"]}


def fine_tuned(setting: dict, seed: int, scratch: Path) -> dict:
    overrides = {"train": setting["train"], "method": "finetune", "epochs": setting["epochs"], "seed": seed,
                 "out": scratch / f"ft-{seed}", "overwrite": True, "val_fraction": 0.1}
    if setting.get("train_size"):
        overrides["labels_per_class"] = setting["train_size"] // 10
    if setting["backbone"]:
        overrides["backbone"] = setting["backbone"]
    if setting["image_size"]:
        overrides["image_size"] = setting["image_size"]
    run = fit(build_config(overrides=overrides), progress=False).run_dir
    embeddings = embed_data(setting["gallery"], BackboneSource(str(run)), progress=False)
    return scores(embeddings.vectors, embeddings.labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sets", nargs="+", default=["hymenoptera", "usps", "mnist", "tweets", "fsdd"])
    args = parser.parse_args()
    print(machine_line())
    print("| data | embedding | recall@1 | mAP@R | k-means NMI |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for name, setting in sets(scratch).items():
            if name not in args.sets:
                continue
            gallery = load_data(setting["gallery"], split_preference=("test", "val", "all"))
            labels = gallery.labels
            rows = {"raw (" + setting["raw"] + ")": scores(raw_features(setting["raw"], gallery), labels)}
            source = BackboneSource(setting["backbone"], image_size=setting["image_size"])
            frozen = embed_data(setting["gallery"], source, progress=False)
            backbone = frozen.info["backbone"]["name"]
            rows[f"frozen {backbone}"] = scores(frozen.vectors, frozen.labels)
            whitened = embed_data(setting["gallery"], source, whiten=True, progress=False)
            rows[f"frozen + PCA-whitening ({whitened.dim} dims)"] = scores(whitened.vectors, whitened.labels)
            for row, values in rows.items():
                print(f"| {name} ({len(gallery)}) | {row} | {values['recall@1']:.3f} | {values['map@r']:.3f} | "
                      f"{values['nmi']:.3f} |", flush=True)
            if setting["train"]:
                runs = [fine_tuned(setting, seed, scratch) for seed in args.seeds]
                cells = " | ".join(mean_std([run[key] for run in runs]) for key in ("recall@1", "map@r", "nmi"))
                print(f"| {name} ({len(gallery)}) | fine-tuned {backbone} on the train split, {len(runs)} seeds | "
                      f"{cells} |", flush=True)


if __name__ == "__main__":
    random.seed(0)
    main()
