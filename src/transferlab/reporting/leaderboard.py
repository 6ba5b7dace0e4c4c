"""The leaderboard (runs grouped over seeds) and the verdicts on transfer learning's three claims.

Rows group runs by ``(method, backbone, labels per class)``: mean and standard deviation over seeds of each headline
metric, of the training time and of the inference time. Verdicts answer the seed's claims against the from-scratch
baseline (method ``scratch``) in plain words:

- *less data*: does a transfer method at its smallest label budget match scratch at a larger one?
- *better*: is it more accurate than scratch at the same budget, beyond the seeds' noise?
- *faster*: does it train in less time than scratch at the same budget, without losing accuracy?

and warn of *negative transfer* where a transfer method is worse than scratch beyond noise. "Beyond noise" means a
difference of means larger than twice its standard error, ``2 * sqrt(s_a^2 / n_a + s_b^2 / n_b)``; with one seed on
either side there is no noise estimate and the verdict says so.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from transferlab.fileio import atomic_path
from transferlab.reporting.runs import RunRecord

__all__ = ["SCRATCH", "LeaderboardRow", "Stat", "Verdict", "budget_text", "leaderboard", "verdicts",
           "write_leaderboard_csv"]

SCRATCH = "scratch"  # the baseline every claim is judged against: the same data, no transfer


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (None for a single value) of ``n`` values."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        values = [value for value in values if value is not None and math.isfinite(value)]
        if not values:
            return None
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        return cls(mean, std, len(values))

    def text(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f}" + (f" ± {self.std:.{digits}f}" if self.std is not None else "")


@dataclass
class LeaderboardRow:
    """One experiment: the runs (seeds) of one method, backbone and label budget (None: every label)."""

    method: str
    backbone: str | None
    labels_per_class: int | None
    seeds: int
    metrics: dict[str, Stat]  # headline metrics, main first
    lower_is_better: frozenset[str] = frozenset()
    train_seconds: Stat | None = None
    inference_ms: Stat | None = None
    split: str | None = None  # "test", "val", or "test, val" when the seeds differ
    data: str | None = None  # what the runs trained and were tested on (see `RunRecord.data`)
    runs: list[RunRecord] = field(default_factory=list, repr=False)

    @property
    def main_metric(self) -> str | None:
        return next(iter(self.metrics), None)

    @property
    def name(self) -> str:
        return self.method + (f" · {self.backbone}" if self.backbone else "")


def budget_text(labels_per_class: int | None) -> str:
    return "all labels" if labels_per_class is None else f"{labels_per_class} labels/class"


def _budget_order(labels_per_class: int | None) -> float:
    return math.inf if labels_per_class is None else labels_per_class


def leaderboard(runs: list[RunRecord]) -> list[LeaderboardRow]:
    """Runs grouped by ``(method, backbone, labels_per_class)``: scratch first, then by method, backbone, budget."""
    groups: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    rows = []
    for (method, backbone, budget, data), members in groups.items():
        names = list(dict.fromkeys(name for run in members for name in run.metrics))
        metrics = {name: Stat.of([run.metrics[name] for run in members if name in run.metrics]) for name in names}
        rows.append(LeaderboardRow(
            method=method, backbone=backbone, labels_per_class=budget, seeds=len(members),
            metrics={name: stat for name, stat in metrics.items() if stat is not None},
            lower_is_better=frozenset().union(*(run.lower_is_better for run in members)),
            train_seconds=Stat.of([run.train_seconds for run in members if run.train_seconds is not None]),
            inference_ms=Stat.of([run.inference_ms for run in members if run.inference_ms is not None]),
            split=", ".join(dict.fromkeys(run.split for run in members if run.split)) or None,
            data=data, runs=members,
        ))
    return sorted(rows, key=lambda row: (row.data or "", row.method != SCRATCH, row.method, row.backbone or "",
                                         _budget_order(row.labels_per_class)))


def write_leaderboard_csv(rows: list[LeaderboardRow], path: str | Path) -> None:
    """The leaderboard as CSV (atomically): method, backbone, labels_per_class ("all" for every label), seeds,
    split, ``<metric>_mean``/``<metric>_std`` for every headline metric, train and inference times. A standard
    deviation of one seed is left empty."""
    names = list(dict.fromkeys(name for row in rows for name in row.metrics))
    header = ["method", "backbone", "labels_per_class", "seeds", "split", "data"]
    header += [f"{name}_{part}" for name in names for part in ("mean", "std")]
    header += ["train_seconds_mean", "train_seconds_std", "inference_ms_per_example_mean",
               "inference_ms_per_example_std"]
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            cells = [row.method, row.backbone or "", "all" if row.labels_per_class is None else row.labels_per_class,
                     row.seeds, row.split or "", row.data or ""]
            for name in names:
                cells += _stat_cells(row.metrics.get(name))
            cells += _stat_cells(row.train_seconds) + _stat_cells(row.inference_ms)
            writer.writerow(cells)


def _stat_cells(stat: Stat | None) -> list[str]:
    if stat is None:
        return ["", ""]
    return [f"{stat.mean:.6g}", "" if stat.std is None else f"{stat.std:.6g}"]


# -- verdicts ------------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """The answer to one claim: ``answer`` is "yes", "no", "partly", "cannot judge" or (negative transfer)
    "warning"; ``summary`` says it in a sentence, ``details`` give the comparisons behind it."""

    claim: str
    answer: str
    summary: str
    details: list[str] = field(default_factory=list)


@dataclass
class _Comparison:
    """A transfer row against a scratch row on their shared main metric."""

    row: LeaderboardRow
    baseline: LeaderboardRow
    metric: str
    gain: float  # transfer minus scratch, signed so that positive is better
    noise: float | None  # twice the standard error of the difference; None without seeds on both sides

    @property
    def outcome(self) -> str:
        """"better", "worse" or "same" (within noise); without a noise estimate, better or worse at face value."""
        if self.noise is None:
            return "better" if self.gain > 0 else "worse" if self.gain < 0 else "same"
        return "better" if self.gain > self.noise else "worse" if self.gain < -self.noise else "same"

    @property
    def matches(self) -> bool:
        """At least as good as scratch, within noise."""
        return self.gain >= -(self.noise or 0.0)

    def numbers(self) -> str:
        a, b = self.row.metrics[self.metric], self.baseline.metrics[self.metric]
        noise = (f"noise ±{self.noise:.3f}" if self.noise is not None
                 else "one seed: no noise estimate")
        return (f"{self.metric} {a.text()} vs scratch{_backbone_note(self.row, self.baseline)} {b.text()} "
                f"({self.gain:+.3f}, {noise}; seeds {a.n} and {b.n})")


def _backbone_note(row: LeaderboardRow, baseline: LeaderboardRow) -> str:
    return f" ({baseline.backbone})" if baseline.backbone and baseline.backbone != row.backbone else ""


def _compare(row: LeaderboardRow, baseline: LeaderboardRow) -> _Comparison | None:
    metric = row.main_metric
    if metric is None or metric not in baseline.metrics:
        return None
    a, b = row.metrics[metric], baseline.metrics[metric]
    sign = -1.0 if metric in row.lower_is_better else 1.0
    noise = None
    if a.std is not None and b.std is not None:
        noise = 2.0 * math.sqrt(a.std ** 2 / a.n + b.std ** 2 / b.n)
    return _Comparison(row, baseline, metric, sign * (a.mean - b.mean), noise)


def _baseline(row: LeaderboardRow, scratch: list[LeaderboardRow], budget: int | None) -> LeaderboardRow | None:
    """Scratch on the same data at ``budget``: on the row's own backbone when it ran there, else the best scratch
    row (the strongest baseline; claims are not judged against a weak one)."""
    candidates = [s for s in scratch if s.labels_per_class == budget and s.data == row.data
                  and row.main_metric in s.metrics]
    same = [s for s in candidates if s.backbone == row.backbone]
    if same:
        return same[0]
    if not candidates:
        return None
    metric = row.main_metric
    sign = -1.0 if metric in row.lower_is_better else 1.0
    return max(candidates, key=lambda s: sign * s.metrics[metric].mean)


def verdicts(rows: list[LeaderboardRow]) -> list[Verdict]:
    """The plain-language answers to "less data", "better" and "faster" against scratch, plus a "negative
    transfer" warning when a transfer method is worse than scratch beyond noise (see the module docstring)."""
    scratch = [row for row in rows if row.method == SCRATCH]
    transfer = [row for row in rows if row.method != SCRATCH]
    if not scratch or not transfer:
        missing = ("no from-scratch baseline (method 'scratch') among the runs; add it (e.g. --methods "
                   "scratch,features,finetune) to judge the claims" if not scratch else
                   "only from-scratch runs: no transfer method to judge")
        return [Verdict(claim, "cannot judge", missing) for claim in ("less data", "better", "faster")]
    same_budget = [c for row in transfer if (b := _baseline(row, scratch, row.labels_per_class))
                   and (c := _compare(row, b))]
    found = [_less_data(transfer, scratch), _better(same_budget), _faster(same_budget)]
    negative = [c for c in same_budget if c.outcome == "worse"]
    if negative:
        beyond = [c for c in negative if c.noise is not None]
        summary = (f"{len(beyond)} transfer setting(s) are worse than training from scratch beyond noise: the "
                   "pretrained knowledge hurts here (try another backbone, fine-tuning with a lower learning rate, "
                   "or more labels)" if beyond else
                   f"{len(negative)} transfer setting(s) scored below scratch (one seed: the noise is unknown; run "
                   "more seeds to tell)")
        found.append(Verdict("negative transfer", "warning", summary,
                             [f"{c.row.name} at {budget_text(c.row.labels_per_class)}: {c.numbers()}"
                              for c in negative]))
    return found


