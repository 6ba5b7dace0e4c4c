"""The report's figures, drawn with matplotlib (no display needed) and returned as inline SVG markup.

Each function takes leaderboard rows or run records and returns `Plot`s (or none when the runs hold nothing to
draw): the main metric against labels per class (the "less data" claim), the main metric and training time per
experiment ("better", "faster"), learning curves, confusion matrices, per-task curves and weights of multi-task
runs, and the label-free checkpoint choice of adaptation runs next to the oracle. What is drawn is decided by what
the runs recorded (history columns, metrics keys), never by method names. The 2-D embedding maps of adaptation
runs live in `transferlab.reporting.embedding_maps`.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

import matplotlib
from matplotlib.figure import Figure

from transferlab.reporting.leaderboard import SCRATCH, LeaderboardRow, budget_text
from transferlab.reporting.runs import RunRecord

__all__ = ["MAX_CONFUSIONS", "Plot", "budget_plot", "confusion_plots", "learning_curves", "metric_and_time_plot",
           "selection_plots", "slug", "svg_of", "task_plots"]

MAX_CONFUSIONS = 12  # confusion matrices drawn (one per experiment); the rest are named in the notes
_MAX_ANNOTATED_CLASSES = 12  # counts are written in the cells of matrices up to this size


@dataclass
class Plot:
    """One figure of the report: ``id`` is its HTML element id (``plot-...``), ``svg`` its inline markup."""

    id: str
    title: str
    svg: str
    caption: str = ""


def slug(text: str) -> str:
    """``text`` as a piece of an HTML id: lower case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def svg_of(figure: Figure, plot_id: str) -> str:
    """``figure`` as an ``<svg>`` element. Text stays text (small, searchable), and the ids matplotlib gives clip
    paths and markers are salted with ``plot_id`` so that several figures can share one page."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": plot_id}):
        figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _colors(names: list[str]) -> dict[str, str]:
    palette = matplotlib.colormaps["tab10"].colors
    return {name: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, name in enumerate(dict.fromkeys(names))}


def _names(rows: list[LeaderboardRow]) -> list[str]:
    """What the legend calls each row's method and backbone; with the data too when the rows span several."""
    several = len({row.data for row in rows}) > 1
    return [row.name + (f" · {row.data}" if several and row.data else "") for row in rows]


def _metric_label(metric: str, lower_is_better: frozenset[str]) -> str:
    return f"{metric} ({'lower' if metric in lower_is_better else 'higher'} is better)"


def _main_rows(rows: list[LeaderboardRow]) -> tuple[str | None, list[LeaderboardRow]]:
    """The main metric of the first row that has one, and the rows that report it."""
    metric = next((row.main_metric for row in rows if row.main_metric), None)
    return metric, [row for row in rows if metric in row.metrics]


def budget_plot(rows: list[LeaderboardRow]) -> Plot | None:
    """The main metric against labels per class, one line per method and backbone, error bars one standard
    deviation over seeds; "all labels" sits to the right of the largest budget."""
    metric, rows = _main_rows(rows)
    if not rows:
        return None
    numeric = sorted({row.labels_per_class for row in rows if row.labels_per_class is not None})
    all_at = (numeric[-1] * 2 if numeric else 1)
    position = {budget: budget for budget in numeric} | {None: all_at}
    figure = Figure(figsize=(7.5, 4.2))
    axes = figure.subplots()
    names = _names(rows)
    colors = _colors(names)
    for name in colors:
        line = sorted((row for row, label in zip(rows, names, strict=True) if label == name),
                      key=lambda row: position[row.labels_per_class])
        axes.errorbar([position[row.labels_per_class] for row in line], [row.metrics[metric].mean for row in line],
                      yerr=[row.metrics[metric].std or 0.0 for row in line], label=name, color=colors[name],
                      marker="o", capsize=4, linestyle="--" if line[0].method == SCRATCH else "-")
    ticks = [*numeric, *([all_at] if any(row.labels_per_class is None for row in rows) else [])]
    if len(ticks) > 1 and ticks[-1] / max(ticks[0], 1) >= 4:
        axes.set_xscale("log")
    axes.set_xticks(ticks, [str(t) for t in numeric] + (["all"] if len(ticks) > len(numeric) else []))
    axes.minorticks_off()
    axes.set_xlabel("labeled training examples per class")
    axes.set_ylabel(_metric_label(metric, rows[0].lower_is_better))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    plot_id = "plot-budget"
    return Plot(plot_id, f"{metric} vs labels per class", svg_of(figure, plot_id),
                "Mean over seeds, error bars one standard deviation; dashed: training from scratch. A transfer line "
                "above scratch further right means fewer labels for the same result.")


