"""``transferlab report``: finished run directories -> one self-contained HTML report.

`build_report` reads the runs (`find_runs`), groups them (`leaderboard`), judges the claims (`verdicts`) and draws
the plots; `write_report` writes the page atomically and never replaces an existing file unless told to.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from transferlab.errors import TransferlabError
from transferlab.fileio import atomic_path
from transferlab.reporting.embedding_maps import embedding_maps as draw_embedding_maps
from transferlab.reporting.html import render_page
from transferlab.reporting.leaderboard import (
    LeaderboardRow,
    Verdict,
    leaderboard,
    verdicts,
)
from transferlab.reporting.plots import (
    Plot,
    budget_plot,
    confusion_plots,
    learning_curves,
    metric_and_time_plot,
    selection_plots,
    task_plots,
)
from transferlab.reporting.runs import RunSet, find_runs

__all__ = ["Report", "build_report", "write_report"]

log = logging.getLogger("transferlab")

DEFAULT_TITLE = "transferlab report: did transfer pay off?"


@dataclass
class Report:
    """What a report shows: the runs read, the leaderboard, the verdicts, the plots, the notes, and the page."""

    runs: RunSet
    rows: list[LeaderboardRow]
    verdicts: list[Verdict]
    plots: list[Plot]
    notes: list[str] = field(default_factory=list)
    html: str = ""


def build_report(paths: list[str | Path], *, title: str = DEFAULT_TITLE, embedding_maps: int = 2,
                 notes: list[str] | None = None) -> Report:
    """The report of the finished runs at or below ``paths`` (run directories, compare directories, any folders).

    Paths that hold no run are named in the notes and the others go on. ``embedding_maps`` bounds the adaptation
    experiments given a t-SNE map of their source and target embeddings (each embeds a few hundred examples twice;
    0 draws none). ``notes`` are the caller's own lines for the notes section (e.g. the cells a compare skipped).

    Raises:
        TransferlabError: no path holds a finished run (the message names every path and why).
    """
    found = find_runs(paths)
    if not found.runs:
        raise TransferlabError("no finished run to report: " + "; ".join(found.notes or [str(p) for p in paths]))
    rows = leaderboard(found.runs)
    notes = [*(notes or []), *found.notes]
    plots = [plot for plot in (budget_plot(rows), metric_and_time_plot(rows), learning_curves(found.runs)) if plot]
    confusions, more = confusion_plots(rows)
    plots += confusions
    notes += more
    plots += task_plots(rows)
    selections, more = selection_plots(rows)
    plots += selections
    notes += more
    if embedding_maps > 0:
        maps, more = draw_embedding_maps(rows, limit=embedding_maps)
        plots += maps
        notes += more
    judged = verdicts(rows)
    trained_on = sorted({run.machine for run in found.runs if run.machine})
    page = render_page(title=title, built=_built_line(), trained_on=trained_on, rows=rows, verdicts=judged,
                       plots=plots, notes=notes, runs=found.runs)
    return Report(found, rows, judged, plots, notes, page)


def write_report(paths: list[str | Path], out: str | Path, *, overwrite: bool = False, title: str = DEFAULT_TITLE,
                 embedding_maps: int = 2, notes: list[str] | None = None) -> Report:
    """Build the report (`build_report`) and write it to ``out`` in one step (a crash leaves no half page).

    Raises:
        TransferlabError: ``out`` exists and ``overwrite`` is not given, or is a directory; no path holds a run.
    """
    out = Path(out)
    if out.is_dir():
        raise TransferlabError(f"--out {out} is a directory; give the report's file name, e.g. {out / 'report.html'}")
    if out.exists() and not overwrite:
        raise TransferlabError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
    report = build_report(paths, title=title, embedding_maps=embedding_maps, notes=notes)
    with atomic_path(out) as tmp:
        tmp.write_text(report.html, encoding="utf-8")
    log.debug("report of %d runs (%d experiments, %d plots) -> %s", len(report.runs.runs), len(report.rows),
             len(report.plots), out)
    return report


def _built_line() -> str:
    from transferlab import __version__

    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"Built {when} by transferlab {__version__} on {_cpu_model()} ({os.cpu_count()} cores), "
            f"{platform.system()} {platform.machine()}, Python {platform.python_version()}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "an unknown CPU"
