"""Multi-task learning: task columns, task types, weightings, training, artifacts, evaluate/predict, resume."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn
from typer.testing import CliRunner

import transferlab
from transferlab.api import fit
from transferlab.cli import app
from transferlab.api import build_config
from transferlab.data.image_data import ImageData
from transferlab.data.task_columns import build_task, encode_targets, infer_task_type
from transferlab.data.task_groups import TaskGroup, _hold_out, prepare_multitask_splits
from transferlab.engine.domains import GroupBatches
from transferlab.errors import TransferlabError
from transferlab.methods.weighting import (
    DynamicWeightAverage,
    GradNorm,
    JacobianDescent,
    UncertaintyWeighting,
    build_weighting,
    gradnorm_loss,
)
from transferlab.models import MultiTaskModel
from transferlab.tasks import ClassificationTask, MultiLabelTask, RegressionTask

runner = CliRunner()
TASKS = "digit,size,tags,score"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """200 UCI digits as PNGs with four label columns: digit (class codes), size (names), tags (a|b), score."""
    root = tmp_path_factory.mktemp("manifest")
    digits = load_digits()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        Image.fromarray(np.rint(digits.images[i] * 255 / 16).astype(np.uint8)).save(root / f"{i}.png")
        y = int(digits.target[i])
        tags = [name for name, on in (("even", y % 2 == 0), ("big", y >= 5), ("round", y in (0, 6, 8, 9))) if on]
        rows.append([f"{i}.png", y, "big" if y >= 5 else "small", "|".join(tags) or "plain", f"{1.5 * y + rng.normal(0, .3):.3f}"])
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "digit", "size", "tags", "score"])
        writer.writerows(rows)
    return root / "train.csv"


def _config(manifest, out, **settings):
    return build_config(overrides={
        "method": "multitask", "train": str(manifest), "tasks": TASKS, "backbone": "lenet", "image_size": 28,
        "epochs": 3, "batch_size": 32, "lr": 3e-3, "out": out, **settings,
    })


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- task columns ------------------------------------------------------------------------------------------------


def test_task_types_are_inferred_from_values():
    assert infer_task_type("t", ["0", "3", "9", ""], "f.csv") == "classification"  # integer codes
    assert infer_task_type("t", ["0.5", "3", "-1e2"], "f.csv") == "regression"
    assert infer_task_type("t", [str(v) for v in range(40)], "f.csv") == "regression"  # too many codes for classes
    assert infer_task_type("t", ["cat", "dog"], "f.csv") == "classification"
    assert infer_task_type("t", ["cat|dog", "dog"], "f.csv") == "multilabel"


@pytest.mark.parametrize("cell", ["cat;dog", "[cat, dog]", "cat,dog"])
def test_lists_in_another_format_are_refused(cell):
    with pytest.raises(TransferlabError, match=r"column 'tags'.*row 2.*separated by '\|'"):
        infer_task_type("tags", ["cat", cell], "f.csv")
    with pytest.raises(TransferlabError, match=r"multi-label column 'tags'.*unknown format at row 2"):
        build_task("tags", None, "multilabel", ["cat", cell], "f.csv")


def test_multilabel_cells_with_empty_names_are_refused():
    with pytest.raises(TransferlabError, match=r"row 1: 'cat\|\|dog'"):
        build_task("tags", None, "multilabel", ["cat||dog"], "f.csv")


def test_regression_column_with_text_names_row_and_value():
    with pytest.raises(TransferlabError, match=r"regression column 'age' of f.csv has a non-numeric value at row 3: 'old'"):
        build_task("age", None, "regression", ["1", "2.5", "old"], "f.csv")
    with pytest.raises(TransferlabError, match="non-numeric value at row 1: 'nan'"):
        build_task("age", None, "regression", ["nan", "2"], "f.csv")


def test_single_class_and_empty_columns_are_refused():
    with pytest.raises(TransferlabError, match="single class"):
        build_task("kind", None, None, ["cat", "cat"], "f.csv")
    with pytest.raises(TransferlabError, match="has no values"):
        build_task("kind", None, None, ["", ""], "f.csv")



def test_the_type_hint_of_a_list_like_column_names_the_flag_and_the_yaml_key():
    with pytest.raises(TransferlabError, match="unsupported format") as error:
        infer_task_type("tags", ["cat;dog", "dog"], "f.csv")
    assert "--tasks tags:classification (in YAML: tasks: [{name: tags, type: classification}])" in str(error.value)


def test_targets_mark_missing_labels_and_standardise_regression():
    task = build_task("age", None, None, ["10.5", "", "20.5"], "f.csv")
    assert isinstance(task, RegressionTask) and task.mean == pytest.approx(15.5) and task.std == pytest.approx(5.0)
    values = encode_targets(task, ["10.5", "", "20.5"], "f.csv")
    assert np.isnan(values[1]) and values[2] == pytest.approx(20.5)
    tags = build_task("tags", None, None, ["a|b", "", "c"], "f.csv")
    assert isinstance(tags, MultiLabelTask) and tags.classes == ["a", "b", "c"]
    encoded = encode_targets(tags, ["a|b", "", "c"], "f.csv")
    assert encoded[0].tolist() == [1, 1, 0] and np.isnan(encoded[1]).all()
    kind = build_task("kind", None, None, ["cat", "", "dog"], "f.csv")
    assert encode_targets(kind, ["dog", "", "cat", "cow"], "f.csv").tolist() == [1, -1, 0, -1]  # cow: unknown


def test_task_losses_ignore_missing_labels():
    task = ClassificationTask("kind", classes=["a", "b"])
    outputs = torch.tensor([[2.0, 0.0], [0.0, 9.0]])
    assert task.loss(outputs, torch.tensor([0, -1])).item() == pytest.approx(
        nn.functional.cross_entropy(outputs[:1], torch.tensor([0])).item())
    assert task.loss(outputs, torch.tensor([-1, -1])).item() == 0.0
    regression = RegressionTask("age", mean=10.0, std=2.0)
    assert regression.loss(torch.tensor([[1.0], [5.0]]), torch.tensor([12.0, float("nan")])).item() == pytest.approx(0.0)
    assert regression.decode(np.array([[1.0]]))[0]["value"] == pytest.approx(12.0)


# --- weightings ----------------------------------------------------------------------------------------------------


def test_uncertainty_weighting_is_kendalls_formula():
    weighting = UncertaintyWeighting(["a", "b"])
    with torch.no_grad():
        weighting.uw.log_var.copy_(torch.tensor([0.0, 1.0]))
    out = weighting([torch.tensor(2.0), torch.tensor(3.0)], torch.zeros(1), [])
    expected = 0.5 * 2.0 + 0.5 * np.exp(-1.0) * 3.0 + 0.5 * 1.0
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["parts"]["b_weight"].item() == pytest.approx(0.5 * np.exp(-1.0), rel=1e-5)


def test_dwa_follows_loss_ratios_and_keeps_its_history_in_state_dict():
    dwa = DynamicWeightAverage(["a", "b"], temperature=2.0)
    for losses in ([1.0, 1.0], [1.0, 0.5]):  # task b's loss halves, a's stays
        dwa.start_epoch(None, 0)
        dwa([torch.tensor(v) for v in losses], torch.zeros(1), [])
    dwa.start_epoch(None, 2)
    parts = dwa([torch.tensor(1.0), torch.tensor(1.0)], torch.zeros(1), [])["parts"]
    expected_a = 2 * np.exp(1.0 / 2) / (np.exp(1.0 / 2) + np.exp(0.5 / 2))
    assert parts["a_weight"].item() == pytest.approx(expected_a, rel=1e-5)  # the slower task gets more weight
    copy = DynamicWeightAverage(["a", "b"], temperature=2.0)
    copy.load_state_dict(dwa.state_dict())
    again = copy([torch.tensor(1.0), torch.tensor(1.0)], torch.zeros(1), [])["parts"]
    assert again["a_weight"].item() == pytest.approx(expected_a, rel=1e-5)


def test_gradnorm_loss_pulls_weights_toward_equal_gradient_norms():
    weights = torch.tensor([1.0, 1.0], requires_grad=True)
    loss = gradnorm_loss(weights, torch.tensor([4.0, 1.0]), torch.tensor([1.0, 1.0]), alpha=1.5)
    assert loss.item() == pytest.approx(abs(4 - 2.5) + abs(1 - 2.5))
    loss.backward()
    assert weights.grad[0] > 0 > weights.grad[1]  # shrink the task with the large gradient, grow the other


def test_gradnorm_trains_on_weighted_losses():
    features = torch.randn(8, 3, requires_grad=True)
    heads = [nn.Linear(3, 1), nn.Linear(3, 1)]
    losses = [head(features).pow(2).mean() for head in heads]
    weighting = GradNorm(["a", "b"], alpha=1.5)
    out = weighting(losses, features, [features])
    assert out["parts"]["a_weight"].item() + out["parts"]["b_weight"].item() == pytest.approx(2.0)
    out["loss"].backward()
    assert weighting.raw_weights.grad is not None and not torch.isnan(weighting.initial_losses).any()


def test_jacobian_descent_fills_shared_and_head_gradients():
    shared = nn.Linear(4, 4)
    heads = nn.ModuleList([nn.Linear(4, 1), nn.Linear(4, 1)])
    x = torch.randn(16, 4)
    features = shared(x)
    losses = [heads[0](features).mean(), -heads[1](features).mean() * 3]  # conflicting objectives
    out = JacobianDescent(["a", "b"], "upgrad")(losses, features, list(shared.parameters()))
    out["backward"]()
    assert shared.weight.grad is not None and heads[0].weight.grad is not None and heads[1].weight.grad is not None
    # UPGrad's update never increases either loss to first order: it lies in the dual cone of the task gradients
    jacobian = []
    for loss in (lambda f: heads[0](f).mean(), lambda f: -heads[1](f).mean() * 3):
        shared.zero_grad()
        loss(shared(x)).backward()
        jacobian.append(torch.cat([shared.weight.grad.flatten(), shared.bias.grad.flatten()]))
    features = shared(x)
    losses = [heads[0](features).mean(), -heads[1](features).mean() * 3]
    shared.zero_grad()
    JacobianDescent(["a", "b"], "upgrad")(losses, features, list(shared.parameters()))["backward"]()
    update = torch.cat([shared.weight.grad.flatten(), shared.bias.grad.flatten()])
    assert all(float(g @ update) >= -1e-6 for g in jacobian)


def test_weightings_that_balance_tasks_need_several():
    with pytest.raises(TransferlabError, match="balances several tasks"):
        build_weighting("pcgrad", ["only"], [1.0])
    with pytest.raises(TransferlabError, match=r"weighting 'uncertainty' balances several tasks.*\('age'\)"):
        build_config(overrides={"method": "multitask", "train": "x.csv", "tasks": "age", "weighting": "uncertainty",
                                "out": "run"})


def test_group_batches_draw_every_group_each_step():
    a = torch.utils.data.TensorDataset(torch.zeros(100, 1))
    b = torch.utils.data.TensorDataset(torch.ones(10, 1))
    groups = GroupBatches([a, b], [8, 4])
    assert len(groups) == 13
    steps = list(groups.epoch_loader(epoch=0, seed=0))
    assert len(steps) == 13 and all(s[0][0].shape[0] == 8 and s[1][0].sum() == 4 for s in steps)


# --- config ----------------------------------------------------------------------------------------------------------


def test_task_list_parsing_and_config_errors():
    config = build_config(overrides={"method": "multitask", "train": "x.csv", "tasks": "a, b:regression", "out": "r"})
    assert [(t.name, t.type) for t in config.tasks] == [("a", None), ("b", "regression")]
    for overrides, message in [
        ({"tasks": None}, "needs tasks"),
        ({"tasks": "a,a"}, "repeated: a"),
        ({"tasks": "a:number"}, "invalid 'tasks.0.type'"),
        ({"train": None}, "no train data is set"),
        ({"method": "finetune"}, r"setting 'tasks' \(--tasks\) applies to multitask; not to finetune"),
    ]:
        values = {"method": "multitask", "train": "x.csv", "tasks": "a,b", "out": "r", **overrides}
        with pytest.raises(TransferlabError, match=message):
            build_config(overrides=values)


# --- task groups and their validation hold-out -------------------------------------------------------------------


def test_held_out_validation_is_stratified_by_the_first_classification_task(manifest, tmp_path, caplog):
    with caplog.at_level("INFO", logger="transferlab"):
        splits = prepare_multitask_splits(_config(manifest, tmp_path / "run", tasks="score,digit"))
    (train,), (val,) = splits.train, splits.val
    assert isinstance(train.examples, ImageData)
    assert len(train) == 160 and len(val) == 40 and "held out 40 of 200 examples" in caplog.text
    overall = np.bincount(np.concatenate([train.targets["digit"], val.targets["digit"]]), minlength=10)
    assert np.all(np.abs(np.bincount(val.targets["digit"], minlength=10) - 0.2 * overall) <= 1)
    assert not set(train.examples.paths) & set(val.examples.paths)


def test_held_out_validation_without_class_labels_is_seeded_random(manifest, tmp_path):
    def held_out(seed):
        config = _config(manifest, tmp_path / "run", tasks="score", seed=seed)
        return prepare_multitask_splits(config).val[0].examples.paths

    assert len(held_out(0)) == 40 and held_out(0) == held_out(0) and held_out(0) != held_out(1)



def test_multitask_data_is_read_with_the_runs_pixel_limit(manifest, tmp_path):
    config = _config(manifest, tmp_path / "run", tasks="score,digit", max_image_pixels=10)  # the digits are 8x8
    with pytest.raises(TransferlabError, match="8x8 \\(64 pixels\\), more than the limit of 10 pixels"):
        prepare_multitask_splits(config)
    kept = prepare_multitask_splits(config.model_copy(update={"max_image_pixels": 64}))
    assert kept.train[0].examples.max_image_pixels == 64


def test_a_group_too_small_to_hold_out_names_its_examples():
    one = TaskGroup(ImageData(name="one.csv", classes=[], labels=None, pixels=np.zeros((1, 8, 8), np.uint8)),
                    {"score": np.zeros(1, np.float32)})
    with pytest.raises(TransferlabError, match="1 example\\(s\\) in one.csv: too few to hold out validation data"):
        _hold_out(one, [RegressionTask("score", "score")], 0.2, seed=0)


# --- training end to end -----------------------------------------------------------------------------------------


def test_multitask_run_trains_every_task_type_and_saves_all_heads(manifest, tmp_path):
    result = fit(_config(manifest, tmp_path / "run", weighting="uncertainty", epochs=8), progress=False)
    first, last = result.history[0], result.history[-1]
    for task in TASKS.split(","):
        assert f"train_{task}_loss" in last and f"train_{task}_weight" in last
    assert last["train_digit_loss"] < first["train_digit_loss"]
    val = result.metrics["val"]["tasks"]
    assert val["digit"]["accuracy"] > 0.3 and val["size"]["accuracy"] > 0.6  # chance: 0.1 and 0.5
    assert {"micro_f1", "mean_average_precision"} <= set(val["tags"]) and "r2" in val["score"]
    model = transferlab.load(tmp_path / "run")
    assert isinstance(model, MultiTaskModel)
    assert [type(t).__name__ for t in model.tasks] == ["ClassificationTask", "ClassificationTask", "MultiLabelTask",
                                                        "RegressionTask"]
    assert model.tasks[3].std > 1  # the score column's spread, kept to report predictions in its units


def test_multitask_evaluate_and_predict_through_the_cli(manifest, tmp_path):
    run = tmp_path / "run"
    fit(_config(manifest, run, weighting="pcgrad", epochs=2), progress=False)
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(manifest), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert set(metrics["tasks"]) == set(TASKS.split(",")) and metrics["tasks"]["digit"]["n"] == 200
    alone = json.loads(runner.invoke(app, ["evaluate", str(run), "--data", str(manifest), "--task", "score",
                                           "--json"]).output)
    assert list(alone["tasks"]) == ["score"] and alone["tasks"]["score"] == metrics["tasks"]["score"]
    # a plain class-labeled spec evaluates one classification task: the model's 'digit' task on the UCI digits
    digits = json.loads(runner.invoke(app, ["evaluate", str(run), "--data", "sklearn-digits", "--task", "digit",
                                            "--json"]).output)
    assert digits["tasks"]["digit"]["n"] == 1797
    predicted = runner.invoke(app, ["predict", str(run), str(manifest.parent / "0.png"), str(manifest.parent / "7.png")])
    assert predicted.exit_code == 0, predicted.output
    rows = list(csv.DictReader(predicted.output.strip().splitlines()))
    assert len(rows) == 2 and rows[0]["digit"] in [str(d) for d in range(10)] and "tags:p_even" in rows[0]
    float(rows[0]["score"])
    assert all(part in ("even", "big", "round", "plain") for part in rows[0]["tags"].split("|") if part)


def test_multitask_bad_inputs_give_one_line_errors(manifest, tmp_path):
    base = ["fit", "--method", "multitask", "--train", str(manifest), "--backbone", "lenet", "--epochs", "1",
            "--out", str(tmp_path / "run")]
    cases = [
        (["--tasks", "digit,agee"], "no column 'agee'"),
        (["--tasks", "digit,size:regression"], "regression column 'size'"),
        (["--tasks", "digit", "--weighting", "gradnorm"], "balances several tasks"),
        (["--tasks", "digit,size", "--weighting", "magic"], "invalid 'weighting'"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error:") and message in result.output, result.output
        assert "Traceback" not in result.output
    semicolons = _write_csv(tmp_path / "semi.csv", ["path", "tags"], [["0.png", "cat;dog"], ["1.png", "dog"]])
    (tmp_path / "0.png").write_bytes((manifest.parent / "0.png").read_bytes())
    (tmp_path / "1.png").write_bytes((manifest.parent / "1.png").read_bytes())
    result = runner.invoke(app, ["fit", "--method", "multitask", "--train", str(semicolons), "--tasks", "tags",
                                 "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "unsupported format" in result.output and "'cat;dog'" in result.output
    fit(_config(manifest, tmp_path / "done", epochs=1), progress=False)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "done"), "--data", "sklearn-digits"])
    assert result.exit_code == 2 and "--task" in result.output


def test_multitask_with_dwa_resumes_to_identical_result(manifest, tmp_path, kill_then_resume):
    settings = {"weighting": "dwa", "epochs": 4, "seed": 1}
    full = fit(_config(manifest, tmp_path / "full", **settings), progress=False)
    assert full.history[3]["train_digit_weight"] != pytest.approx(1.0)  # DWA moved the weights after two epochs
    resumed = kill_then_resume(lambda resume: _config(manifest, tmp_path / "killed", resume=resume, **settings), 3)
    assert resumed == [{k: v for k, v in row.items() if k != "seconds"} for row in full.history]


def test_mnist_and_usps_as_two_tasks_with_their_own_data(shared_data, tmp_path):
    config = build_config(overrides={
        "method": "multitask", "backbone": "lenet", "weighting": "upgrad", "epochs": 2, "steps_per_epoch": 30,
        "batch_size": 32, "lr": 3e-3, "out": tmp_path / "run",
        "tasks": [
            {"name": "mnist", "data": f"mnist:{shared_data / 'mnist'}@test", "labels_per_class": 30},
            {"name": "usps", "data": f"usps:{shared_data / 'usps'}@train", "test": f"usps:{shared_data / 'usps'}@test",
             "labels_per_class": 30},
        ],
    })
    result = fit(config, progress=False)
    assert result.metrics["train_images"] == 600
    assert set(result.metrics["val"]["tasks"]) == {"mnist", "usps"} and list(result.metrics["test"]["tasks"]) == ["usps"]
    assert result.metrics["test"]["tasks"]["usps"]["accuracy"] > 0.4  # 60 steps of a small CNN; chance is 0.1
    model = transferlab.load(tmp_path / "run")
    assert [t.classes for t in model.tasks] == [[str(d) for d in range(10)]] * 2


def test_jacobian_weighting_with_l2sp_adds_the_penalty_gradient(manifest, tmp_path):
    result = fit(_config(manifest, tmp_path / "run", weighting="upgrad", l2sp_alpha=0.01, epochs=2), progress=False)
    assert all("train_l2sp" in row for row in result.history) and result.history[-1]["train_l2sp"] > 0
