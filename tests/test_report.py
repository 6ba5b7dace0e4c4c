"""`transferlab report`: runs read from their files, grouped over seeds, claims judged against scratch, one HTML page."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from transferlab.cli import app
from transferlab.errors import TransferlabError
from transferlab.models import KINDS
from transferlab.reporting import (
    RunRecord,
    Stat,
    find_runs,
    leaderboard,
    verdicts,
    write_leaderboard_csv,
    write_report,
)

runner = CliRunner()
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def record(method, accuracy, *, budget=10, seed=0, backbone="lenet", seconds=10.0, **extra) -> RunRecord:
    return RunRecord(path=Path(f"/runs/{method}-{budget}-{seed}"), method=method, backbone=backbone,
                     labels_per_class=budget, seed=seed, split="test",
                     metrics={"accuracy": accuracy, "macro_f1": accuracy - 0.01}, train_seconds=seconds, **extra)


def seeds(method, accuracies, **settings) -> list[RunRecord]:
    return [record(method, accuracy, seed=seed, **settings) for seed, accuracy in enumerate(accuracies)]


def by_claim(found):
    return {verdict.claim: verdict for verdict in found}


# -- grouping and aggregation ---------------------------------------------------------------------------------------

def test_runs_group_by_method_backbone_and_budget_with_mean_and_sample_std():
    runs = [*seeds("features", [0.8, 0.9]), *seeds("scratch", [0.5, 0.7, 0.6]),
            *seeds("features", [0.95], budget=None)]
    rows = leaderboard(runs)
    assert [(row.method, row.labels_per_class, row.seeds) for row in rows] == [
        ("scratch", 10, 3), ("features", 10, 2), ("features", None, 1)]
    scratch, features, every_label = rows
    assert scratch.metrics["accuracy"].mean == pytest.approx(0.6)
    assert scratch.metrics["accuracy"].std == pytest.approx(0.1)  # sample standard deviation (n - 1)
    assert features.metrics["macro_f1"].mean == pytest.approx(0.84)
    assert every_label.metrics["accuracy"].std is None  # one seed: no spread to report
    assert features.main_metric == "accuracy"
    assert scratch.train_seconds == Stat(10.0, 0.0, 3)
    assert features.inference_ms is None


def test_leaderboard_csv_has_mean_and_std_per_metric_and_blank_std_for_one_seed(tmp_path):
    rows = leaderboard([*seeds("scratch", [0.5, 0.7]), *seeds("features", [0.9], budget=None)])
    write_leaderboard_csv(rows, tmp_path / "leaderboard.csv")
    with open(tmp_path / "leaderboard.csv", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [row["method"] for row in table] == ["scratch", "features"]
    assert table[0]["accuracy_mean"] == "0.6" and float(table[0]["accuracy_std"]) == pytest.approx(0.141421, 1e-4)
    assert table[1]["labels_per_class"] == "all" and table[1]["accuracy_std"] == "" and table[1]["seeds"] == "1"
    assert {"train_seconds_mean", "inference_ms_per_example_mean", "macro_f1_std"} <= set(table[0])
    assert not list(tmp_path.glob(".*.tmp"))


# -- verdicts ---------------------------------------------------------------------------------------------------------

def test_verdicts_say_yes_when_transfer_beats_scratch_beyond_noise_with_fewer_labels_in_less_time():
    runs = [*seeds("scratch", [0.50, 0.52, 0.48], budget=5), *seeds("scratch", [0.80, 0.82, 0.78], budget=50),
            *seeds("features", [0.85, 0.86, 0.84], budget=5, seconds=2.0),
            *seeds("features", [0.95, 0.96, 0.94], budget=50, seconds=2.0)]
    found = by_claim(verdicts(leaderboard(runs)))
    assert found["better"].answer == "yes"
    assert found["less data"].answer == "yes"
    assert "5 labels/class matches scratch with 50 labels/class (10x the labels)" in found["less data"].details[0]
    assert found["faster"].answer == "yes" and "5.0x faster" in found["faster"].details[0]
    assert "negative transfer" not in found


def test_a_difference_within_noise_is_not_called_better():
    runs = [*seeds("scratch", [0.70, 0.80, 0.60]), *seeds("features", [0.72, 0.82, 0.62], seconds=20.0)]
    found = by_claim(verdicts(leaderboard(runs)))
    assert found["better"].answer == "no"
    assert "same" in found["better"].details[0] and "noise ±" in found["better"].details[0]
    assert found["faster"].answer == "no" and "2.0x slower" in found["faster"].details[0]
    assert found["less data"].answer == "cannot judge"  # one label budget: nothing to say about less data


def test_negative_transfer_is_warned_beyond_noise_and_flagged_as_uncertain_with_one_seed():
    worse = by_claim(verdicts(leaderboard([*seeds("scratch", [0.90, 0.91, 0.89]),
                                           *seeds("finetune", [0.60, 0.62, 0.58])])))
    assert worse["negative transfer"].answer == "warning"
    assert "beyond noise" in worse["negative transfer"].summary
    assert "finetune · lenet at 10 labels/class" in worse["negative transfer"].details[0]
    single = by_claim(verdicts(leaderboard([record("scratch", 0.9), record("finetune", 0.8)])))
    assert "one seed" in single["negative transfer"].summary
    assert "one seed: no noise estimate" in single["better"].details[0]


def test_without_a_scratch_baseline_the_claims_cannot_be_judged():
    found = verdicts(leaderboard([*seeds("features", [0.8, 0.9]), *seeds("finetune", [0.85, 0.9])]))
    assert [verdict.answer for verdict in found] == ["cannot judge"] * 3
    assert "no from-scratch baseline" in found[0].summary


def test_lower_is_better_metrics_flip_the_comparison():
    def speech(method, wer, seed):
        return RunRecord(path=Path(f"/r/{method}{seed}"), method=method, backbone="w2v", labels_per_class=None,
                         seed=seed, split="test", metrics={"wer": wer}, lower_is_better=frozenset({"wer"}))

    runs = [speech("scratch", w, s) for s, w in enumerate([0.9, 0.92, 0.88])]
    runs += [speech("finetune", w, s) for s, w in enumerate([0.3, 0.31, 0.29])]
    assert by_claim(verdicts(leaderboard(runs)))["better"].answer == "yes"


def test_the_baseline_is_scratch_on_the_same_backbone_else_the_best_scratch():
    runs = [*seeds("scratch", [0.5, 0.5], backbone="lenet"), *seeds("scratch", [0.7, 0.7], backbone="resnet"),
            *seeds("features", [0.6, 0.6], backbone="efficientnet_lite0")]
    better = by_claim(verdicts(leaderboard(runs)))["better"]
    assert "vs scratch (resnet) 0.700" in better.details[0]


def test_every_model_kind_names_its_headline_metrics():
    examples = {
        "classifier": {"n": 4, "accuracy": 0.75, "macro_f1": 0.7, "classes": ["a", "b"]},
        "multitask": {"score": 0.6, "tasks": {"digit": {"n": 4, "accuracy": 0.8, "score": 0.8},
                                               "age": {"n": 4, "mae": 3.0, "r2": 0.4, "score": 0.4}}},
        "ctc": {"n": 3, "wer": 0.4, "cer": 0.2},
        "detector": {"n": 3, "boxes": 4, "map": 0.4, "map_50": 0.7, "map_75": 0.35, "mar_100": 0.5,
                     "classes": ["a"], "per_class": {"a": {"ap": 0.4, "ap_50": 0.7, "recall": 0.5}}},
    }
    assert set(examples) == set(KINDS)
    for kind, metrics in examples.items():
        headline = KINDS[kind].headline_metrics(metrics)
        assert headline and all(isinstance(value, float) for value in headline.values())
    assert list(KINDS["multitask"].headline_metrics(examples["multitask"])) == ["score", "digit accuracy", "age r2"]
    assert KINDS["ctc"].lower_is_better == {"wer", "cer"}


# -- run directories from files ----------------------------------------------------------------------------------------

def write_run(path: Path, method: str, accuracy: float, *, seed=0, budget=10, finished=True, extra=None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"method": method, "backbone": "lenet", "seed": seed,
                                                  "labels_per_class": budget}))
    if finished:
        (path / "model.json").write_text(json.dumps({"kind": "classifier"}))
        metrics = {"method": method, "backbone": "lenet", "train_seconds": 3.5, "machine": "x86_64, 2 threads",
                   "test": {"n": 20, "accuracy": accuracy, "macro_f1": accuracy, "classes": ["a", "b"],
                            "confusion_matrix": [[8, 2], [1, 9]]}, **(extra or {})}
        (path / "metrics.json").write_text(json.dumps(metrics))
        (path / "history.csv").write_text("epoch,train_loss,val_loss,val_accuracy,lr,seconds\n"
                                          "1,1.2,1.1,0.5,0.001,0.5\n2,0.8,0.9,0.7,0.0005,0.5\n")
    return path


def test_runs_are_found_at_any_depth_and_unfinished_or_empty_paths_are_named(tmp_path):
    write_run(tmp_path / "cmp" / "cells" / "scratch-s0", "scratch", 0.6)
    write_run(tmp_path / "cmp" / "cells" / "features-s0", "features", 0.9, extra={"test_ms_per_example": 5.0,
                                                                                 "val_ms_per_example": 1.0})
    write_run(tmp_path / "cmp" / "cells" / "features-s1", "features", 0.8, seed=1, finished=False)
    (tmp_path / "empty").mkdir()
    found = find_runs([tmp_path / "cmp", tmp_path / "empty", tmp_path / "missing"])
    assert sorted(run.method for run in found.runs) == ["features", "scratch"]
    features = next(run for run in found.runs if run.method == "features")
    assert features.inference_ms == pytest.approx(5.0)
    assert features.confusions[0].matrix == [[8, 2], [1, 9]]
    assert [row["val_accuracy"] for row in features.history] == [0.5, 0.7]
    notes = "\n".join(found.notes)
    assert "features-s1: unfinished run (no metrics.json), skipped" in notes
    assert f"{tmp_path / 'empty'}: not a run directory" in notes
    assert f"{tmp_path / 'missing'}: not a run directory (no such path)" in notes


def test_a_compare_directory_notes_grid_cells_without_a_run(tmp_path):
    cmp = tmp_path / "cmp"
    write_run(cmp / "cells" / "a", "scratch", 0.6, seed=0)
    write_run(cmp / "cells" / "b", "features", 0.9, seed=0)
    (cmp / "compare.json").write_text(json.dumps({
        "grid": {"methods": ["scratch", "features"], "backbones": ["lenet"], "labels_per_class": [10, "all"],
                 "seeds": [0]},
        "settings": {}, "skipped": [{"cell": "features lenet all seed 0", "reason": "budget larger than the data"}]}))
    found = find_runs([cmp])
    notes = "\n".join(found.notes)
    assert "2 cell(s) of its grid have no finished run" in notes
    assert "scratch lenet all labels/class seed 0" in notes
    assert "skipped: budget larger than the data" in notes
    assert found.compare_grids[0]["grid"]["seeds"] == [0]


def test_report_names_a_bad_path_goes_on_and_refuses_to_overwrite(tmp_path):
    write_run(tmp_path / "runs" / "s", "scratch", 0.6)
    write_run(tmp_path / "runs" / "f", "features", 0.9)
    (tmp_path / "notes").mkdir()
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(tmp_path / "runs"), str(tmp_path / "notes"), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'notes'}: not a run directory" in result.output
    assert "report of 2 runs (2 experiments" in result.output
    page = out.read_text(encoding="utf-8")
    assert f"{tmp_path / 'notes'}: not a run directory" in page
    result = runner.invoke(app, ["report", str(tmp_path / "runs"), "--out", str(out)])
    assert result.exit_code == 2 and "already exists; pass --overwrite" in result.output
    assert out.read_text(encoding="utf-8") == page
    result = runner.invoke(app, ["report", str(tmp_path / "runs"), "--out", str(out), "--overwrite", "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["report", str(tmp_path / "notes"), "--out", str(tmp_path / "none.html")])
    assert result.exit_code == 2 and "no finished run to report" in result.output and "notes" in result.output
    assert not (tmp_path / "none.html").exists()


def test_report_of_hand_written_runs_is_self_contained(tmp_path):
    write_run(tmp_path / "s0", "scratch", 0.6)
    write_run(tmp_path / "s1", "scratch", 0.62, seed=1)
    write_run(tmp_path / "f0", "features", 0.9)
    report = write_report([tmp_path], tmp_path / "report.html", notes=["a note from compare"])
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "a note from compare" in page
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched
    for plot in report.plots:
        assert f'id="{plot.id}"' in page
    assert {"plot-budget", "plot-metric-time", "plot-learning-curves"} <= {plot.id for plot in report.plots}
    assert 'id="leaderboard-table"' in page and 'data-claim="better"' in page
    with pytest.raises(TransferlabError, match="is a directory"):
        write_report([tmp_path], tmp_path)


# -- a report of real runs, and the page in a real browser -------------------------------------------------------------

DIGIT_RUNS = {
    "scratch": {"method": "scratch", "backbone": "lenet", "image_size": 28, "epochs": 2, "batch_size": 16, "lr": 3e-3},
    "features": {"method": "features", "backbone": "efficientnet_lite0", "image_size": 32, "head": "linear",
                 "epochs": 2, "precision": "fp32"},
}


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Eight tiny digits runs (scratch with LeNet, features of EfficientNet-Lite0 at 32 px; 3 and 10 labels per class;
    2 seeds; 200 test images) and one DANN run (MNIST -> USPS, LeNet, 2 short epochs) when the shared data is there."""
    import numpy as np

    from transferlab.api import build_config, fit
    from transferlab.data import load_data, take_per_class
    from transferlab.methods.base import Splits

    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFERLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        digits = load_data("sklearn-digits", split_preference=("all",))
        order = np.random.default_rng(0).permutation(len(digits))
        test, pool = digits.subset(np.sort(order[:200])), digits.subset(np.sort(order[200:]))
        for budget in (3, 10):
            for seed in (0, 1):
                train_index = take_per_class(pool.labels, budget, seed)
                rest = np.setdiff1d(np.arange(len(pool)), train_index)
                splits = Splits(train=pool.subset(train_index), val=pool.subset(rest[take_per_class(
                    pool.labels[rest], 3, seed + 1)]), test=test)
                for name, settings in DIGIT_RUNS.items():
                    fit(build_config(overrides={"train": "digits", "seed": seed, "labels_per_class": budget,
                                                "out": root / "cmp" / "cells" / f"{name}-{budget}-s{seed}",
                                                **settings}), splits=splits, progress=False)
        if SHARED_DATA.is_dir():
            fit(build_config(overrides={
                "method": "dann", "backbone": "lenet", "image_size": 28, "source": f"mnist:{SHARED_DATA / 'mnist'}@test",
                "target": f"usps:{SHARED_DATA / 'usps'}@train", "val_fraction": 0.05, "selection_samples": 100,
                "epochs": 2, "steps_per_epoch": 4, "batch_size": 32, "lr": 3e-3, "out": root / "dann"}),
                progress=False)
    return root


