"""Ranking backbones before training: `rank_backbones` on the embedded UCI digits, and the ``rank`` command with its
one-line errors. The backbones' source classifier (`Backbone.source_logits`) is tested in test_backbones.py."""

import json
import logging
import re

import numpy as np
import pytest
from test_cli import assert_user_error, invoke, make_folder

from transferlab.backbones import create_backbone
from transferlab.embeddings import extract_features
from transferlab.errors import TransferlabError
from transferlab.fileio import cache_root
from transferlab.unsupervised.ranking import METRICS, rank_backbones

DIGITS = "sklearn-digits"
FAST = {"per_class": 8, "image_size": 32, "precision": "fp32", "progress": False}  # 80 digits, tiny images


@pytest.fixture(scope="module")
def ranked():
    """One ranking shared by the tests that only read it (module scope: the feature cache is the default one)."""
    return rank_backbones(DIGITS, ["lenet", "efficientnet_lite0"], **FAST)


def test_rows_hold_every_applicable_score_sorted_by_the_metric(ranked):
    assert [row.rank for row in ranked] == [1, 2]
    assert ranked[0].scores["logme"] >= ranked[1].scores["logme"]
    by_name = {row.backbone: row for row in ranked}
    assert list(by_name["efficientnet_lite0"].scores) == list(METRICS)  # has the ImageNet head: LEEP and NCE too
    assert list(by_name["lenet"].scores) == ["logme", "hscore", "knn"]
    assert by_name["lenet"].num_features == 500 and by_name["efficientnet_lite0"].num_features == 1280
    for row in ranked:
        assert all(np.isfinite(value) for value in row.scores.values())
        assert 0 <= row.scores["knn"] <= 1 and row.scores.get("leep", -1) <= 0 and row.scores.get("nce", -1) <= 0
        assert 0 <= row.embed_seconds <= row.seconds
    row = by_name["lenet"].to_dict()
    assert row["leep"] is None and row["backbone"] == "lenet" and set(METRICS) <= set(row)


