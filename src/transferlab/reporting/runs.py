"""Finished run directories read into `RunRecord`s: what a report compares, read from the files alone.

A run directory is a folder holding ``metrics.json`` (written last by ``fit``: its run has finished). A path given to
`find_runs` is either one, or a folder searched for them at any depth (a ``compare`` directory, or any folder of
runs). Started but unfinished runs (``config.json`` without ``metrics.json``) are skipped with a note, and so is a
path that holds no run at all; the other paths go on.

What a record holds does not depend on the method or the kind of model: the headline metrics come from the run's
model kind (`transferlab.models.Predictor.headline_metrics`), confusion matrices from wherever the evaluation holds
one, and extras (an adaptation run's checkpoint selection, a multi-task run's per-task history columns) from the
keys the run wrote.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from transferlab.errors import TransferlabError
from transferlab.models import predictor_class
from transferlab.rundir import CHECKPOINT, CONFIG, HISTORY, METRICS

__all__ = ["COMPARE_JSON", "Confusion", "RunRecord", "RunSet", "find_runs", "read_run"]

COMPARE_JSON = "compare.json"  # a compare directory's grid and settings; its runs live below it


@dataclass
class Confusion:
    """A confusion matrix (rows: true class, columns: predicted) and what it belongs to (``""``: the model's only
    one, else e.g. a task name)."""

    title: str
    classes: list[str]
    matrix: list[list[int]]


@dataclass
class RunRecord:
    """One finished run, as a report uses it.

    ``metrics`` are the headline numbers of its test evaluation (its validation one when it has no test data;
    ``split`` says which), main metric first; names in ``lower_is_better`` are better when smaller.
    ``labels_per_class`` is None when the run trained on every label.
    """

    path: Path
    method: str
    backbone: str | None
    labels_per_class: int | None
    seed: int | None
    split: str | None
    metrics: dict[str, float]
    lower_is_better: frozenset[str] = frozenset()
    train_seconds: float | None = None
    inference_ms: float | None = None  # per example, when the run recorded its inference time
    machine: str | None = None
    history: list[dict] = field(default_factory=list)
    confusions: list[Confusion] = field(default_factory=list)
    selection: dict | None = None  # adaptation runs: which epoch each label-free scorer picks (metrics.json)
    config: dict = field(default_factory=dict)

    @property
    def data(self) -> str | None:
        """The data the run learned from and was tested on, as its settings name it (runs on different data are
        never compared)."""
        train = self.config.get("train") or self.config.get("source")
        target = f" -> {self.config['target']}" if self.config.get("target") else ""
        test = f", tested on {self.config['test']}" if self.config.get("test") else ""
        return f"{train}{target}{test}" if train else None

    @property
    def group(self) -> tuple[str, str | None, int | None, str | None]:
        """What seeds of the same experiment share: ``(method, backbone, labels_per_class, data)``."""
        return self.method, self.backbone, self.labels_per_class, self.data

    @property
    def main_metric(self) -> str | None:
        return next(iter(self.metrics), None)


@dataclass
class RunSet:
    """The finished runs found under some paths, and what was passed over (one line each, for the report)."""

    runs: list[RunRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compare_grids: list[dict] = field(default_factory=list)  # the compare.json of each compare directory given


def find_runs(paths: list[str | Path]) -> RunSet:
    """Every finished run directory at or below ``paths``, in path order, each read once.

    A path that is not a directory, or holds no run directory at any depth, is named in the notes ("not a run
    directory") and the others go on; so are unfinished runs and runs whose files cannot be read. A compare
    directory's ``compare.json`` is kept (`RunSet.compare_grids`) and its grid cells without a finished run are noted.
    """
    found = RunSet()
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            found.notes.append(f"{path}: not a run directory ({'no such path' if not path.exists() else 'a file'})")
            continue
        finished, unfinished = _scan(path)
        if not finished and not unfinished:
            found.notes.append(f"{path}: not a run directory (no {METRICS} in it or in any folder below it)")
        for run_dir in unfinished:
            found.notes.append(f"{run_dir}: unfinished run (no {METRICS}), skipped")
        before = len(found.runs)
        for run_dir in finished:
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            try:
                run = read_run(run_dir)
            except TransferlabError as exc:
                found.notes.append(f"{run_dir}: skipped ({exc})")
                continue
            found.runs.append(run)
            if not run.metrics:
                found.notes.append(f"{run_dir}: no test or validation metrics (it was trained without --test or "
                                   "validation data): shown with its training time only")
        if (path / COMPARE_JSON).is_file():
            _note_compare_grid(path, found, found.runs[before:])
    return found


def _scan(root: Path) -> tuple[list[Path], list[Path]]:
    """Finished and unfinished run directories at or below ``root``; hidden folders (a replacement in progress,
    ``.NAME.overwrite``) are not looked into, and nothing below a run directory is."""
    if (root / METRICS).is_file():
        return [root], []
    if (root / CONFIG).is_file() or (root / CHECKPOINT).is_file():
        return [], [root]
    finished, unfinished = [], []
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            more_finished, more_unfinished = _scan(child)
            finished += more_finished
            unfinished += more_unfinished
    return finished, unfinished


def read_run(run_dir: str | Path) -> RunRecord:
    """The record of the finished run in ``run_dir`` (see `RunRecord`).

    Raises:
        TransferlabError: ``run_dir`` has no ``metrics.json``, or a file of it is not what ``fit`` writes.
    """
    run_dir = Path(run_dir)
    metrics = _read_object(run_dir / METRICS)
    config = _read_object(run_dir / CONFIG) if (run_dir / CONFIG).is_file() else {}
    split = next((role for role in ("test", "val") if isinstance(metrics.get(role), dict)), None)
    evaluation = metrics[split] if split else {}
    headline, lower = _headline(run_dir, evaluation)
    return RunRecord(
        path=run_dir,
        method=str(config.get("method") or metrics.get("method") or "?"),
        backbone=config.get("backbone") or metrics.get("backbone"),
        labels_per_class=_labels_per_class(config.get("labels_per_class")),
        seed=config.get("seed"),
        split=split,
        metrics=headline,
        lower_is_better=lower,
        train_seconds=_number(metrics.get("train_seconds")),
        inference_ms=_inference_ms(metrics, split),
        machine=metrics.get("machine"),
        history=read_history(run_dir / HISTORY),
        confusions=_confusions(evaluation),
        selection=metrics.get("selection") if isinstance(metrics.get("selection"), dict) else None,
        config=config,
    )


def _read_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TransferlabError(f"file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TransferlabError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise TransferlabError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def _headline(run_dir: Path, evaluation: dict) -> tuple[dict[str, float], frozenset[str]]:
    """The run's headline metrics as its model kind names them; without a readable ``model.json`` (or for a kind
    this version does not know), the evaluation's top-level numbers."""
    if not evaluation:
        return {}, frozenset()
    try:
        kind = predictor_class(run_dir)
        values = kind.headline_metrics(evaluation)
        lower = kind.lower_is_better
    except (TransferlabError, KeyError, NotImplementedError):
        values = {key: value for key, value in evaluation.items() if key != "n" and isinstance(value, (int, float))}
        lower = frozenset()
    return {key: float(value) for key, value in values.items() if _number(value) is not None}, frozenset(lower)