def metric_and_time_plot(rows: list[LeaderboardRow]) -> Plot | None:
    """Main metric and training time of every experiment, side by side as horizontal bars (error bars: one
    standard deviation over seeds)."""
    metric, rows = _main_rows(rows)
    if not rows:
        return None
    names = _names(rows)
    labels = [f"{name}\n{budget_text(row.labels_per_class)}" for name, row in zip(names, rows, strict=True)]
    colors = _colors(names)
    figure = Figure(figsize=(10, 1.2 + 0.45 * len(rows)))
    left, right = figure.subplots(1, 2, sharey=True)
    places = list(range(len(rows)))[::-1]
    bar_colors = [colors[name] for name in names]
    left.barh(places, [row.metrics[metric].mean for row in rows], xerr=[row.metrics[metric].std or 0 for row in rows],
              color=bar_colors, capsize=3)
    left.set_yticks(places, labels, fontsize="small")
    left.set_xlabel(_metric_label(metric, rows[0].lower_is_better))
    seconds = [row.train_seconds.mean if row.train_seconds else 0.0 for row in rows]
    right.barh(places, seconds, xerr=[row.train_seconds.std or 0 if row.train_seconds else 0 for row in rows],
               color=bar_colors, capsize=3)
    right.set_xlabel("training time (s)")
    for axes in (left, right):
        axes.grid(axis="x", alpha=0.3)
    plot_id = "plot-metric-time"
    return Plot(plot_id, f"{metric} and training time per experiment", svg_of(figure, plot_id),
                "Mean over seeds, error bars one standard deviation. Training time is the whole run (data, "
                "features, epochs).")


def _validation_key(run: RunRecord) -> str | None:
    """The history column that tracks the run's main metric on validation data, if it has one."""
    keys = [f"val_{run.main_metric}", "val_score", "val_accuracy"] if run.main_metric else ["val_score", "val_accuracy"]
    return next((key for key in keys if any(key in row for row in run.history)), None)


def learning_curves(runs: list[RunRecord]) -> Plot | None:
    """Training loss and the validation metric per epoch, one line per run (seeds of an experiment share a
    colour)."""
    runs = [run for run in runs if any("train_loss" in row for row in run.history)]
    if not runs:
        return None
    names = [f"{run.method}{' · ' + run.backbone if run.backbone else ''} · {budget_text(run.labels_per_class)}"
             for run in runs]
    colors = _colors(names)
    figure = Figure(figsize=(11, 4))
    loss_axes, val_axes = figure.subplots(1, 2)
    labeled: set[str] = set()
    val_names = set()
    for run, name in zip(runs, names, strict=True):
        label = None if name in labeled else name
        labeled.add(name)
        epochs = [row["epoch"] for row in run.history if "train_loss" in row]
        loss_axes.plot(epochs, [row["train_loss"] for row in run.history if "train_loss" in row], color=colors[name],
                       marker=".", alpha=0.8, label=label)
        key = _validation_key(run)
        if key:
            val_names.add(key)
            points = [(row["epoch"], row[key]) for row in run.history if isinstance(row.get(key), float)]
            val_axes.plot(*zip(*points), color=colors[name], marker=".", alpha=0.8)
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("training loss")
    loss_axes.set_yscale("log")
    val_axes.set_xlabel("epoch")
    val_axes.set_ylabel(", ".join(sorted(val_names)) or "no validation data")
    for axes in (loss_axes, val_axes):
        axes.grid(alpha=0.3)
    figure.legend(loc="lower center", ncol=min(3, len(labeled)), fontsize="small", bbox_to_anchor=(0.5, -0.02 - 0.05
                  * math.ceil(len(labeled) / 3)))
    plot_id = "plot-learning-curves"
    return Plot(plot_id, "learning curves", svg_of(figure, plot_id),
                "Per epoch, from each run's history.csv (features runs train only their head; their epochs are "
                "short).")


