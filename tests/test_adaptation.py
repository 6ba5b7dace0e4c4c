"""Unsupervised domain adaptation: loss functions, label-free scorers, every method end to end, and bad input."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from transferlab.api import fit, prepare_splits
from transferlab.cli import app
from transferlab.api import build_config
from transferlab.methods.adaptation import ADAPTATION_METHODS
from transferlab.errors import TransferlabError
from transferlab.methods.adaptation.losses import (
    coral_loss,
    domain_adversarial_loss,
    mcc_loss,
    mdd_loss,
    mk_mmd_loss,
    pseudo_label_loss,
    reversal_coefficient,
)
from transferlab.methods.adaptation.modules import CDANLoss, GradientReversal
from transferlab.methods.adaptation.selection import (
    AdaptationValidation,
    dev_risk,
    effective_sample_size,
    importance_weights,
    snd_score,
)

runner = CliRunner()


def _adapt(shared_data, out, **settings):
    return build_config(overrides={
        "method": "dann", "backbone": "lenet", "image_size": 28, "source": f"mnist:{shared_data / 'mnist'}@test",
        "target": f"usps:{shared_data / 'usps'}@train", "val_fraction": 0.05, "selection_samples": 300,
        "epochs": 2, "steps_per_epoch": 8, "batch_size": 32, "lr": 3e-3, "out": out, **settings,
    })


# --- losses --------------------------------------------------------------------------------------------------------


def test_reversal_schedule_and_layer():
    assert reversal_coefficient(0.0) == 0.0 and reversal_coefficient(1.0) == pytest.approx(1.0, abs=1e-4)
    x = torch.ones(3, requires_grad=True)
    GradientReversal()(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))


def test_alignment_losses_vanish_for_matching_batches_and_grow_with_shift():
    torch.manual_seed(0)
    f = torch.randn(64, 8)
    shifted = torch.randn(64, 8) * 3 + 2
    assert coral_loss(f, f).item() == pytest.approx(0.0, abs=1e-7)
    assert coral_loss(f, shifted).item() > 0.1
    assert mk_mmd_loss(f, f).item() == pytest.approx(0.0, abs=1e-6)
    assert mk_mmd_loss(f, shifted).item() > 10 * mk_mmd_loss(f, torch.randn(64, 8)).item()


def test_domain_adversarial_loss_is_low_for_a_perfect_discriminator():
    confident = domain_adversarial_loss(torch.full((4, 1), 10.0), torch.full((4, 1), -10.0))
    fooled = domain_adversarial_loss(torch.zeros(4, 1), torch.zeros(4, 1))
    assert confident.item() < 1e-3 and fooled.item() == pytest.approx(math.log(2))


def test_mcc_penalises_confusion_between_classes():
    confident = torch.eye(4).repeat(4, 1) * 20  # every class predicted, each with certainty
    uniform = torch.zeros(16, 4)
    assert mcc_loss(confident).item() < 0.01 and mcc_loss(uniform).item() == pytest.approx(0.75, abs=1e-4)


def test_mdd_rewards_agreement_on_source_and_disagreement_on_target():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    agree = logits * 2
    disagree = -logits * 2
    assert mdd_loss(logits, agree, logits, disagree).item() < mdd_loss(logits, disagree, logits, agree).item()


def test_pseudo_labels_only_above_the_threshold():
    teacher = torch.tensor([[4.0, 0.0], [0.1, 0.0]])  # confident, unsure
    loss, share = pseudo_label_loss(teacher, teacher, threshold=0.9)
    assert share.item() == 0.5 and loss.item() > 0


def test_cdan_randomises_wide_multilinear_maps():
    assert not CDANLoss(64, 10).randomized and CDANLoss(500, 10).randomized


# --- scorers ---------------------------------------------------------------------------------------------------------


def test_importance_weights_follow_the_density_ratio():
    rng = np.random.default_rng(0)
    same = importance_weights(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)))
    assert abs(same.mean() - 1) < 0.2
    assert np.array_equal(importance_weights(rng.normal(size=(3, 5)), rng.normal(size=(1, 5))), np.ones(3))
    source = rng.normal(size=(400, 1))
    weights = importance_weights(source, rng.normal(loc=1.0, size=(400, 1)))
    assert np.corrcoef(source[:, 0], weights)[0, 1] > 0.8  # source examples nearer the target weigh more
    assert effective_sample_size(np.ones(50)) == pytest.approx(50)
    assert effective_sample_size(np.r_[np.ones(49), 1000.0]) < 2  # one example holds nearly all the weight
    assert 100 < effective_sample_size(weights) < 400


def test_dev_risk_reduces_to_the_mean_loss_with_equal_weights_and_snd_of_collapse():
    losses = np.array([0.5, 1.0, 2.0])
    assert dev_risk(np.ones(3), losses) == pytest.approx(losses.mean())
    collapsed = torch.tensor([[1.0, 0.0]] * 5)
    assert snd_score(collapsed) == pytest.approx(math.log(4), rel=1e-4)


# --- end to end ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ADAPTATION_METHODS)
def test_every_method_trains_and_reports_the_selection(shared_data, tmp_path, method):
    extra = {"consistency": True} if method == "self-training" else {}
    result = fit(_adapt(shared_data, tmp_path / method, method=method, epochs=1, steps_per_epoch=4, **extra),
                 progress=False)
    row = result.history[-1]
    assert {"val_entropy", "val_snd", "val_source-accuracy", "report_target_accuracy"} <= set(row)
    assert not {"val_dev", "val_iwv"} & set(row)  # the domain-classifier scorers run only when asked for
    if method != "source-only":
        assert "train_transfer_loss" in row and np.isfinite(row["train_transfer_loss"])
    report = result.metrics["selection"]
    assert report["scorer"] == "source-accuracy" and not report["oracle"] and report["selected_epoch"] == 1
    assert 0 <= report["target_accuracy_selected"] <= 1


def test_target_labels_never_reach_training(shared_data, tmp_path):
    config = _adapt(shared_data, tmp_path / "labeled", selection="source-accuracy")
    splits = prepare_splits(config)
    labeled = fit(config, splits=splits, progress=False)
    unlabeled_splits = replace(splits, target=replace(splits.target, labels=None))
    unlabeled = fit(config.model_copy(update={"out": tmp_path / "unlabeled"}), splits=unlabeled_splits, progress=False)
    for a, b in zip(labeled.history, unlabeled.history, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_score"] == b["val_score"]
    assert "report_target_accuracy" not in unlabeled.history[0]
    assert labeled.metrics["selection"]["selected_epoch"] == unlabeled.metrics["selection"]["selected_epoch"]


def test_unlabeled_target_folder_through_the_cli(shared_data, tmp_path):
    from transferlab.data import load_data

    usps = load_data(f"usps:{shared_data / 'usps'}@test", split_preference=("test",))
    folder = tmp_path / "target"
    folder.mkdir()
    for i in range(60):
        Image.fromarray(usps.pixels[i]).save(folder / f"{i}.png")
    result = runner.invoke(app, [
        "fit", "--method", "coral", "--backbone", "lenet", "--image-size", "28", "--source",
        f"mnist:{shared_data / 'mnist'}@test", "--target", str(folder), "--epochs", "1", "--steps-per-epoch", "3",
        "--selection", "entropy", "--out", str(tmp_path / "run"), "-q",
    ])
    assert result.exit_code == 0, result.output
    assert "checkpoint chosen by entropy" in result.output and "target accuracy" not in result.output


def test_adaptation_bad_inputs(shared_data, tmp_path):
    mnist, usps = f"mnist:{shared_data / 'mnist'}@test", f"usps:{shared_data / 'usps'}@train"
    with pytest.raises(TransferlabError, match="missing required setting 'target'"):
        build_config(overrides={"method": "mcc", "source": mnist, "out": tmp_path / "r"})
    with pytest.raises(TransferlabError, match=r"setting 'train' \(--train\) applies to finetune.*; not to mcc"):
        build_config(overrides={"method": "mcc", "source": mnist, "target": usps, "train": usps, "out": tmp_path / "r"})
    with pytest.raises(TransferlabError, match="invalid 'selection'"):
        build_config(overrides={"method": "mcc", "source": mnist, "target": usps, "selection": "magic",
                                "out": tmp_path / "r"})
    with pytest.raises(TransferlabError, match="hold the same examples"):
        prepare_splits(_adapt(shared_data, tmp_path / "r", target=mnist))
    # a target of other classes: digits named as words share nothing with MNIST's "0".."9"
    folder = tmp_path / "words"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((16, 16), 40 * i, dtype=np.uint8)).save(folder / name / f"{i}.png")
    with pytest.raises(TransferlabError, match="shares no class with the source"):
        prepare_splits(_adapt(shared_data, tmp_path / "r", target=str(folder)))
    unlabeled = tmp_path / "loose"
    unlabeled.mkdir()
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(unlabeled / "a.png")
    with pytest.raises(TransferlabError, match="selection 'oracle'.*no labels"):
        prepare_splits(_adapt(shared_data, tmp_path / "r", target=str(unlabeled), selection="oracle"))
    result = runner.invoke(app, ["fit", "--method", "dann", "--source", mnist, "--target", str(tmp_path / "missing"),
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and result.output.startswith("error:") and "missing" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["fit", "--method", "dann", "--source", mnist, "--target", str(tmp_path / "empty"),
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no images or audio files in" in result.output and "empty" in result.output


def test_target_with_extra_classes_warns_and_reports_on_shared(shared_data, tmp_path, caplog):
    folder = tmp_path / "mixed"
    for name in ("3", "7", "cat"):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((16, 16), 30 * i, dtype=np.uint8)).save(folder / name / f"{i}.png")
    splits = prepare_splits(_adapt(shared_data, tmp_path / "r", target=str(folder)))
    assert "classes the source lacks (cat)" in caplog.text
    assert sorted(set(splits.target.labels.tolist())) == [-1, 3, 7]


def test_killed_dann_run_resumes_its_reversal_schedule_exactly(shared_data, tmp_path, kill_then_resume):
    settings = {"epochs": 3, "steps_per_epoch": 5, "seed": 2}
    full = fit(_adapt(shared_data, tmp_path / "full", **settings), progress=False)
    resumed = kill_then_resume(lambda resume: _adapt(shared_data, tmp_path / "killed", resume=resume, **settings), 2)
    assert resumed == [{k: v for k, v in row.items() if k != "seconds"} for row in full.history]
    assert resumed[2]["train_reversal"] > resumed[1]["train_reversal"]


def _scored_epochs(*epochs):
    """History rows as `AdaptationValidation` writes them: (source accuracy, top target class share, source share of
    that class, target accuracy) per epoch."""
    from transferlab.methods.adaptation.selection import COLLAPSE_PENALTY, collapsed

    rows = []
    for number, (score, share, source_share, target_accuracy) in enumerate(epochs, start=1):
        down = collapsed(share, source_share)
        rows.append({"epoch": number, "val_source-accuracy": score, "val_score": score - COLLAPSE_PENALTY * down,
                     "report_target_top_class_share": share, "report_source_share_of_that_class": source_share,
                     "report_collapsed": float(down), "report_target_accuracy": target_accuracy,
                     "val_oracle": target_accuracy})
    return rows


def test_collapsed_epochs_are_passed_over_without_target_labels():
    """An epoch with nearly every target prediction in one class the source labels do not favour ranks last."""
    from transferlab.methods.adaptation.train import selection_report

    report = selection_report(_scored_epochs((0.8, 0.6, 0.5, 0.7), (0.9, 0.97, 0.5, 0.3)), "source-accuracy")
    assert report["selected_epoch"] == 1 and report["collapsed_epochs"] == [2] and "warning" not in report
    assert report["target_accuracy_selected"] == 0.7
    assert selection_report(_scored_epochs((0.8, 0.6, 0.5, 0.7), (0.9, 0.97, 0.5, 0.3)), "oracle")["selected_epoch"] == 1
    # the source is that skewed: not a collapse
    assert selection_report(_scored_epochs((0.8, 0.6, 0.5, 0.7), (0.9, 0.95, 0.9, 0.9)), "source-accuracy")[
        "selected_epoch"] == 2


def test_validation_marks_an_epoch_that_predicts_one_class_for_every_target_image(shared_data, tmp_path):
    from transferlab.backbones.lenet import LeNet
    from transferlab.engine.loop import TrainSettings
    from transferlab.models import TransferModel

    splits = prepare_splits(_adapt(shared_data, tmp_path / "r"))
    head = torch.nn.Linear(500, 10)
    model = TransferModel(LeNet(28), head, splits.classes)
    settings = TrainSettings(epochs=1, batch_size=64)
    validation = AdaptationValidation(splits.val, splits.target, "source-accuracy", max_target=200, all_scorers=True)
    healthy = validation.evaluate(model, settings)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.0] * 3 + [100.0] + [0.0] * 6))  # every example -> class 3
    down = validation.evaluate(model, settings)
    assert healthy["report_collapsed"] == 0 and healthy["val_score"] == healthy["val_source-accuracy"]
    assert down["report_collapsed"] == 1 and down["report_target_top_class_share"] == 1.0
    assert down["val_score"] < healthy["val_score"] and down["val_score"] < -1000
    assert 0 < down["report_importance_ess"] <= len(splits.val)


def test_importance_weighted_scorers_run_when_selected_or_all_asked_and_inputs_are_prepared_once(shared_data,
                                                                                                   tmp_path):
    from transferlab.backbones.lenet import LeNet
    from transferlab.engine.loop import TrainSettings
    from transferlab.models import TransferModel

    splits = prepare_splits(_adapt(shared_data, tmp_path / "r"))
    model = TransferModel(LeNet(28), torch.nn.Linear(500, 10), splits.classes)
    settings = TrainSettings(epochs=1, batch_size=64)
    for scorer, all_scorers, expected in (("source-accuracy", False, False), ("dev", False, True),
                                          ("iwv", False, True), ("entropy", True, True)):
        validation = AdaptationValidation(splits.val, splits.target, scorer, max_target=100, all_scorers=all_scorers)
        row = validation.evaluate(model, settings)
        assert ({"val_iwv", "val_dev", "report_importance_ess"} <= set(row)) is expected, scorer
        assert row["val_score"] == row[f"val_{scorer}"]
    datasets = list(validation._datasets.values())
    assert len(datasets) == 2 and all(len(dataset._tensors) == len(dataset) for dataset in datasets)
    validation.evaluate(model, settings)  # the next epoch reuses the prepared tensors
    assert list(validation._datasets.values()) == datasets


def test_all_scorers_setting_reports_every_scorers_pick(shared_data, tmp_path):
    result = fit(_adapt(shared_data, tmp_path / "all", method="source-only", epochs=1, steps_per_epoch=2,
                        selection_all_scorers=True), progress=False)
    assert set(result.metrics["selection"]["by_scorer"]) == {"source-accuracy", "dev", "iwv", "entropy", "snd",
                                                             "oracle"}
    with pytest.raises(TransferlabError, match="selection_all_scorers"):
        build_config(overrides={"method": "finetune", "train": "x", "selection_all_scorers": True})


def test_a_resumed_run_from_before_the_all_scorers_setting_keeps_logging_every_scorer(shared_data, tmp_path):
    import json

    from transferlab.api import resolve_config

    run = tmp_path / "older"
    fit(_adapt(shared_data, run, method="source-only", epochs=1, steps_per_epoch=2), progress=False)
    saved = json.loads((run / "config.json").read_text())
    del saved["selection_all_scorers"]  # as a run directory written before the setting existed
    (run / "config.json").write_text(json.dumps(saved))
    assert resolve_config({"out": str(run), "resume": True}).selection_all_scorers is True


def test_a_run_whose_every_epoch_collapsed_keeps_its_best_and_warns():
    from transferlab.methods.adaptation.train import selection_report

    report = selection_report(_scored_epochs((0.8, 0.92, 0.5, 0.4), (0.9, 0.97, 0.5, 0.3)), "source-accuracy")
    assert report["selected_epoch"] == 2 and "collapsed" in report["warning"]
    assert report["collapsed_epochs"] == [1, 2]


def test_bottleneck_head_aligns_its_own_features_and_reloads(shared_data, tmp_path):
    """With ``head: bottleneck`` the discriminator reads the 64 bottleneck features, and the run predicts after
    loading like the trained model."""
    from transferlab.api import load
    from transferlab.models import split_head

    result = fit(_adapt(shared_data, tmp_path / "run", head="bottleneck", head_hidden=[64], epochs=1), progress=False)
    neck, classifier = split_head(result.model.head)
    assert isinstance(neck[1], torch.nn.BatchNorm1d) and classifier.in_features == 64
    objective_state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["objective"]
    assert objective_state["adaptation.discriminator.layers.0.weight"].shape[1] == 64
    x = torch.randn(4, 1, 28, 28)
    loaded = load(tmp_path / "run").eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), result.model.eval()(x), atol=1e-5)
