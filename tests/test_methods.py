"""Each method's pieces: the folded logistic head, L2-SP, freezing with frozen BatchNorm, torch heads, early stop."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from transferlab.api import fit
from transferlab.api import build_config
from transferlab.methods.features import LOGISTIC_C_GRID, _logistic_as_linear, feature_scale, fit_logistic_head
from transferlab.methods.losses import L2SP, ClassificationObjective, l2sp_penalty
from transferlab.models import TransferModel, build_head


@pytest.mark.parametrize("num_classes", [2, 4])
def test_logistic_regression_folds_into_one_linear_layer(num_classes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6)) * rng.uniform(0.5, 5, size=6) + rng.normal(size=6)
    y = np.arange(80) % num_classes
    x[y == 1] += 1.5
    scaler = StandardScaler().fit(x)
    classifier = LogisticRegression(max_iter=1000).fit(scaler.transform(x), y)
    linear = _logistic_as_linear(scaler.mean_, scaler.scale_, classifier, num_classes)
    probabilities = torch.softmax(linear(torch.from_numpy(x).float()), 1).detach().numpy()
    np.testing.assert_allclose(probabilities, classifier.predict_proba(scaler.transform(x)), atol=1e-4)


def test_logistic_head_picks_c_by_cross_validation_and_refits_on_every_label():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 8)
    x = rng.normal(size=(24, 10)) + np.eye(3, 10)[y] * 2.5
    linear, history, summary = fit_logistic_head(x, y, 4, seed=0)
    assert summary["folds"] == 5 and summary["C"] in LOGISTIC_C_GRID
    assert len(history) == 2 * len(LOGISTIC_C_GRID) and all("cv_accuracy" in row for row in history)
    assert summary["cv_accuracy"] == max(row["cv_accuracy"] for row in history)
    steps = [StandardScaler()] if summary["standardize"] else []
    refit = make_pipeline(*steps, LogisticRegression(C=summary["C"], max_iter=2000, random_state=0))
    refit.fit(x / feature_scale(x), y)  # the chosen candidate, refit on all 24 labels
    probabilities = torch.softmax(linear(torch.from_numpy(x).float()), 1).detach().numpy()[:, :3]
    np.testing.assert_allclose(probabilities, refit.predict_proba(x / feature_scale(x)), atol=1e-4)
    assert linear.bias.detach().numpy()[3] < -1e3  # a class absent from training is never predicted
    _, _, single = fit_logistic_head(x[:9], np.array([0, 0, 0, 0, 1, 1, 1, 1, 2]), 3, seed=0)
    assert single["folds"] == 0 and single["C"] == 1.0  # one example of class 2: nothing to cross-validate


def test_logistic_selection_breaks_accuracy_ties_by_log_loss():
    from transferlab.methods.features import _best_candidate

    params = [{"standardize": "passthrough", "logistic__C": c} for c in (0.01, 0.1, 1.0, 10.0)]
    results = {"params": params, **{f"split{i}_test_accuracy": None for i in range(5)},
               "mean_test_accuracy": np.array([0.80, 0.90, 0.90, 0.60]), "std_test_accuracy": np.full(4, 0.3),
               "mean_test_log_loss": -np.array([0.45, 0.50, 0.40, 0.20])}
    assert _best_candidate(results) == 2  # 0.80 and 0.90 are within one standard error (0.13); C 10 (0.60) is not
    results["mean_test_log_loss"] = -np.array([0.40, 0.40, 0.40, 0.20])
    assert _best_candidate(results) == 0  # exact ties: the smaller C
    results["params"][0] = {"standardize": StandardScaler(), "logistic__C": 0.01}
    results["mean_test_log_loss"] = -np.array([0.10, 0.50, 0.40, 0.20])
    assert _best_candidate(results) == 2  # unstandardised candidates within reach come first


def test_l2sp_is_zero_at_the_start_and_pulls_back():
    backbone = torch.nn.Linear(3, 3)
    model = torch.nn.Module()
    model.backbone, model.head = backbone, torch.nn.Linear(3, 2)
    regularizer = L2SP(model, alpha=0.1, beta=0.0)
    assert regularizer().item() == 0
    with torch.no_grad():
        backbone.weight += 1.0
    value = regularizer()
    assert value.item() == pytest.approx(0.5 * 0.1 * 9)
    value.backward()
    assert torch.all(backbone.weight.grad > 0)  # gradient points away from the start: descent pulls back
    assert l2sp_penalty([torch.ones(2)], [torch.zeros(2)]).item() == 2


def test_objective_reports_its_parts():
    model = TransferModel.__new__(TransferModel)
    torch.nn.Module.__init__(model)
    model.backbone, model.head = torch.nn.Identity(), build_head("linear", 4, 3, [])
    out = ClassificationObjective({"extra": lambda: torch.tensor(0.5)})(model, (torch.randn(5, 4), torch.arange(5) % 3))
    assert set(out["parts"]) == {"ce", "extra"}
    assert out["loss"].item() == pytest.approx(out["parts"]["ce"].item() + 0.5)


def _digits(out, **settings):
    return build_config(overrides={"train": "sklearn-digits", "labels_per_class": 6, "out": out, "seed": 1, **settings})


def test_finetune_keeps_frozen_groups_and_their_batchnorm_unchanged(tmp_path):
    from transferlab.backbones import create_backbone
    from transferlab.engine.checkpoint import load_checkpoint

    pretrained = create_backbone("efficientnet_lite0", image_size=32).state_dict()
    result = fit(_digits(tmp_path / "ft", method="finetune", image_size=32, freeze="2", epochs=2, head_epochs=1,
                         l2sp_alpha=0.01), progress=False)
    last = load_checkpoint(tmp_path / "ft" / "checkpoint.pt")["model"]  # weights after the last (unfrozen) epoch
    groups = dict(result.model.backbone.parameter_groups())

    def modules_of(group):
        return tuple(name.rsplit(".", 1)[0] + "." for name in groups[group])

    frozen, trained = modules_of("stem") + modules_of("blocks.0.0"), modules_of("conv_head")
    for key, value in pretrained.items():  # weights and BatchNorm running statistics alike
        if key.startswith(frozen):
            assert torch.equal(last["backbone." + key], value), key
    changed = [key for key in pretrained if key.startswith(trained) and not torch.equal(last["backbone." + key],
                                                                                         pretrained[key])]
    assert changed, "the unfrozen groups should have trained"
    assert "train_l2sp" in result.history[0] and result.history[1]["train_l2sp"] > 0


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_features_with_torch_heads(tmp_path, head):
    result = fit(_digits(tmp_path / head, method="features", backbone="efficientnet_lite0", image_size=32, head=head,
                         epochs=3, lr=1e-2), progress=False)
    assert len(result.history) == 3
    assert result.metrics["val"]["accuracy"] > 0.3  # ten classes: chance is 0.1


def test_early_stopping_stops_when_validation_stalls(tmp_path):
    result = fit(_digits(tmp_path / "stop", method="scratch", backbone="lenet", epochs=10, lr=1e-9, patience=1),
                 progress=False)
    assert len(result.history) < 10


def test_scratch_ignores_pretrained_weights(tmp_path):
    result = fit(_digits(tmp_path / "s", method="scratch", backbone="efficientnet_lite0", image_size=32, epochs=1),
                 progress=False)
    assert result.model.backbone.spec.get("weights_source") == "random"


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_optimizers_run_fused_on_cpu_with_the_per_tensor_arithmetic(name):
    from transferlab.engine.optim import build_optimizer

    torch.manual_seed(0)
    start = [torch.randn(64, 32), torch.randn(32)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(5)]
    fused_params = [torch.nn.Parameter(p.clone()) for p in start]
    fused = build_optimizer(name, [{"params": fused_params, "lr": 0.01}], weight_decay=0.01)
    plain_params = [torch.nn.Parameter(p.clone()) for p in start]
    plain = build_optimizer(name, [{"params": plain_params, "lr": 0.01}], weight_decay=0.01)
    plain.param_groups[0]["fused"] = None  # the per-tensor loop, as before
    for step in grads:
        for optimizer, params in ((fused, fused_params), (plain, plain_params)):
            for param, grad in zip(params, step):
                param.grad = grad.clone()
            optimizer.step()
    assert fused.param_groups[0]["fused"] is True
    for a, b, before in zip(fused_params, plain_params, start):
        assert not torch.equal(a, before) and torch.allclose(a, b, atol=1e-6)


def test_inverse_schedule_follows_dann_annealing():
    from transferlab.engine.optim import build_scheduler

    from transferlab.config import TrainingSettings

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = build_scheduler(TrainingSettings(scheduler="inverse"), optimizer, total_steps=100)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.01)
    assert rates[50] == pytest.approx(0.01 / 6**0.75)  # p = 0.5: lr / (1 + 10 p) ** 0.75
    assert all(a > b for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("name", ["cosine", "inverse", "constant"])
def test_warmup_ramps_linearly_then_hands_over_to_the_schedule(name):
    from transferlab.config import TrainingSettings
    from transferlab.engine.optim import WARMUP_START, build_scheduler

    def rates(warmup):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
        scheduler = build_scheduler(TrainingSettings(scheduler=name, warmup=warmup), optimizer, total_steps=100)
        seen = []
        for _ in range(100):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        return seen

    warm, plain = rates(0.2), rates(0.0)
    assert warm[0] == pytest.approx(0.01 * WARMUP_START)
    assert all(a < b for a, b in zip(warm[:20], warm[1:21]))  # a linear rise over the first 20 steps
    assert warm[10] == pytest.approx(0.01 * (WARMUP_START + (1 - WARMUP_START) * 10 / 20))
    assert warm[20] == pytest.approx(0.01)  # then the schedule over the 80 steps left, from the full rate
    assert warm[20 + 40] == pytest.approx(rates_over(name, 80)[40])
    assert warm != plain


def test_warmup_is_refused_with_onecycle_which_warms_up_itself():
    from pydantic import ValidationError

    from transferlab.config import TrainingSettings

    with pytest.raises(ValidationError, match="one-cycle warms up by itself"):
        TrainingSettings(scheduler="onecycle", warmup=0.1)


def rates_over(name, steps):
    from transferlab.config import TrainingSettings
    from transferlab.engine.optim import build_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = build_scheduler(TrainingSettings(scheduler=name), optimizer, total_steps=steps)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return seen


def test_training_a_cnn_keeps_its_weights_channels_last_and_saves_plain_tensors(shared_data, tmp_path):
    from safetensors.torch import load_file

    from transferlab.engine.loop import BEST_WEIGHTS

    result = fit(build_config(overrides={
        "method": "scratch", "backbone": "lenet", "image_size": 28,
        "train": f"mnist:{shared_data / 'mnist'}@test", "labels_per_class": 10, "epochs": 1, "batch_size": 16,
        "out": tmp_path / "run"}), progress=False)
    conv = result.model.backbone.conv2.weight  # conv1 has one input channel: both layouts agree
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    saved = load_file(str(tmp_path / "run" / BEST_WEIGHTS))
    assert torch.equal(saved["backbone.conv2.weight"], conv.detach())


def test_a_label_budget_holds_validation_out_of_the_budget_and_says_so(shared_data):
    from transferlab.api import prepare_splits

    splits = prepare_splits(build_config(overrides={"train": "sklearn-digits", "labels_per_class": 5, "out": "o"}))
    assert len(splits.train) + len(splits.val) == 50 and np.bincount(splits.val.labels).tolist() == [1] * 10
    assert splits.label_use == {"train": 40, "selection": 10, "budget_per_class": 5,
                                "selection_by": "held out of the training labels (seed 0)"}
    # the data's own validation split holds labels beyond the budget: left aside; 3 per class leave none to hold out
    with pytest.warns(UserWarning, match="3 labels per class leave none to hold out"):
        few = prepare_splits(build_config(overrides={"train": str(shared_data / "hymenoptera"), "labels_per_class": 3,
                                                     "out": "o"}))
    assert len(few.train) == 6 and few.val is None and few.label_use["selection"] == 0
    features = prepare_splits(build_config(overrides={"train": "sklearn-digits", "labels_per_class": 5,
                                                      "method": "features", "out": "o"}))
    assert len(features.train) == 50 and features.val is None  # C is chosen by cross-validation on all 50


def test_features_run_reports_how_many_labels_it_used_for_what(tmp_path):
    result = fit(_digits(tmp_path / "f", method="features", backbone="lenet", image_size=28), progress=False)
    assert result.metrics["labels"] == {"train": 60, "selection": 60, "budget_per_class": 6,
                                        "selection_by": "5-fold cross-validation on the training labels"}
    assert result.notes[0] == ("labels: 60 for training; 60 for model selection, 5-fold cross-validation on the "
                               "training labels (budget: 6 per class)")
