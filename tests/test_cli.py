"""The command line: help, a full fit -> evaluate -> predict cycle, and one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from transferlab.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def fit_scratch_lenet(data, run, epochs):
    """A quick real run: lenet from scratch on ``data``."""
    return invoke("fit", "--train", data, "--method", "scratch", "--backbone", "lenet", "--epochs", epochs,
                  "--out", run, "-q")


def make_folder(root, classes=("cats", "dogs"), per_class=6, size=24):
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8) + index * 150
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def assert_user_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("command", ["fit", "evaluate", "predict", "demo", "embed", "index", "search", "cluster",
                                     "rank"])
def test_every_command_has_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_fit_evaluate_predict_cycle(tmp_path):
    data = make_folder(tmp_path / "data")
    run = tmp_path / "run"
    result = fit_scratch_lenet(data, run, epochs=3)
    assert result.exit_code == 0, result.output
    assert "val accuracy" in result.output
    for name in ("model.safetensors", "model.json", "config.json", "metrics.json", "history.csv", "checkpoint.pt"):
        assert (run / name).is_file(), name

    result = invoke("evaluate", run, "--data", data, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["accuracy"] >= 0.9 and 0 <= metrics["macro_f1"] <= 1
    assert np.array(metrics["confusion_matrix"]).sum() == 12

    result = invoke("evaluate", run, "--data", data)
    assert "confusion matrix" in result.output and "cats" in result.output

    result = invoke("predict", run, data / "cats", data / "dogs" / "0.png", "--format", "json")
    rows = json.loads(result.output)
    assert len(rows) == 7 and rows[-1]["path"].endswith("0.png")
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-4
    result = invoke("predict", run, data / "dogs" / "1.png")
    header, line = result.output.strip().splitlines()
    assert header == "path,label,p_cats,p_dogs" and line.split(",")[1] == "dogs"


def test_config_file_and_flag_override(tmp_path):
    data = make_folder(tmp_path / "data")
    config = tmp_path / "run.yaml"
    config.write_text(f"train: {data}\nmethod: scratch\nbackbone: lenet\nepochs: 5\nout: {tmp_path / 'run'}\n")
    result = invoke("fit", "--config", config, "--epochs", 1, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 1
    config.write_text("trian: x\n")
    assert_user_error(invoke("fit", "--config", config), "unknown setting 'trian'", "did you mean 'train'")


def test_bad_inputs_give_one_line_errors(tmp_path):
    data = make_folder(tmp_path / "data")
    assert_user_error(invoke("fit", "--train", tmp_path / "missing", "--out", tmp_path / "r"), "missing")
    assert_user_error(invoke("fit", "--train", data, "--backbone", "resnet1888", "--out", tmp_path / "r1"),
                      "resnet1888")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    assert_user_error(invoke("fit", "--train", data, "--backbone", "lenet", "--out", existing), "--overwrite")
    assert (existing / "notes.txt").read_text() == "mine" and len(list(existing.iterdir())) == 1
    assert_user_error(invoke("evaluate", tmp_path / "norun", "--data", data), "norun")
    assert_user_error(invoke("fit", "--train", data, "--method", "finetune", "--head", "logistic",
                             "--out", tmp_path / "r2"), "logistic")
    assert_user_error(invoke("fit", "--train", data, "--backbone", "lenet", "--freeze", "99",
                             "--out", tmp_path / "r3"), "--freeze 99")


def test_corrupt_image_fails_or_is_skipped(tmp_path):
    data = make_folder(tmp_path / "data")
    (data / "cats" / "broken.jpg").write_bytes(b"not an image at all")
    assert_user_error(invoke("fit", "--train", data, "--backbone", "lenet", "--method", "scratch",
                             "--out", tmp_path / "r"), "broken.jpg")
    # a real process, so the warning reaches stderr as a user would see it
    result = subprocess.run(
        [sys.executable, "-m", "transferlab.cli", "fit", "--train", str(data), "--backbone", "lenet", "--method",
         "scratch", "--epochs", "1", "--skip-bad-files", "--out", str(tmp_path / "r2"), "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "skipped 1 bad file" in result.stderr and "broken.jpg" in result.stderr


def test_weights_that_do_not_fit(tmp_path):
    import torch

    data = make_folder(tmp_path / "data")
    torch.save({"conv1.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    assert_user_error(invoke("fit", "--train", data, "--backbone", "lenet", "--weights", tmp_path / "wrong.pth",
                             "--out", tmp_path / "r"), "wrong.pth")


def test_resume_from_the_run_directory_alone(tmp_path):
    data = make_folder(tmp_path / "data")
    run = tmp_path / "run"
    assert fit_scratch_lenet(data, run, epochs=2).exit_code == 0
    first = (run / "history.csv").read_text()
    for name in ("metrics.json", "model.json", "model.safetensors"):  # as if killed before the end
        (run / name).unlink()
    result = invoke("fit", "--out", run, "--resume", "-q")
    assert result.exit_code == 0, result.output
    assert (run / "model.safetensors").is_file() and (run / "history.csv").read_text() == first
    assert_user_error(invoke("fit", "--out", tmp_path / "never", "--resume"), "never does not exist", "without --resume")


def test_resume_refuses_changed_settings_and_failed_runs_leave_nothing(tmp_path):
    data = make_folder(tmp_path / "data")
    run = tmp_path / "run"
    assert fit_scratch_lenet(data, run, epochs=1).exit_code == 0
    saved = (run / "config.json").read_text()
    assert_user_error(invoke("fit", "--out", run, "--resume", "--method", "finetune"), "method", "saved 'scratch'")
    assert (run / "config.json").read_text() == saved

    failed = tmp_path / "failed"
    assert_user_error(invoke("fit", "--train", data, "--backbone", "lenet", "--weights", data / "cats" / "0.png",
                             "--out", failed), "0.png")
    assert not failed.exists()  # a retry needs no --overwrite
    assert_user_error(invoke("fit", "--train", data, "--method", "joint", "--source", "sklearn-digits",
                             "--batch-size", 1, "--out", tmp_path / "j"), "batch_size must be at least 2")


def test_run_files_follow_the_umask(tmp_path):
    import os

    data = make_folder(tmp_path / "data")
    assert fit_scratch_lenet(data, tmp_path / "run", epochs=1).exit_code == 0
    mask = os.umask(0)
    os.umask(mask)
    assert ((tmp_path / "run" / "model.safetensors").stat().st_mode & 0o777) == 0o666 & ~mask


def test_methods_lists_the_registry_and_one_methods_settings():
    from transferlab.methods import METHODS

    listing = invoke("methods")
    assert listing.exit_code == 0 and all(name in listing.output for name in METHODS)
    dann = invoke("methods", "dann")
    assert "--trade-off [1.0]" in dann.output and "--discriminator-hidden [1024]" in dann.output
    assert "--lora-r" not in dann.output and "--source [required]" in dann.output
    assert_user_error(invoke("methods", "dnn"), "unknown method 'dnn'", "did you mean 'dann'")


def test_docs_method_list_is_generated_from_the_registry():
    from pathlib import Path

    from transferlab.cli_options import methods_markdown

    docs = Path(__file__).resolve().parents[1] / "docs" / "methods.md"
    assert docs.read_text() == methods_markdown() + "\n", "regenerate: transferlab methods --markdown > docs/methods.md"


def test_fit_refuses_a_flag_the_method_does_not_take(tmp_path):
    assert_user_error(invoke("fit", "--train", "sklearn-digits", "--method", "finetune", "--trade-off", 0.5,
                             "--out", tmp_path / "r"), "setting 'trade_off' (--trade-off) applies to dann", "not to finetune")
    assert not (tmp_path / "r").exists()