def test_report_of_real_runs_has_every_part(real_runs, tmp_path, monkeypatch):
    from transferlab.reporting import embedding_maps

    monkeypatch.setattr(embedding_maps, "PER_DOMAIN", 60)
    report = write_report([real_runs / "cmp", real_runs / "dann"], tmp_path / "report.html", embedding_maps=1)
    groups = {(row.method, row.backbone, row.labels_per_class): row.seeds for row in report.rows}
    assert groups == {("scratch", "lenet", 3): 2, ("scratch", "lenet", 10): 2, ("features", "efficientnet_lite0", 3): 2,
                      ("features", "efficientnet_lite0", 10): 2, **({("dann", "lenet", None): 1}
                                                                    if (real_runs / "dann").is_dir() else {})}
    scratch = report.rows[0]
    assert scratch.split == "test" and scratch.metrics["accuracy"].n == 2 and scratch.train_seconds.mean > 0
    assert scratch.inference_ms.mean > 0  # fit records the milliseconds per test example
    assert {verdict.claim for verdict in report.verdicts} >= {"less data", "better", "faster"}
    assert all(verdict.answer != "cannot judge" for verdict in report.verdicts)
    ids = {plot.id for plot in report.plots}
    assert {"plot-budget", "plot-metric-time", "plot-learning-curves",
            "plot-confusion-scratch-lenet-3-labels-class"} <= ids
    if (real_runs / "dann").is_dir():
        assert {"plot-selection-dann-lenet-all-labels", "plot-tsne-dann-lenet-all-labels"} <= ids
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert all(f'id="{plot_id}"' in page for plot_id in ids)
    assert len(ids) == len(report.plots)  # every plot has its own id


