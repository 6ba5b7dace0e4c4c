"""`transferlab compare`: a grid of ordinary runs that continues where it stopped, and its bad inputs."""

import csv
import json

import pytest
from test_cli import assert_user_error, invoke, make_folder

import transferlab.compare as compare_module
from transferlab.compare import Grid, parse_budgets, run_compare
from transferlab.errors import TransferlabError
from transferlab.rundir import is_finished


@pytest.fixture
def photos(tmp_path):
    return make_folder(tmp_path / "photos", per_class=8)


def settings(photos):
    return {"train": str(photos), "val_fraction": 0.25}


def count_fits(monkeypatch, fail_at: int | None = None):
    """Count the runs compare trains; the ``fail_at``-th one (1-based) is killed like a process would be."""
    calls = []
    real_fit = compare_module.fit

    def counted(config, **kwargs):
        calls.append(config.out)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        return real_fit(config, **kwargs)

    monkeypatch.setattr(compare_module, "fit", counted)
    return calls


def test_a_grid_of_ordinary_runs_continues_where_it_was_killed(photos, tmp_path, monkeypatch):
    grid = Grid(methods=["scratch", "features"], backbones=["lenet"], labels_per_class=[3, None], seeds=[0, 1])
    out = tmp_path / "cmp"
    calls = count_fits(monkeypatch, fail_at=3)
    shared = {**settings(photos), "epochs": 1, "augment": False}  # scratch takes both, features neither
    with pytest.raises(KeyboardInterrupt):
        run_compare(grid, shared, out, progress=False)
    assert len(calls) == 3
    calls = count_fits(monkeypatch)
    result = run_compare(grid, shared, out, progress=False)
    statuses = [outcome.status for outcome in result.outcomes]
    assert len(statuses) == 8 and statuses.count("done before") == 2 and "skipped" not in statuses
    assert len(calls) == 6  # the killed cell and the five never started
    assert all(is_finished(outcome.run_dir) for outcome in result.outcomes)
    config = json.loads((out / "cells" / "features-lenet-3pc-seed1" / "config.json").read_text())
    assert config["method"] == "features" and config["labels_per_class"] == 3 and config["seed"] == 1
    assert "augment" not in config  # features does not take augment: left out of its cells
    assert config["epochs"] == 10  # the default: its logistic head would ignore the shared epochs 1, which is left out
    assert json.loads((out / "cells" / "scratch-lenet-all-seed0" / "config.json").read_text())["augment"] is False

    calls = count_fits(monkeypatch)  # more seeds: only the new cells train
    grid.seeds = [0, 1, 2]
    result = run_compare(grid, shared, out, progress=False)
    assert len(calls) == 4 and len(result.outcomes) == 12
    saved = json.loads((out / "compare.json").read_text())
    assert saved["grid"]["seeds"] == [0, 1, 2] and saved["grid"]["labels_per_class"] == [3, "all"]


def test_a_budget_larger_than_the_data_is_skipped_and_noted(photos, tmp_path):
    grid = Grid(methods=["features"], backbones=["lenet"], labels_per_class=[2, 50], seeds=[0])
    result = run_compare(grid, {"train": str(photos)}, tmp_path / "cmp", progress=False)
    statuses = {outcome.cell.labels_per_class: outcome.status for outcome in result.outcomes}
    assert statuses == {2: "trained", 50: "skipped"}
    assert any("50 labels per class is more than class" in note for note in result.notes)


def test_another_grid_s_directory_is_refused_naming_what_differs(photos, tmp_path):
    grid = Grid(methods=["features"], backbones=["lenet"], seeds=[0])
    out = tmp_path / "cmp"
    shared = {"train": str(photos), "image_size": 28}
    run_compare(grid, shared, out, progress=False)
    with pytest.raises(TransferlabError, match="image_size .saved 28, given 32.*--overwrite"):
        run_compare(grid, {**shared, "image_size": 32}, out, progress=False)
    result = run_compare(grid, {**shared, "image_size": 32}, out, overwrite=True, progress=False)
    assert [outcome.status for outcome in result.outcomes] == ["trained"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(TransferlabError, match="does not hold a compare"):
        run_compare(grid, shared, other, progress=False)
    assert (other / "notes.txt").read_text() == "mine"


def test_bad_grids_are_refused_before_anything_runs(photos, tmp_path):
    out = tmp_path / "cmp"
    base = ("compare", "--train", photos, "--out", out, "--seeds", 1, "-q")
    assert_user_error(invoke(*base, "--methods", "scratch,finetun"), "finetun", "finetune")
    assert_user_error(invoke(*base, "--methods", "scratch", "--backbones", "lenet,resnet_18"), "resnet_18")
    assert_user_error(invoke(*base, "--methods", "scratch,scratch"), "more than once")
    assert_user_error(invoke(*base, "--methods", "scratch", "--labels-per-class", "5,some"), "'some'")
    assert_user_error(invoke(*base, "--methods", "scratch,features", "--trade-off", 0.3), "trade_off",
                      "none of the compared methods")
    assert_user_error(invoke(*base, "--methods", "features", "--epochs", 3), "'epochs' would be ignored by features",
                      "logistic head")
    assert not out.exists()


def test_the_command_line_runs_a_grid(photos, tmp_path):
    out = tmp_path / "cmp"
    result = invoke("compare", "--train", photos, "--methods", "features", "--backbones", "lenet", "--seeds", 2,
                    "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert f"compare directory: {out} (2 cells" in result.output
    assert sorted(path.name for path in (out / "cells").iterdir()) == ["features-lenet-all-seed0",
                                                                        "features-lenet-all-seed1"]
    assert "features · lenet" in result.output and "2 seeds" in result.output
    with open(out / "leaderboard.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["method"] == "features" and row["seeds"] == "2" and float(row["train_seconds_mean"]) > 0
    assert 'id="leaderboard-table"' in (out / "report.html").read_text()


def test_settings_given_for_features_alone_that_its_logistic_head_would_ignore_are_refused(photos, tmp_path):
    grid = Grid(methods=["scratch", "features"], backbones=["lenet"], seeds=[0])
    with pytest.raises(TransferlabError, match="--epochs would be ignored by features"):
        run_compare(grid, settings(photos), tmp_path / "cmp", method_settings={"features": {"epochs": 3}},
                    progress=False)
    assert not (tmp_path / "cmp").exists()


def test_budgets_parse():
    assert parse_budgets("5, 10,all") == [5, 10, None]
    with pytest.raises(TransferlabError, match="'0'"):
        parse_budgets("0")