def _labels_per_class(value) -> int | None:
    """None for every label (``None`` or ``"all"`` in the settings)."""
    if value is None or value == "all":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _inference_ms(metrics: dict, split: str | None) -> float | None:
    """Milliseconds per example of the evaluation the headline metrics come from (``metrics.json``'s
    ``<split>_ms_per_example``); None when the run did not record it."""
    return _number(metrics.get(f"{split}_ms_per_example")) if split else None


def _confusions(evaluation: dict, title: str = "") -> list[Confusion]:
    """Every confusion matrix an evaluation holds, at any depth (a multi-task run's are per task), titled by where
    it was found."""
    found = []
    if isinstance(evaluation.get("confusion_matrix"), list) and isinstance(evaluation.get("classes"), list):
        found.append(Confusion(title, list(evaluation["classes"]), evaluation["confusion_matrix"]))
    for key, value in evaluation.items():
        if isinstance(value, dict):
            found += _confusions(value, key if key != "tasks" else title)
    return found


def read_history(path: Path) -> list[dict]:
    """``history.csv`` as one dict per epoch, numbers as floats (empty cells dropped); [] without the file."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [{key: _cell(value) for key, value in row.items() if value not in ("", None)}
                for row in csv.DictReader(handle)]


def _cell(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _note_compare_grid(root: Path, found: RunSet, runs: list[RunRecord]) -> None:
    """Keep a compare directory's grid, and note its cells with no finished run (skipped, failed or not run yet)
    and the reasons it recorded for skipping (``compare.json``'s optional ``"skipped": [{"cell", "reason"}]``)."""
    try:
        spec = _read_object(root / COMPARE_JSON)
    except TransferlabError as exc:
        found.notes.append(f"{root}: {exc}")
        return
    found.compare_grids.append(spec)
    for skipped in spec.get("skipped", []) or []:
        if isinstance(skipped, dict):
            found.notes.append(f"{root}: cell {skipped.get('cell', '?')} skipped: {skipped.get('reason', '')}".rstrip())
        else:
            found.notes.append(f"{root}: cell skipped: {skipped}")
    grid = spec.get("grid") or {}
    try:
        expected = {(method, backbone, _labels_per_class(budget), seed)
                    for method in grid["methods"] for backbone in grid.get("backbones") or [None]
                    for budget in grid.get("labels_per_class") or [None] for seed in grid["seeds"]}
    except (KeyError, TypeError):
        return
    have = {(run.method, run.backbone, run.labels_per_class, run.seed) for run in runs}
    have |= {(method, None, budget, seed) for method, _, budget, seed in have}  # a grid without backbones
    missing = sorted(expected - have, key=str)
    if missing:
        shown = "; ".join(_cell_name(*cell) for cell in missing[:12])
        more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
        found.notes.append(f"{root}: {len(missing)} cell(s) of its grid have no finished run: {shown}{more}")


def _cell_name(method, backbone, budget, seed) -> str:
    parts = [method, backbone, f"{budget if budget is not None else 'all'} labels/class", f"seed {seed}"]
    return " ".join(str(part) for part in parts if part is not None)