def confusion_plots(rows: list[LeaderboardRow]) -> tuple[list[Plot], list[str]]:
    """One confusion matrix per experiment and evaluated task, summed over its seeds, rows normalised to the true
    class; at most `MAX_CONFUSIONS`, the others named in the returned notes."""
    matrices = []
    for row in rows:
        summed: dict[tuple, list[list[int]]] = {}
        for run in row.runs:
            for confusion in run.confusions:
                key = (confusion.title, tuple(confusion.classes))
                if key not in summed:
                    summed[key] = [list(line) for line in confusion.matrix]
                elif len(summed[key]) == len(confusion.matrix):
                    summed[key] = [[a + b for a, b in zip(x, y, strict=True)]
                                   for x, y in zip(summed[key], confusion.matrix, strict=True)]
        matrices += [(row, title, list(classes), matrix) for (title, classes), matrix in summed.items()]
    plots = [_confusion_plot(*item) for item in matrices[:MAX_CONFUSIONS]]
    notes = []
    if len(matrices) > MAX_CONFUSIONS:
        notes.append(f"{len(matrices) - MAX_CONFUSIONS} confusion matrices not drawn (the first {MAX_CONFUSIONS} are): "
                     + ", ".join(f"{row.name} at {budget_text(row.labels_per_class)}"
                                 for row, *_ in matrices[MAX_CONFUSIONS:]))
    return plots, notes


