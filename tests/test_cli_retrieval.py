"""``transferlab evaluate EMB [--query EMB2]`` and ``transferlab cluster EMB``: real embeddings of real digits,
metrics equal to the library's, assignments CSV, and one-line errors for each bad input."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_cli import assert_user_error, invoke

from transferlab.unsupervised.embed import BackboneSource, embed_data, write_embeddings
from transferlab.unsupervised.projection import Projection
from transferlab.unsupervised.retrieval_metrics import retrieval_metrics


def lenet_embeddings(spec):
    torch.manual_seed(0)  # the same random LeNet (the same weights digest) for every data set
    return embed_data(spec, BackboneSource("lenet", pretrained=False), progress=False)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """scikit-learn's 1,797 digits through a seeded random LeNet, written as an embeddings directory."""
    embeddings = lenet_embeddings("sklearn-digits")
    return write_embeddings(embeddings, tmp_path_factory.mktemp("emb") / "digits"), embeddings


@pytest.fixture(scope="module")
def usps(tmp_path_factory, shared_data):
    """USPS test digits (2,007) through the same LeNet: queries from another domain."""
    embeddings = lenet_embeddings(f"usps:{shared_data / 'usps'}@test")
    return write_embeddings(embeddings, tmp_path_factory.mktemp("emb") / "usps"), embeddings


def test_evaluate_embeddings_leave_one_out(digits):
    directory, embeddings = digits
    result = invoke("evaluate", directory, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    expected = retrieval_metrics(embeddings.vectors, embeddings.labels)
    for key in ("recall@1", "recall@5", "recall@10", "map@r", "r_precision", "nmi", "ari"):
        assert metrics[key] == pytest.approx(expected[key]), key
    assert metrics["leave_one_out"] and metrics["queries"] == 1797 and metrics["query"] is None
    text = invoke("evaluate", directory).output
    assert "recall@1 " in text and "mAP@R" in text and "leave-one-out" in text and "NMI" in text


def test_evaluate_queries_from_another_data_set(digits, usps):
    result = invoke("evaluate", digits[0], "--query", usps[0], "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert not metrics["leave_one_out"] and (metrics["queries"], metrics["gallery"]) == (2007, 1797)
    expected = retrieval_metrics(usps[1].vectors, usps[1].labels, digits[1].vectors, digits[1].labels)
    assert metrics["map@r"] == pytest.approx(expected["map@r"])


def test_cluster_writes_assignments_and_refuses_to_overwrite(digits, tmp_path):
    directory, embeddings = digits
    out = tmp_path / "assignments.csv"
    result = invoke("cluster", directory, "--k", 10, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["k"] == 10 and summary["k_chosen_by"] == "given" and summary["nmi"] > 0.3
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["item", "cluster", "label"] and len(rows) == len(embeddings)
    assert rows[5]["label"] == embeddings.classes[embeddings.labels[5]]
    assert {int(row["cluster"]) for row in rows} == set(range(10))
    before = out.read_bytes()
    assert_user_error(invoke("cluster", directory, "--k", 3, "--out", out), "already exists", "--overwrite")
    assert out.read_bytes() == before
    assert invoke("cluster", directory, "--k", 3, "--out", out, "--overwrite").exit_code == 0
    assert {line.rsplit(",", 2)[1] for line in out.read_text().splitlines()[1:]} == {"0", "1", "2"}


def test_cluster_chooses_k_and_says_so(digits, tmp_path):
    embeddings = digits[1]
    small = write_embeddings(subset(embeddings, np.arange(300)), tmp_path / "small")
    result = invoke("cluster", small, "--method", "agglomerative")
    assert result.exit_code == 0, result.output
    assert "k chosen by silhouette" in result.output and "over 2..20" in result.output
    assert "assignments not written" in result.output


def test_unlabeled_embeddings(digits, tmp_path):
    unlabeled = write_embeddings(replace(subset(digits[1], np.arange(60)), labels=None), tmp_path / "unlabeled")
    assert_user_error(invoke("evaluate", unlabeled), "has no labels", "labeled")
    out = tmp_path / "a.csv"
    result = invoke("cluster", unlabeled, "--k", 3, "--out", out, "--json")
    assert result.exit_code == 0 and "nmi" not in json.loads(result.output)
    assert out.read_text().splitlines()[0] == "item,cluster"


def test_evaluate_bad_inputs(digits, usps, tmp_path):
    directory, embeddings = digits
    assert_user_error(invoke("evaluate", directory, "--data", "sklearn-digits"), "embeddings directory", "--data")
    assert_user_error(invoke("evaluate", directory, "--task", "digit"), "embeddings directory", "--task")
    assert_user_error(invoke("evaluate", tmp_path, "--query", directory), "--query", "not one")
    assert_user_error(invoke("evaluate", tmp_path), "needs --data")
    torch.manual_seed(1)
    other = embed_data("sklearn-digits", BackboneSource("lenet", pretrained=False), progress=False)
    other_dir = write_embeddings(other, tmp_path / "other-weights")
    assert_user_error(invoke("evaluate", directory, "--query", other_dir), "other weights", "same --backbone")
    whitened = replace(embeddings, projection=Projection.fit(embeddings.vectors, components=8, whiten=True))
    whitened = write_embeddings(replace(whitened, vectors=whitened.projection.apply(embeddings.vectors)),
                                tmp_path / "whitened")
    assert_user_error(invoke("evaluate", directory, "--query", whitened), "different projections")
    assert_user_error(invoke("evaluate", directory, "--query", tmp_path / "missing"), "missing")


@pytest.mark.parametrize("args, fragments", [
    (("--method", "hdbscan", "--k", 3), ("hdbscan", "no --k")),
    (("--k", 1), ("--k", "at least 2")),
    (("--k", 5000), ("cannot make 5000 clusters from 1797",)),
    (("--method", "kmean"), ("kmean", "did you mean 'kmeans'")),
])
def test_cluster_bad_inputs(digits, args, fragments):
    assert_user_error(invoke("cluster", digits[0], *args), *fragments)


def test_cluster_a_directory_that_is_not_embeddings(tmp_path):
    assert_user_error(invoke("cluster", tmp_path, "--k", 2), "not an embeddings directory")


def subset(embeddings, rows):
    return replace(embeddings, vectors=embeddings.vectors[rows], items=[embeddings.items[i] for i in rows],
                   splits=[embeddings.splits[i] for i in rows], labels=embeddings.labels[rows])
