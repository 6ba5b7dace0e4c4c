"""``transferlab compare``: did transfer pay off on your data? A grid of ordinary runs, a leaderboard and a report.

``CMP/leaderboard.csv`` and ``CMP/report.html`` (`transferlab.reporting`) cover every finished cell in ``CMP``,
rewritten after each compare.

The grid is methods x backbones x labels per class x seeds. Each cell is an ordinary run directory under
``CMP/cells/`` (evaluate or predict any of them with the usual commands). Cells already finished are skipped and
a cell a killed compare left half-trained is resumed, so rerunning the same command after a crash, or with more
seeds, methods or budgets, only trains what is missing. ``CMP/compare.json`` records the data and settings shared by
every cell; a compare into a directory holding another one's is refused (naming what differs) unless ``overwrite``.

Settings shared by the cells (``--epochs``, ``--image-size``, a YAML config...) go to every method that takes them;
the ones a method does not take, or would ignore with its other settings (`FitConfig.ignored_settings`, e.g. the
epochs of ``features``' logistic head), are left out of its cells and said so once; a setting no method of the grid
would use is an error, as it would be for ``fit``.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferlab.api import build_config, fit, ignored_given_settings
from transferlab.backbones.registry import check_backbone_name
from transferlab.config import FitConfig
from transferlab.data import load_data
from transferlab.errors import TransferlabError
from transferlab.fileio import read_json, write_json
from transferlab.methods import get_method
from transferlab.reporting import LeaderboardRow, write_leaderboard_csv, write_report
from transferlab.rundir import RunDirLock, is_finished, is_resumable

__all__ = ["COMPARE_JSON", "Cell", "CellOutcome", "CompareResult", "Grid", "parse_budgets", "run_compare"]

log = logging.getLogger("transferlab")

COMPARE_JSON = "compare.json"
CELLS = "cells"
LEADERBOARD = "leaderboard.csv"
REPORT = "report.html"
_GRID_KEYS = ("method", "backbone", "labels_per_class", "seed", "out", "overwrite", "resume")


@dataclass(frozen=True)
class Cell:
    """One run of the grid; ``labels_per_class`` ``None`` means every label."""

    method: str
    backbone: str | None  # None: the default backbone of the data's modality
    labels_per_class: int | None
    seed: int

    @property
    def name(self) -> str:
        budget = "all" if self.labels_per_class is None else f"{self.labels_per_class}pc"
        backbone = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.backbone or "default")
        return f"{self.method}-{backbone}-{budget}-seed{self.seed}"

    def describe(self) -> str:
        budget = "all labels" if self.labels_per_class is None else f"{self.labels_per_class} per class"
        return f"{self.method}, {self.backbone or 'default backbone'}, {budget}, seed {self.seed}"


@dataclass
class Grid:
    methods: list[str]
    backbones: list[str | None] = field(default_factory=lambda: [None])
    labels_per_class: list[int | None] = field(default_factory=lambda: [None])
    seeds: list[int] = field(default_factory=lambda: [0])

    def cells(self) -> list[Cell]:
        """Cells in the order they run: cheap budgets and methods first, seeds innermost."""
        return [Cell(method, backbone, budget, seed) for budget in self.labels_per_class for backbone in self.backbones
                for method in self.methods for seed in self.seeds]

    def check(self) -> None:
        """Refuse an empty list, a repeated entry, an unknown method or backbone, before anything runs."""
        for name, values in (("--methods", self.methods), ("--backbones", self.backbones),
                             ("--labels-per-class", self.labels_per_class), ("--seeds", self.seeds)):
            if not values:
                raise TransferlabError(f"{name} lists nothing")
            repeated = sorted({str(v) for v in values if values.count(v) > 1})
            if repeated:
                raise TransferlabError(f"{name} lists {repeated[0]} more than once")
        for method in self.methods:
            get_method(method)  # unknown: one line with a suggestion
        for backbone in self.backbones:
            if backbone is not None:
                check_backbone_name(backbone)
        bad = [v for v in self.labels_per_class if v is not None and (isinstance(v, bool) or v < 1)]
        if bad:
            raise TransferlabError(f"--labels-per-class {bad[0]}: each budget must be a positive number or 'all'")

    def to_dict(self) -> dict:
        return {"methods": self.methods, "backbones": self.backbones,
                "labels_per_class": ["all" if v is None else v for v in self.labels_per_class], "seeds": self.seeds}


def parse_budgets(text: str) -> list[int | None]:
    """``"5,10,all"`` -> ``[5, 10, None]``: labels per class, ``all`` for every label."""
    budgets: list[int | None] = []
    for part in (piece.strip() for piece in str(text).split(",")):
        if part.lower() == "all":
            budgets.append(None)
        elif part.isdigit() and int(part) > 0:
            budgets.append(int(part))
        else:
            raise TransferlabError(f"--labels-per-class {part!r}: expected positive numbers or 'all', comma "
                                   "separated (e.g. 5,10,all)")
    return budgets


@dataclass
class CellOutcome:
    cell: Cell
    run_dir: Path
    status: str  # "trained", "resumed", "done before", "skipped"
    metrics: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class CompareResult:
    out: Path
    outcomes: list[CellOutcome]
    seconds: float
    notes: list[str] = field(default_factory=list)
    leaderboard: list[LeaderboardRow] = field(default_factory=list)  # every finished cell in ``out``, over seeds


def run_compare(grid: Grid, settings: dict, out: Path, *, method_settings: dict[str, dict] | None = None,
                splits=None, overwrite: bool = False, progress: bool = True,
                on_cell: Callable[[CellOutcome, int, int], None] | None = None) -> CompareResult:
    """Run every cell of ``grid`` not finished yet under ``out``; return each cell's outcome.

    Args:
        grid: the methods, backbones, label budgets and seeds.
        settings: ``fit`` settings shared by the cells (data specs included); each method gets those it takes.
        out: the compare directory.
        method_settings: settings for one method's cells only (``{"finetune": {"epochs": 10}}``).
        splits: ready data for every cell (Python users and the demo; see `transferlab.api.fit`).
        overwrite: replace a compare directory that holds another grid's settings.
        progress: progress bars inside each run.
        on_cell: called after each cell with its outcome, its position (1-based) and the number of cells.

    Raises:
        TransferlabError: an unknown method or backbone, a setting no method of the grid takes, a directory holding
            another compare (without ``overwrite``) or something else, or every cell failing.
    """
    grid.check()
    out = Path(out)
    method_settings = method_settings or {}
    plan = _plan(grid, settings, method_settings, out / CELLS)
    lock = RunDirLock(out)
    lock.acquire()
    try:
        _claim(out, settings, method_settings, grid, overwrite)
        result = _run(plan, out, splits, progress, on_cell)
        report = write_report([out / CELLS], out / REPORT, overwrite=True, notes=result.notes,
                              title=f"transferlab compare: {out.name}")
        write_leaderboard_csv(report.rows, out / LEADERBOARD)
        result.leaderboard = report.rows
        return result
    finally:
        lock.release()


def _plan(grid: Grid, settings: dict, method_settings: dict, cells_dir: Path) -> list[tuple[Cell, FitConfig]]:
    """Each cell with its validated settings; settings a method does not take are left out of its cells."""
    given = {key: value for key, value in settings.items() if value is not None}
    clashing = sorted(set(given) & set(_GRID_KEYS))
    if clashing:
        raise TransferlabError(f"setting {clashing[0]!r} is set per cell by compare (--methods, --backbones, "
                               "--labels-per-class, --seeds, --out); drop it from the shared settings")
    taken = {method: _taken(method, given) for method in grid.methods}
    ignored_by: dict[str, str] = {}  # setting -> why a method of the grid would ignore it
    for method, keys in taken.items():
        left_out = sorted(set(given) - keys)
        if left_out:
            log.info("%s does not take %s: its cells run without", method, ", ".join(left_out))
        probe = {**{key: given[key] for key in keys}, **method_settings.get(method, {}), "method": method,
                 "out": cells_dir / "settings-check"}
        reasons = ignored_given_settings(probe, source=f"compare settings of {method}")
        ignored = set(reasons) - set(method_settings.get(method, {}))  # its own settings stay: build_config refuses
        if ignored:
            keys -= ignored
            ignored_by.update({key: f"{method}: {reasons[key]}" for key in ignored})
            log.info("%s would ignore %s here: its cells run without", method, ", ".join(sorted(ignored)))
    untaken = sorted(set(given) - set().union(*taken.values()))
    if untaken and untaken[0] in ignored_by:
        raise TransferlabError(f"setting {untaken[0]!r} would be ignored by {ignored_by[untaken[0]]}; drop it")
    if untaken:
        raise TransferlabError(f"setting {untaken[0]!r} applies to none of the compared methods "
                               f"({', '.join(grid.methods)})")
    unknown = sorted(set(method_settings) - set(grid.methods))
    if unknown:
        raise TransferlabError(f"settings given for method {unknown[0]!r}, which is not compared")
    plan = []
    for cell in grid.cells():
        values = {key: given[key] for key in taken[cell.method]}
        values.update(method_settings.get(cell.method, {}))
        values.update(method=cell.method, backbone=cell.backbone, labels_per_class=cell.labels_per_class,
                      seed=cell.seed, out=cells_dir / cell.name)
        values = {key: value for key, value in values.items() if value is not None}
        if "labels_per_class" in values and "labels_per_class" not in _fields(cell.method):
            raise TransferlabError(f"method {cell.method!r} does not take a label budget; compare it with "
                                   "--labels-per-class all")
        plan.append((cell, build_config(overrides=values, source=f"compare cell {cell.name}")))
    return plan


def _fields(method: str) -> set[str]:
    fields = get_method(method).settings.model_fields
    return {*fields, *(info.alias for info in fields.values() if info.alias)}


def _taken(method: str, given: dict) -> set[str]:
    return set(given) & _fields(method)


def _claim(out: Path, settings: dict, method_settings: dict, grid: Grid, overwrite: bool) -> None:
    """Make ``out`` this compare's directory: new, the same compare continued, or (``overwrite``) replaced."""
    record = {"settings": _jsonable(settings), "method_settings": _jsonable(method_settings)}
    path = out / COMPARE_JSON
    if out.exists() and not out.is_dir():
        raise TransferlabError(f"compare directory {out} is a file; choose another --out")
    if overwrite and out.is_dir():
        shutil.rmtree(out)
    elif path.is_file():
        saved = read_json(path)
        saved_settings = saved.get("settings", {}) if isinstance(saved, dict) else {}
        differing = [f"{key} (saved {saved_settings.get(key)!r}, given {record['settings'].get(key)!r})"
                     for key in sorted(set(record["settings"]) | set(saved_settings))
                     if record["settings"].get(key) != saved_settings.get(key)]
        if record["method_settings"] != saved.get("method_settings", {}):
            differing.append("the per-method settings")
        if differing:
            raise TransferlabError(f"{out} holds a compare with other settings: {', '.join(differing[:3])}; choose "
                                   "another --out, or pass --overwrite to replace it")
        grid = _union(grid, saved.get("grid", {}))
    elif out.is_dir() and any(out.iterdir()):
        raise TransferlabError(f"{out} already exists and does not hold a compare; choose another --out, or pass "
                               "--overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, {"grid": grid.to_dict(), **record})


def _union(grid: Grid, saved: dict) -> Grid:
    """The grid of every cell this directory holds: the saved one extended with the new lists."""
    def merged(new: list, old: list) -> list:
        return list(dict.fromkeys([*old, *new]))

    budgets = [None if v == "all" else v for v in saved.get("labels_per_class", [])]
    return Grid(merged(grid.methods, saved.get("methods", [])), merged(grid.backbones, saved.get("backbones", [])),
                merged(grid.labels_per_class, budgets), merged(grid.seeds, saved.get("seeds", [])))


def _run(plan: list[tuple[Cell, FitConfig]], out: Path, splits, progress: bool, on_cell) -> CompareResult:
    started = time.perf_counter()
    outcomes: list[CellOutcome] = []
    failures: list[TransferlabError] = []
    smallest_class = _smallest_class(plan, splits)
    trained_seconds: list[float] = []
    for position, (cell, config) in enumerate(plan, start=1):
        run_dir = Path(config.out)
        cell_started = time.perf_counter()
        if is_finished(run_dir):
            outcome = CellOutcome(cell, run_dir, "done before", read_json(run_dir / "metrics.json"))
        elif smallest_class is not None and cell.labels_per_class is not None and \
                cell.labels_per_class > smallest_class[1]:
            outcome = CellOutcome(cell, run_dir, "skipped", note=f"{cell.labels_per_class} labels per class is more "
                                  f"than class {smallest_class[0]!r} has ({smallest_class[1]})")
        else:
            resuming = is_resumable(run_dir)
            try:
                result = fit(config.model_copy(update={"resume": resuming}), splits=splits, progress=progress)
                outcome = CellOutcome(cell, run_dir, "resumed" if resuming else "trained", result.metrics)
                trained_seconds.append(time.perf_counter() - cell_started)
            except TransferlabError as exc:
                failures.append(exc)
                outcome = CellOutcome(cell, run_dir, "skipped", note=str(exc))
        outcomes.append(outcome)
        log.info("[%d/%d] %s", position, len(plan), _progress_line(outcome, plan[position:], trained_seconds))
        if on_cell is not None:
            on_cell(outcome, position, len(plan))
    if failures and len(failures) == len(plan):
        raise failures[0]
    notes = [f"{o.cell.describe()}: skipped ({o.note})" for o in outcomes if o.status == "skipped"]
    return CompareResult(out, outcomes, time.perf_counter() - started, notes)


def _progress_line(outcome: CellOutcome, remaining: list, trained_seconds: list[float]) -> str:
    """What a cell did, its score, and the time left (the mean time of the cells trained so far, times the cells
    still to train)."""
    line = f"{outcome.cell.describe()}: {outcome.status}"
    if outcome.note:
        line += f" ({outcome.note})"
    scores = outcome.metrics.get("test") or outcome.metrics.get("val") or {}
    if "accuracy" in scores:
        line += f", {'test' if 'test' in outcome.metrics else 'val'} accuracy {scores['accuracy']:.3f}"
    to_train = sum(not is_finished(Path(config.out)) for _, config in remaining)
    if trained_seconds and to_train:
        left = to_train * sum(trained_seconds) / len(trained_seconds)
        line += f"; about {left / 60:.0f} min left ({to_train} cells to train)" if left >= 60 else \
            f"; about {left:.0f} s left ({to_train} cells to train)"
    return line


def _smallest_class(plan: list[tuple[Cell, FitConfig]], splits) -> tuple[str, int] | None:
    """``(class, count)`` of the training data's rarest class, when some cell draws a label budget from it."""
    budgets = [cell for cell, _ in plan if cell.labels_per_class is not None]
    if not budgets or splits is not None:
        return None
    config = plan[0][1]
    train = getattr(config, "train", None)
    if train is None:
        return None
    data = load_data(train, split_preference=("train", "all"), skip_bad_files=getattr(config, "skip_bad_files", False))
    if data.labels is None:
        return None
    counts = np.bincount(data.labels, minlength=len(data.classes))
    rarest = int(np.argmin(counts))
    return data.classes[rarest], int(counts[rarest])


def _jsonable(values: dict) -> dict:
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in sorted(values.items())
            if value is not None}