def _answer(hits: int, total: int) -> str:
    return "yes" if hits == total else "no" if hits == 0 else "partly"


def _better(comparisons: list[_Comparison]) -> Verdict:
    if not comparisons:
        return Verdict("better", "cannot judge", "no transfer run shares a label budget and a metric with a scratch "
                       "run")
    better = [c for c in comparisons if c.outcome == "better"]
    answer = _answer(len(better), len(comparisons))
    best = max(comparisons, key=lambda c: c.gain)
    summary = {
        "yes": "transfer beats training from scratch in every setting",
        "partly": f"transfer beats training from scratch in {len(better)} of {len(comparisons)} settings",
        "no": "no transfer setting beats training from scratch beyond noise",
    }[answer]
    summary += (f"; the largest gain: {best.row.name} at {budget_text(best.row.labels_per_class)}, "
                f"{best.gain:+.3f} {best.metric}")
    details = [f"{c.row.name} at {budget_text(c.row.labels_per_class)}: {c.outcome} — {c.numbers()}"
               for c in comparisons]
    return Verdict("better", answer, summary, details)


def _faster(comparisons: list[_Comparison]) -> Verdict:
    timed = [c for c in comparisons if c.row.train_seconds and c.baseline.train_seconds]
    if not timed:
        return Verdict("faster", "cannot judge", "no transfer run has a training time to set against a scratch run "
                       "at the same label budget")
    details, hits = [], 0
    for c in timed:
        mine, theirs = c.row.train_seconds.mean, c.baseline.train_seconds.mean
        ratio = theirs / mine if mine > 0 else math.inf
        quick = mine < theirs
        good = c.matches
        hits += quick and good
        speed = f"{ratio:.1f}x faster" if quick else f"{1 / ratio:.1f}x slower" if ratio > 0 else "slower"
        quality = "at least as accurate" if good else "but less accurate"
        details.append(f"{c.row.name} at {budget_text(c.row.labels_per_class)}: {mine:.1f} s vs scratch "
                       f"{theirs:.1f} s ({speed}), {quality} ({c.metric} {c.gain:+.3f})")
    answer = _answer(hits, len(timed))
    summary = {
        "yes": "transfer trains faster than scratch in every setting, and is at least as accurate",
        "partly": f"transfer trains faster than scratch without losing accuracy in {hits} of {len(timed)} settings",
        "no": "no transfer setting trains faster than scratch without losing accuracy",
    }[answer]
    return Verdict("faster", answer, summary + " (training time, whole run)", details)


