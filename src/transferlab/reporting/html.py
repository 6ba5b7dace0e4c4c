"""The report as one self-contained HTML page: inline CSS and SVG, no script, nothing fetched (it opens offline).

Page structure (element ids, for readers and tests)::

    header#report-header     title, when and where the report was built, where the runs trained
    section#leaderboard      table#leaderboard-table: one row per method, backbone and label budget
    section#verdicts         ul: li.verdict.answer-<yes|no|partly|cannot-judge|warning> per claim, its comparisons
    section#plots            figure.plot#plot-... per plot (an inline <svg> each)
    section#notes            paths and runs passed over, cells without a run, plots not drawn
    section#runs             every run read, with its directory
"""

from __future__ import annotations

from html import escape

from transferlab.reporting.leaderboard import (
    SCRATCH,
    LeaderboardRow,
    Stat,
    Verdict,
    budget_text,
)
from transferlab.reporting.plots import Plot
from transferlab.reporting.runs import RunRecord

__all__ = ["render_page"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1.5rem; color: #1b1b1b; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
.meta { color: #555; margin: 0.2rem 0; font-size: 0.92rem; }
nav a { margin-right: 1rem; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
td.data { white-space: normal; min-width: 12rem; max-width: 24rem; overflow-wrap: anywhere; }
tr.baseline td { background: #fafafa; font-style: italic; }
.verdict { margin: 0.6rem 0; padding: 0.5rem 0.8rem; border-left: 5px solid #999; background: #f8f8f8;
           list-style: none; }
.verdict .answer { font-weight: bold; text-transform: uppercase; margin-right: 0.4rem; }
.answer-yes { border-color: #2ca02c; } .answer-partly { border-color: #e6a100; }
.answer-no { border-color: #d62728; } .answer-warning { border-color: #d62728; background: #fff1f0; }
.answer-cannot-judge { border-color: #999; }
ul.verdicts { padding-left: 0; }
details { margin-top: 0.3rem; font-size: 0.88rem; }
figure.plot { margin: 1.2rem 0; padding: 0.6rem; border: 1px solid #e3e3e3; border-radius: 4px; overflow-x: auto; }
figure.plot h3 { margin: 0 0 0.4rem 0; font-size: 1rem; }
figure.plot svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.86rem; }
#notes li, #runs li { font-size: 0.88rem; }
code { font-size: 0.85rem; }
"""


def render_page(*, title: str, built: str, trained_on: list[str], rows: list[LeaderboardRow],
                verdicts: list[Verdict], plots: list[Plot], notes: list[str], runs: list[RunRecord]) -> str:
    """The whole page as a string (see the module docstring for its structure)."""
    sections = [
        _header(title, built, trained_on),
        _section("leaderboard", "Leaderboard", _table(rows)),
        _section("verdicts", "Did transfer pay off?", _verdicts(verdicts)),
        _section("plots", "Plots", "\n".join(_figure(plot) for plot in plots) or "<p>No plots: the runs hold no "
                 "metrics to draw.</p>"),
        _section("notes", "Notes", _list(notes) if notes else "<p>Nothing was passed over.</p>"),
        _section("runs", f"Runs ({len(runs)})", _runs(runs)),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<link rel=\"icon\" href=\"data:,\">\n"  # no favicon request
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(sections) + "\n</body>\n</html>\n"
    )


def _header(title: str, built: str, trained_on: list[str]) -> str:
    machines = "; ".join(escape(machine) for machine in trained_on) or "not recorded"
    links = " ".join(f'<a href="#{key}">{label}</a>' for key, label in
                     (("leaderboard", "Leaderboard"), ("verdicts", "Verdicts"), ("plots", "Plots"),
                      ("notes", "Notes"), ("runs", "Runs")))
    return (f'<header id="report-header">\n<h1>{escape(title)}</h1>\n<p class="meta">{escape(built)}</p>\n'
            f'<p class="meta">Runs trained on: {machines}</p>\n<nav>{links}</nav>\n</header>')


def _section(key: str, heading: str, body: str) -> str:
    return f'<section id="{key}">\n<h2>{escape(heading)}</h2>\n{body}\n</section>'


def _cell(stat: Stat | None, digits: int = 3) -> str:
    return "–" if stat is None else escape(stat.text(digits))


def _table(rows: list[LeaderboardRow]) -> str:
    if not rows:
        return "<p>No finished runs.</p>"
    names = list(dict.fromkeys(name for row in rows for name in row.metrics))
    lower = frozenset().union(*(row.lower_is_better for row in rows))
    head = ["method", "backbone", "labels / class", "seeds", "evaluated on"]
    head += [f"{name} {'↓' if name in lower else '↑'}" for name in names]
    head += ["train time (s)", "inference (ms / example)"]
    text_columns = {0, 1, 4}
    lines = ["<div class=\"table-wrap\"><table id=\"leaderboard-table\">", "<thead><tr>" + "".join(
        f'<th{" class=text" if i in text_columns else ""}>{escape(name)}</th>' for i, name in enumerate(head))
        + "</tr></thead>", "<tbody>"]
    for row in rows:
        cells = [escape(row.method), escape(row.backbone or "–"),
                 "all" if row.labels_per_class is None else str(row.labels_per_class), str(row.seeds),
                 escape(_evaluated_on(row))]
        cells += [_cell(row.metrics.get(name)) for name in names]
        cells += [_cell(row.train_seconds, 1), _cell(row.inference_ms, 2)]
        css = ' class="baseline"' if row.method == SCRATCH else ""
        classes = {i: "text" for i in text_columns} | {4: "text data"}
        lines.append(f"<tr{css}>" + "".join(f'<td{_class(classes.get(i))}>{cell}</td>' for i, cell in enumerate(cells))
                     + "</tr>")
    lines += ["</tbody>", "</table></div>",
              ("<p class=\"meta\">Mean ± standard deviation over seeds (no ± for one seed); ↑ higher is better, "
               "↓ lower is better. Evaluated on: the run's data, and the split the metrics come from (test, else "
               "validation). Italic: the from-scratch baseline.</p>")]
    return "\n".join(lines)


def _class(name: str | None) -> str:
    return f' class="{name}"' if name else ""


def _evaluated_on(row: LeaderboardRow) -> str:
    split = row.split or "–"
    return f"{row.data} ({split})" if row.data else split


def _verdicts(verdicts: list[Verdict]) -> str:
    items = []
    for verdict in verdicts:
        details = ""
        if verdict.details:
            details = (f"<details><summary>{len(verdict.details)} comparison(s)</summary>"
                       f"{_list(verdict.details)}</details>")
        css = verdict.answer.replace(" ", "-")
        items.append(f'<li class="verdict answer-{css}" data-claim="{escape(verdict.claim)}">'
                     f'<span class="answer">{escape(verdict.claim)}: {escape(verdict.answer)}</span>'
                     f"{escape(verdict.summary)}.{details}</li>")
    return "<ul class=\"verdicts\">\n" + "\n".join(items) + "\n</ul>"


def _figure(plot: Plot) -> str:
    caption = f"<figcaption>{escape(plot.caption)}</figcaption>" if plot.caption else ""
    return f'<figure class="plot" id="{escape(plot.id)}">\n<h3>{escape(plot.title)}</h3>\n{plot.svg}\n{caption}\n</figure>'


def _list(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>"


def _runs(runs: list[RunRecord]) -> str:
    if not runs:
        return "<p>None.</p>"
    lines = []
    for run in runs:
        main = run.main_metric
        score = f", {main} {run.metrics[main]:.4f} ({run.split})" if main else ""
        lines.append(f"<li><code>{escape(str(run.path))}</code>: {escape(run.method)}"
                     f"{escape(' · ' + run.backbone) if run.backbone else ''}, "
                     f"{escape(budget_text(run.labels_per_class))}, seed {escape(str(run.seed))}{escape(score)}</li>")
    return "<details><summary>every run read</summary><ul>" + "".join(lines) + "</ul></details>"
