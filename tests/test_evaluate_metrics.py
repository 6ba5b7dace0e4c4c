"""Evaluation metrics say what they average over: macro-F1 over the classes the data has, named in
``macro_f1_classes``; evaluating on data of one class (a folder with one class folder) works."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from transferlab.cli import app
from transferlab.metrics import classification_metrics
from test_cli import make_folder

runner = CliRunner()


def test_macro_f1_averages_over_the_classes_the_labels_have_and_names_them():
    perfect_on_one_class = classification_metrics(np.array([0, 0, 0]), np.array([0, 0, 0]), ["a", "b"])
    assert perfect_on_one_class["accuracy"] == 1.0
    assert perfect_on_one_class["macro_f1"] == 1.0  # was 0.5: b, absent, counted as F1 = 0
    assert perfect_on_one_class["macro_f1_classes"] == ["a"]
    assert perfect_on_one_class["confusion_matrix"] == [[3, 0], [0, 0]]  # every class of the model, still

    # predicting an absent class still costs: a's recall is 1/2, its precision 1 -> F1 2/3; b's F1 is 1
    mistaken = classification_metrics(np.array([0, 0, 1]), np.array([0, 2, 1]), ["a", "b", "c"])
    assert mistaken["macro_f1"] == pytest.approx((2 / 3 + 1) / 2) and mistaken["macro_f1_classes"] == ["a", "b"]




def test_evaluate_on_a_single_class_folder_reports_what_macro_f1_averages(tmp_path, caplog):
    data = make_folder(tmp_path / "data")
    run = tmp_path / "run"
    result = runner.invoke(app, ["fit", "--train", str(data), "--method", "scratch", "--backbone", "lenet",
                                 "--epochs", "3", "--out", str(run), "-q"])
    assert result.exit_code == 0, result.output
    only_cats = tmp_path / "only_cats"
    shutil.copytree(data / "cats", only_cats / "cats")

    result = runner.invoke(app, ["evaluate", str(run), "--data", str(only_cats), "--json"])
    assert result.exit_code == 0, result.output  # was refused: "a single class folder"
    metrics = json.loads(result.output.splitlines()[-1])
    assert metrics["n"] == 6 and metrics["macro_f1_classes"] == ["cats"] and metrics["classes"] == ["cats", "dogs"]
    assert metrics["macro_f1"] == pytest.approx(2 * metrics["accuracy"] / (1 + metrics["accuracy"]))

    caplog.clear()
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(only_cats)])
    assert result.exit_code == 0 and "macro-F1" in result.output and "confusion matrix" in result.output
    assert "no examples of class(es) dogs: macro-F1 is the mean over the 1 class(es) it has (cats)" in caplog.text