def _less_data(transfer: list[LeaderboardRow], scratch: list[LeaderboardRow]) -> Verdict:
    budgets = {row.labels_per_class for row in [*transfer, *scratch]}
    if len(budgets) < 2:
        return Verdict("less data", "cannot judge", f"every run used the same label budget "
                       f"({budget_text(next(iter(budgets)))}); run several (e.g. --labels-per-class 5,10,50,all)")
    details, hits, judged = [], 0, 0
    pairs: dict[tuple, list[LeaderboardRow]] = {}
    for row in transfer:
        pairs.setdefault((row.method, row.backbone, row.data), []).append(row)
    for members in pairs.values():
        smallest = min(members, key=lambda row: _budget_order(row.labels_per_class))
        larger = sorted({s.labels_per_class for s in scratch if s.data == smallest.data
                         and _budget_order(s.labels_per_class) > _budget_order(smallest.labels_per_class)},
                        key=_budget_order)
        matched, missed = None, None
        for budget in larger:
            baseline = _baseline(smallest, scratch, budget)
            comparison = _compare(smallest, baseline) if baseline else None
            if comparison is None:
                continue
            if comparison.matches:
                matched = comparison
            elif missed is None:
                missed = comparison
        where = f"{smallest.name} with {budget_text(smallest.labels_per_class)}"
        if matched is None and missed is None:
            details.append(f"{where}: no scratch run with more labels to compare with")
            continue
        judged += 1
        if matched is not None:
            hits += 1
            details.append(f"{where} matches scratch with {budget_text(matched.baseline.labels_per_class)}"
                           f"{_ratio(smallest.labels_per_class, matched.baseline.labels_per_class)}: "
                           f"{matched.numbers()}")
        else:
            details.append(f"{where} stays below scratch with {budget_text(missed.baseline.labels_per_class)}: "
                           f"{missed.numbers()}")
    if not judged:
        return Verdict("less data", "cannot judge", "scratch never ran with more labels than a transfer method's "
                       "smallest budget", details)
    answer = _answer(hits, judged)
    summary = {
        "yes": "with its fewest labels, every transfer method matches scratch trained on more labels",
        "partly": f"{hits} of {judged} transfer methods match, with their fewest labels, scratch trained on more",
        "no": "no transfer method with its fewest labels matches scratch trained on more labels",
    }[answer]
    return Verdict("less data", answer, summary, details)


def _ratio(few: int | None, many: int | None) -> str:
    return f" ({many / few:.0f}x the labels)" if few and many else ""