def test_features_come_from_the_features_cache_and_another_metric_orders_the_same_scores(tmp_path, monkeypatch):
    from transferlab import embeddings

    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path))
    first = rank_backbones(DIGITS, ["efficientnet_lite0", "lenet"], "logme", **FAST)
    assert any((cache_root() / "features").rglob("shard-*.safetensors"))
    original, calls = embeddings._embed, []
    monkeypatch.setattr(embeddings, "_embed", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = rank_backbones(DIGITS, ["efficientnet_lite0", "lenet"], "knn", **FAST)
    assert calls == []  # nothing embedded the second time
    knn = [row.scores["knn"] for row in again]
    assert knn == sorted(knn, reverse=True)
    before = {row.backbone: row.scores for row in first}  # same data draw, same seeded random lenet
    for row in again:
        assert row.scores == pytest.approx(before[row.backbone])


def test_ranking_scores_are_the_metrics_of_the_extracted_features(ranked):
    from transferlab.data import load_data, take_per_class
    from transferlab.unsupervised.transferability import h_score, knn_accuracy, log_me

    data = load_data(DIGITS, split_preference=("all",))
    data = data.subset(take_per_class(data.labels, FAST["per_class"], 0))
    features = extract_features(create_backbone("efficientnet_lite0", image_size=32), data, progress=False)
    features = features.double().numpy()
    row = next(row for row in ranked if row.backbone == "efficientnet_lite0")
    assert row.scores["logme"] == pytest.approx(log_me(features, data.labels), rel=1e-4)
    assert row.scores["hscore"] == pytest.approx(h_score(features, data.labels, shrinkage=True), rel=1e-4)
    assert row.scores["knn"] == pytest.approx(knn_accuracy(features, data.labels))


def test_one_backbone_is_scored_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        (row,) = rank_backbones(DIGITS, ["lenet"], **FAST)
    assert row.rank == 1 and "only one backbone" in caplog.text


@pytest.mark.parametrize("backbones, metric, match", [
    (["lenet", "efficientnet_lite0"], "logmee", "unknown ranking metric 'logmee' (did you mean 'logme'"),
    (["lenet", "efficientnet_lite9"], "logme", "unknown backbone 'efficientnet_lite9'"),
    (["lenet", "lenet"], "logme", "listed more than once"),
    ([" ", ""], "logme", "at least one backbone"),
    (["efficientnet_lite0", "lenet"], "leep", "backbone 'lenet' has no source classifier"),
])
def test_bad_arguments_are_refused_before_any_embedding(backbones, metric, match, monkeypatch):
    from transferlab.unsupervised import ranking

    monkeypatch.setattr(ranking, "extract_features", lambda *a, **k: pytest.fail("embedded before refusing"))
    with pytest.raises(TransferlabError, match=re.escape(match)):
        rank_backbones(DIGITS, backbones, metric, **FAST)


def text_table(path, labels=("positive", "negative")):
    rows = ["text,label", *(f"sentence number {i},{labels[i % len(labels)]}" for i in range(6))]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_cli_prints_a_table_and_json():
    result = invoke("rank", DIGITS, "--backbones", "lenet,efficientnet_lite0", "--per-class", 8, "--image-size", 32,
                    "--precision", "fp32", "-q")
    assert result.exit_code == 0, result.output
    header, *lines, footer = result.output.strip().splitlines()
    assert header.split() == ["rank", "backbone", *METRICS, "seconds"] and len(lines) == 2
    assert lines[0].split()[0] == "1" and "sorted by logme" in footer
    lenet = next(line for line in lines if " lenet " in line).split()
    assert lenet[3] == "-" and lenet[4] == "-"  # no LEEP, no NCE

    result = invoke("rank", DIGITS, "--backbones", "efficientnet_lite0,efficientnet_lite1", "--per-class", 3,
                    "--image-size", 32, "--precision", "fp32", "--metric", "nce", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["rank"] for row in rows] == [1, 2] and rows[0]["nce"] >= rows[1]["nce"]
    assert {row["backbone"] for row in rows} == {"efficientnet_lite0", "efficientnet_lite1"}


def test_cli_bad_input_is_one_line(tmp_path):
    one_class = make_folder(tmp_path / "one", classes=("cats",), per_class=3)
    unlabeled = tmp_path / "unlabeled"
    make_folder(tmp_path / "tmp", classes=("cats",), per_class=2)
    (tmp_path / "tmp" / "cats").rename(unlabeled)
    texts = text_table(tmp_path / "texts.csv")
    cases = [
        ((one_class, "--backbones", "lenet,efficientnet_lite0"), ("single class", "'cats'", "at least two classes")),
        ((unlabeled, "--backbones", "lenet,efficientnet_lite0"), ("no labels",)),
        ((texts, "--backbones", "lenet,efficientnet_lite0"), ("'lenet' reads image data", "text")),
        ((DIGITS, "--backbones", "lenet,resnet_nope"), ("unknown backbone 'resnet_nope'",)),
        ((DIGITS, "--backbones", "lenet,efficientnet_lite0", "--metric", "accuracy"),
         ("unknown ranking metric 'accuracy'", "logme, leep, nce, hscore, knn")),
        ((DIGITS, "--backbones", "efficientnet_lite0,lenet", "--metric", "leep"),
         ("'lenet' has no source classifier", "logme, hscore, knn")),
        ((DIGITS, "--backbones", ","), ("at least one backbone",)),
        ((DIGITS, "--backbones", "lenet,efficientnet_lite0", "--precision", "fp16"), ("unknown precision 'fp16'",)),
    ]
    for args, fragments in cases:
        assert_user_error(invoke("rank", *args, "-q"), *fragments)


def test_cli_single_backbone_is_scored():
    result = invoke("rank", DIGITS, "--backbones", "lenet", "--per-class", 5, "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["backbone"] == "lenet" and row["rank"] == 1


def test_candidates_may_be_weights_files_random_inits_and_run_directories(tmp_path):
    from safetensors.torch import save_file
    from test_cli import fit_scratch_lenet

    from transferlab.unsupervised import BackboneSource

    data = make_folder(tmp_path / "photos", per_class=6)
    run = tmp_path / "run"
    assert fit_scratch_lenet(data, run, epochs=1).exit_code == 0
    weights = tmp_path / "lenet.safetensors"
    save_file(create_backbone("lenet", pretrained=False).state_dict(), str(weights))
    rows = rank_backbones(str(data), [str(run), BackboneSource("lenet", weights=str(weights)),
                                      BackboneSource("lenet", pretrained=False)], "knn", progress=False)
    assert sorted(row.backbone for row in rows) == sorted([str(run), "lenet (lenet.safetensors)",
                                                           "lenet (random init)"])
    assert all(0 <= row.scores["knn"] <= 1 for row in rows)
