"""Run directories through the one predictor contract: every kind saves, loads, evaluates and predicts through the
same code path, and run directories written by transferlab 0.1 (before kinds were recorded) still load."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from transferlab.api import evaluate, load, predict
from transferlab.data import load_data
from transferlab.errors import TransferlabError
from transferlab.models import KINDS, Predictor

FIXTURES = Path(__file__).parent / "fixtures" / "runs_v0"


def _digits(n=6):
    return load_data("sklearn-digits", split_preference=("all",)).subset(np.arange(n))


def _close(actual, expected):
    """Predictions equal up to float rounding (labels exact, numbers within 1e-5)."""
    if isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(_close(actual[k], expected[k]) for k in expected)
    if isinstance(expected, list):
        return len(actual) == len(expected) and all(_close(a, e) for a, e in zip(actual, expected))
    if isinstance(expected, float):
        return abs(actual - expected) < 1e-5
    return actual == expected


@pytest.mark.parametrize("kind", ["classifier", "multitask"])
def test_run_dirs_of_version_0_1_load_and_predict_as_they_did(kind):
    expected = json.loads((FIXTURES / "expected_predictions.json").read_text())[kind]
    model = load(FIXTURES / kind)
    assert model.kind == kind and isinstance(model, Predictor)
    assert _close(predict(model, _digits()), expected)


def test_old_classifier_run_evaluates_and_new_save_records_its_kind(tmp_path):
    metrics = evaluate(FIXTURES / "classifier", "sklearn-digits")
    assert metrics["n"] == 1797 and 0.8 < metrics["accuracy"] < 0.9  # 0.849 when the fixture was written
    model = load(FIXTURES / "classifier")
    model.save(tmp_path)
    assert json.loads((tmp_path / "model.json").read_text())["kind"] == "classifier"
    assert _close(predict(tmp_path, _digits()), predict(model, _digits()))


def test_old_speech_run_is_refused_with_what_to_do():
    with pytest.raises(TransferlabError, match="written by an older version.*fit --method ctc"):
        load(FIXTURES / "ctc")


def test_an_unknown_kind_and_a_missing_model_are_clear_errors(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "classifier", run)
    info = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**info, "kind": "hologram"}))
    with pytest.raises(TransferlabError, match="kind 'hologram'.*known kinds: .*classifier.*ctc.*detector.*multitask"):
        load(run)
    (run / "model.json").unlink()
    with pytest.raises(TransferlabError, match="did its fit finish"):
        load(run)


def test_every_registered_kind_implements_the_whole_contract():
    contract = [name for name, value in vars(Predictor).items() if callable(value) or isinstance(value, classmethod)]
    contract = [name for name in contract if not name.startswith("_") and name != "wrote"]  # wrote: 0.1 kinds only
    assert {"evaluate", "predict", "save", "from_run_dir", "load_eval_data", "metric_lines"} <= set(contract)
    optional = {"prediction_lines"}  # has a working default (one line per example)
    for kind, cls in KINDS.items():
        own = cls.__mro__[: cls.__mro__.index(Predictor)]
        required = set(contract) - optional
        if set(cls.output_formats) <= {"csv", "json"}:
            required.discard("format_predictions")  # only kinds that write other formats
        if not cls.draws_predictions:
            required.discard("draw_predictions")
        if cls.onnx_refusal is not None:  # kinds that cannot export to ONNX say why instead
            required -= {"prediction_outputs", "rows_from_predictions", "export_description", "output_decisions"}
        if any("prediction_lines" in vars(base) for base in own):
            required.discard("prediction_table")  # its CSV lines are its own (a detector: one per box)
        missing = [name for name in sorted(required) if not any(name in vars(base) for base in own)]
        assert not missing, f"kind {kind} does not implement {missing}"