def _confusion_plot(row: LeaderboardRow, title: str, classes: list[str], matrix: list[list[int]]) -> Plot:
    size = len(classes)
    shares = [[value / max(sum(line), 1) for value in line] for line in matrix]
    figure = Figure(figsize=(min(2.5 + 0.45 * size, 9), min(2.2 + 0.4 * size, 8.5)))
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    shown = [name[:14] for name in classes]
    axes.set_xticks(range(size), shown, rotation=90 if size > 6 else 0, fontsize="small")
    axes.set_yticks(range(size), shown, fontsize="small")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if size <= _MAX_ANNOTATED_CLASSES:
        for i, line in enumerate(matrix):
            for j, value in enumerate(line):
                axes.text(j, i, str(value), ha="center", va="center", fontsize="x-small",
                          color="white" if shares[i][j] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    what = f"{row.name} · {budget_text(row.labels_per_class)}" + (f" · task {title}" if title else "")
    plot_id = f"plot-confusion-{slug(what)}"
    return Plot(plot_id, f"confusion matrix: {what}", svg_of(figure, plot_id),
                f"Counts summed over {row.seeds} seed(s) on the {row.split or 'evaluation'} data; colour: share of "
                "each true class.")


def _task_columns(run: RunRecord) -> dict[str, list[str]]:
    """A multi-task history's columns by role: per-task training losses and weights, per-task validation scores
    (history columns ``train_<task>_loss``, ``train_<task>_weight``, ``val_<task>_<metric>``)."""
    keys = list(dict.fromkeys(key for row in run.history for key in row))
    weights = [key for key in keys if key.startswith("train_") and key.endswith("_weight")]
    tasks = [key[len("train_"):-len("_weight")] for key in weights]
    if not tasks:
        tasks = [key[len("train_"):-len("_loss")] for key in keys
                 if key.startswith("train_") and key.endswith("_loss") and key != "train_loss"
                 and f"val_{key[len('train_'):-len('_loss')]}_accuracy" in keys]
    validation = []
    for task in tasks:
        validation += [key for key in (f"val_{task}_accuracy", f"val_{task}_micro_f1", f"val_{task}_r2")
                       if key in keys][:1]
    return {"loss": [f"train_{task}_loss" for task in tasks if f"train_{task}_loss" in keys],
            "weight": weights, "val": validation} if len(tasks) > 1 else {}


def task_plots(rows: list[LeaderboardRow]) -> list[Plot]:
    """For experiments whose history has several tasks: per-task training loss, validation score and loss weight
    per epoch (the first seed of each experiment)."""
    plots = []
    for row in rows:
        run = next((run for run in row.runs if _task_columns(run)), None)
        if run is None:
            continue
        columns = {role: keys for role, keys in _task_columns(run).items() if keys}
        figure = Figure(figsize=(4 * len(columns), 3.6))
        panels = figure.subplots(1, len(columns), squeeze=False)[0]
        for axes, (role, keys) in zip(panels, columns.items(), strict=True):
            for key in keys:
                points = [(r["epoch"], r[key]) for r in run.history if isinstance(r.get(key), float)]
                if points:
                    axes.plot(*zip(*points), marker=".", label=_task_label(key, role))
            axes.set_xlabel("epoch")
            axes.set_ylabel({"loss": "task training loss", "weight": "task loss weight",
                             "val": "task validation score"}[role])
            axes.grid(alpha=0.3)
            axes.legend(fontsize="small")
        what = f"{row.name} · {budget_text(row.labels_per_class)}"
        plot_id = f"plot-tasks-{slug(what)}"
        plots.append(Plot(plot_id, f"tasks: {what}", svg_of(figure, plot_id),
                          f"Per-task curves of {run.path.name} (seed {run.seed}); weights as the weighting set them."))
    return plots


def _task_label(key: str, role: str) -> str:
    name = key[len("train_"):] if key.startswith("train_") else key[len("val_"):]
    return name.removesuffix("_loss").removesuffix("_weight") if role != "val" else name


def selection_plots(rows: list[LeaderboardRow]) -> tuple[list[Plot], list[str]]:
    """For experiments whose runs chose their checkpoint without target labels (``metrics.json``'s
    ``selection``): the target accuracy of the epoch each label-free scorer picks, mean over seeds, next to the best
    epoch in hindsight (the oracle). Without target labels there is nothing to set the choice against: a note
    says which epoch was chosen."""
    plots, notes = [], []
    for row in rows:
        reports = [run.selection for run in row.runs if run.selection]
        if not reports:
            continue
        what = f"{row.name} · {budget_text(row.labels_per_class)}"
        labeled = [report for report in reports if "target_accuracy_best_in_hindsight" in report]
        if not labeled:
            chosen = ", ".join(f"epoch {report['selected_epoch']}" for report in reports if "selected_epoch" in report)
            notes.append(f"{what}: checkpoint chosen by {reports[0].get('scorer', '?')} ({chosen}); the target data "
                         "has no labels, so the choice cannot be set against the best epoch in hindsight")
            continue
        scorers = list(dict.fromkeys(name for report in labeled for name in report.get("by_scorer", {})))
        means = []
        for name in scorers:
            values = [report["by_scorer"][name]["target_accuracy"] for report in labeled
                      if "target_accuracy" in report.get("by_scorer", {}).get(name, {})]
            means.append(sum(values) / len(values) if values else math.nan)
        oracle = sum(report["target_accuracy_best_in_hindsight"] for report in labeled) / len(labeled)
        used = labeled[0].get("scorer")
        figure = Figure(figsize=(7, 3.6))
        axes = figure.subplots()
        axes.bar(range(len(scorers)), means, color=["#d62728" if name == used else "#7f7f7f" for name in scorers])
        axes.axhline(oracle, color="#2ca02c", linestyle="--", label=f"best epoch in hindsight (oracle): {oracle:.3f}")
        axes.set_xticks(range(len(scorers)), [f"{name}\n(used)" if name == used else name for name in scorers],
                        fontsize="small")
        axes.set_ylabel("target accuracy of the chosen epoch")
        axes.set_ylim(0, min(1.0, max([oracle, *[m for m in means if math.isfinite(m)]]) * 1.15 + 0.02))
        axes.legend(fontsize="small", loc="lower right")
        axes.grid(axis="y", alpha=0.3)
        plot_id = f"plot-selection-{slug(what)}"
        plots.append(Plot(plot_id, f"checkpoint selection: {what}", svg_of(figure, plot_id),
                          f"Target labels were used only to score these choices (mean over {len(labeled)} seed(s)); "
                          f"red: the scorer the run used ({used}); green line: the oracle."))
    return plots, notes