def _chromium() -> str:
    """Debian's chromium; installed here if missing and this process may (root, apt-get), else the test skips."""
    import os
    import shutil
    import subprocess

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=900, check=False)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed and cannot be installed here (apt-get install chromium; .ci/run "
                    "installs it)")
    return found


def test_report_page_loads_in_headless_chromium_without_errors(real_runs, tmp_path):
    from PIL import Image, ImageStat

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright drives chromium (the test extra)")
    report = write_report([real_runs / "cmp", real_runs / "dann"], tmp_path / "report.html", embedding_maps=0)
    problems = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
                    if message.type in ("error", "warning") else None)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
            requested = []
            page.on("request", lambda request: requested.append(request.url))
            page.goto((tmp_path / "report.html").as_uri(), wait_until="load")
            sizes = {}
            for plot in report.plots:
                box = page.locator(f"#{plot.id} > svg").bounding_box()
                sizes[plot.id] = (box["width"], box["height"]) if box else None
            rows = page.locator("#leaderboard-table tbody tr").count()
            claims = page.locator("#verdicts li.verdict").count()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert requested == [(tmp_path / "report.html").as_uri()]  # nothing else fetched: it opens offline
    assert all(size and size[0] > 200 and size[1] > 100 for size in sizes.values()), sizes
    assert rows == len(report.rows) and claims == len(report.verdicts)
    with Image.open(tmp_path / "report.png") as shot:
        assert shot.width == 1280 and shot.height > 2000  # the whole page, plots included
        stats = ImageStat.Stat(shot.convert("L"))
        assert stats.stddev[0] > 20  # not blank: text, tables and plots on white
        assert len(shot.convert("RGB").getcolors(1 << 24)) > 100  # plot colours, not one flat tone
