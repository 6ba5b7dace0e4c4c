"""Experiment tracking: TensorBoard scalars and an MLflow run (sqlite store) written while a run trains."""

import pytest
from test_cli import assert_user_error, invoke, make_folder

from transferlab.engine.tracking import numbers_of


def test_numbers_of_flattens_nested_metrics():
    assert numbers_of({"a": 1, "b": {"c": 2.5, "d": "x", "e": [1]}, "f": float("nan"), "g": True}) == \
        {"a": 1.0, "b/c": 2.5}


def test_tensorboard_gets_every_epoch_and_the_final_metrics(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    data = make_folder(tmp_path / "photos")
    run = tmp_path / "run"
    result = invoke("fit", "--train", data, "--method", "scratch", "--backbone", "lenet", "--epochs", 2,
                    "--tensorboard", "--out", run, "-q")
    assert result.exit_code == 0, result.output
    accumulator = event_accumulator.EventAccumulator(str(run / "tensorboard"))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert {"train_loss", "val_accuracy", "lr"} <= set(tags)
    assert [event.step for event in accumulator.Scalars("val_accuracy")] == [1, 2]
    assert "final/val/accuracy" in tags


def test_mlflow_logs_settings_epochs_metrics_and_the_run_directory(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    data = make_folder(tmp_path / "photos")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = invoke("fit", "--train", data, "--method", "features", "--backbone", "lenet", "--mlflow", uri,
                    "--mlflow-experiment", "digits", "--out", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("digits")
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.status == "FINISHED" and logged.info.run_name == "run"
    assert logged.data.params["method"] == "features" and logged.data.params["backbone"] == "lenet"
    assert "final/train_seconds" in logged.data.metrics
    assert "cv_accuracy" in logged.data.metrics  # the history of a method that does not train epoch by epoch
    artifacts = {item.path for item in client.list_artifacts(logged.info.run_id, "run")}
    assert {"run/model.json", "run/metrics.json"} <= artifacts
    assert (tmp_path / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()


def test_an_unreachable_mlflow_store_is_one_line(tmp_path):
    pytest.importorskip("mlflow")
    data = make_folder(tmp_path / "photos")
    assert_user_error(invoke("fit", "--train", data, "--method", "features", "--backbone", "lenet", "--mlflow",
                             "nosuchscheme://x", "--out", tmp_path / "run", "-q"), "cannot log to MLflow")
    assert not (tmp_path / "run").exists()


def test_an_mlflow_experiment_without_mlflow_is_refused(tmp_path):
    data = make_folder(tmp_path / "photos")
    assert_user_error(invoke("fit", "--train", data, "--method", "features", "--backbone", "lenet",
                             "--mlflow-experiment", "digits", "--out", tmp_path / "run", "-q"), "--mlflow")
    assert not (tmp_path / "run").exists()
