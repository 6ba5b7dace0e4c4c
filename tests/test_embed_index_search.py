"""Unsupervised transfer: `embed` -> `index` -> `search`, through the command line and the Python functions, with
their bad inputs (damaged files, other backbones, other modalities, k too large, interrupted writes)."""

import csv
import json

import numpy as np
import pytest
import torch
from test_cli import assert_user_error, invoke, make_folder

from transferlab.backbones import create_backbone
from transferlab.unsupervised import (
    BackboneSource,
    EmbeddingSet,
    SearchIndex,
    embed_data,
    write_embeddings,
)
from transferlab.unsupervised.embedding_set import VECTORS
from transferlab.unsupervised.index import build_index, exact_recall
from transferlab.unsupervised.projection import Projection, l2_normalise


@pytest.fixture
def lenet_weights(tmp_path):
    """A lenet weights file: a fixed backbone that queries can be embedded with again."""
    torch.manual_seed(0)
    path = tmp_path / "lenet.safetensors"
    from safetensors.torch import save_file

    save_file(create_backbone("lenet", pretrained=False).state_dict(), str(path))
    return path


@pytest.fixture
def folder_gallery(tmp_path, lenet_weights):
    """A labeled image folder embedded with lenet (weights file), and its index."""
    data = make_folder(tmp_path / "photos", per_class=8)
    emb, idx = tmp_path / "emb", tmp_path / "idx"
    result = invoke("embed", data, "--backbone", "lenet", "--weights", lenet_weights, "--out", emb, "-q")
    assert result.exit_code == 0, result.output
    result = invoke("index", emb, "--out", idx, "-q")
    assert result.exit_code == 0, result.output
    return data, emb, idx


def test_embed_writes_vectors_rows_and_backbone_description(folder_gallery):
    _, emb, _ = folder_gallery
    vectors = np.load(emb / VECTORS)
    assert vectors.shape == (16, 500) and vectors.dtype == np.float32
    with open(emb / "items.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["label"] for row in rows] == ["cats"] * 8 + ["dogs"] * 8
    assert rows[0]["item"].endswith("0.png") and rows[0]["split"] == "all"
    info = json.loads((emb / "embedding.json").read_text())
    assert info["backbone"]["name"] == "lenet" and info["backbone"]["modality"] == "image"
    assert len(info["weights_digest"]) == 40 and info["preprocess"]["input_size"] == [1, 28, 28]
    assert info["backbone_source"]["weights"].endswith("lenet.safetensors")
    loaded = EmbeddingSet.load(emb)
    np.testing.assert_array_equal(loaded.vectors, vectors)
    assert loaded.classes == ["cats", "dogs"] and loaded.labels.tolist() == [0] * 8 + [1] * 8


def test_search_finds_the_query_itself_first_with_its_label(folder_gallery, tmp_path):
    data, _, idx = folder_gallery
    query = data / "dogs" / "3.png"
    result = invoke("search", idx, query, "--k", 3, "--format", "json", "-q")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert [hit["rank"] for hit in hits] == [1, 2, 3]
    assert hits[0]["item"] == str(query) and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["label"] == "dogs"
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    csv_result = invoke("search", idx, data / "cats", "--k", 2, "-q")
    assert csv_result.exit_code == 0, csv_result.output
    lines = csv_result.output.strip().splitlines()
    assert lines[0] == "query,rank,item,score,label" and len(lines) == 1 + 8 * 2


def test_search_bad_inputs_are_one_line_errors(folder_gallery, tmp_path, lenet_weights):
    data, emb, idx = folder_gallery
    query = data / "cats" / "0.png"
    assert_user_error(invoke("search", idx, query, "--k", 17, "-q"), "--k 17", "16")
    texts = tmp_path / "q.csv"
    texts.write_text("text\nhello there\n")
    assert_user_error(invoke("search", idx, texts, "-q"), "image embeddings", "text")
    assert_user_error(invoke("search", emb, query, "-q"), "not an index directory")
    lenet_weights.write_bytes(lenet_weights.read_bytes()[:-8] + b"\0" * 8)  # the gallery's backbone changed
    assert_user_error(invoke("search", idx, query, "-q"), "does not have the weights")


def test_an_existing_directory_is_kept_unless_overwrite_and_an_interrupted_write_keeps_the_old_one(
        folder_gallery, lenet_weights, monkeypatch):
    data, emb, _ = folder_gallery
    before = (emb / VECTORS).read_bytes()
    args = ("embed", data, "--backbone", "lenet", "--weights", lenet_weights, "--out", emb, "-q")
    assert_user_error(invoke(*args), "already exists", "--overwrite")

    def interrupted(self, directory):
        (directory / VECTORS).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(EmbeddingSet, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_embeddings(EmbeddingSet.load(emb), emb, overwrite=True)
    assert (emb / VECTORS).read_bytes() == before
    assert EmbeddingSet.load(emb).vectors.shape == (16, 500)
    assert not list(emb.parent.glob(".emb.*"))  # nothing of the failed replacement is left beside it


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove-json", "remove-vectors"])
def test_damaged_embeddings_are_detected_not_used(folder_gallery, tmp_path, damage):
    _, emb, _ = folder_gallery
    vectors = emb / VECTORS
    if damage == "flip":
        raw = bytearray(vectors.read_bytes())
        raw[-3] ^= 0xFF
        vectors.write_bytes(bytes(raw))
    elif damage == "truncate":
        vectors.write_bytes(vectors.read_bytes()[:1000])
    elif damage == "remove-json":
        (emb / "embedding.json").unlink()
    else:
        vectors.unlink()
    expected = {"flip": "does not match the digest", "truncate": "does not match the digest",
                "remove-json": "not an embeddings directory", "remove-vectors": "is missing"}[damage]
    assert_user_error(invoke("index", emb, "--out", tmp_path / "idx2", "-q"), expected)
    assert not (tmp_path / "idx2").exists()


def test_embed_bad_inputs_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert_user_error(invoke("embed", empty, "--out", tmp_path / "e", "-q"), str(empty))
    assert_user_error(invoke("embed", "sklearn-digits", "--backbone", "lenet", "--no-pretrained", "--pca", 5000,
                             "--out", tmp_path / "e", "-q"), "--pca 5000")
    assert_user_error(invoke("embed", "sklearn-digits", "--backbone", "nosuchnet", "--out", tmp_path / "e", "-q"),
                      "nosuchnet")
    assert not (tmp_path / "e").exists()
    assert_user_error(invoke("index", tmp_path / "nowhere", "--out", tmp_path / "i", "-q"), "not found")


def test_pca_whitening_is_stored_and_applied_to_queries(tmp_path, lenet_weights):
    source = BackboneSource("lenet", weights=str(lenet_weights))
    raw = embed_data("sklearn-digits", source, progress=False)
    whitened = embed_data("sklearn-digits", source, pca=32, whiten=True, progress=False)
    assert whitened.vectors.shape == (1797, 32)
    np.testing.assert_allclose(np.linalg.norm(whitened.vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(whitened.projection.apply(raw.vectors), whitened.vectors, atol=1e-5)
    write_embeddings(whitened, tmp_path / "emb")
    loaded = EmbeddingSet.load(tmp_path / "emb")
    np.testing.assert_array_equal(loaded.projection.components, whitened.projection.components)
    from transferlab.unsupervised import write_index

    write_index(tmp_path / "emb", tmp_path / "idx")
    index = SearchIndex(tmp_path / "idx")
    hits = index.search(raw.vectors[:5], k=1)  # raw queries go through the stored projection
    assert [hit[0].item for hit in hits] == whitened.items[:5]
    assert all(hit[0].score == pytest.approx(1.0, abs=1e-4) for hit in hits)
    # whitening: before the final normalisation, the kept directions are uncorrelated with unit variance
    projection = Projection.fit(raw.vectors, components=8, whiten=True)
    z = (l2_normalise(raw.vectors) - projection.mean) @ projection.components.T / projection.scale
    np.testing.assert_allclose(np.cov(z.T), np.eye(8), atol=1e-3)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_report_recall_against_exact_search(kind):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 32))
    vectors = (centers[rng.integers(0, 20, 4000)] + 0.3 * rng.normal(size=(4000, 32))).astype(np.float32)
    index, params = build_index(vectors, kind)
    assert index.ntotal == 4000 and params
    recall = exact_recall(index, vectors)
    assert 0.8 <= recall <= 1.0
    exact, _ = build_index(vectors, "flat")
    assert exact_recall(exact, vectors) == 1.0


def test_index_kind_and_text_gallery(tmp_path):
    texts = tmp_path / "reviews.csv"
    rows = ["a wonderful film, I loved it", "great acting and a moving story", "dull and far too long",
            "the worst movie this year", "a delightful surprise", "boring, I left early"]
    labels = ["pos", "pos", "neg", "neg", "pos", "neg"]
    texts.write_text("text,label\n" + "\n".join(f'"{t}",{lab}' for t, lab in zip(rows, labels)) + "\n")
    emb, idx = tmp_path / "emb", tmp_path / "idx"
    assert invoke("embed", texts, "--out", emb, "-q").exit_code == 0
    assert_user_error(invoke("index", emb, "--out", idx, "--kind", "hnws", "-q"), "hnws", "hnsw")
    assert invoke("index", emb, "--out", idx, "-q").exit_code == 0
    queries = tmp_path / "queries.csv"
    queries.write_text("text\nI loved this wonderful film\n")
    result = invoke("search", idx, queries, "--k", 1, "--format", "json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["item"] == rows[0]
    image = make_folder(tmp_path / "images", per_class=1)
    assert_user_error(invoke("search", idx, image, "-q"), "text embeddings", "image")


def test_a_run_directory_embeds_with_its_fine_tuned_backbone(tmp_path):
    from test_cli import fit_scratch_lenet

    from transferlab.api import load
    from transferlab.embeddings import backbone_fingerprint

    data = make_folder(tmp_path / "photos", per_class=4)
    run = tmp_path / "run"
    assert fit_scratch_lenet(data, run, epochs=1).exit_code == 0
    assert invoke("embed", data, "--backbone", run, "--out", tmp_path / "emb", "-q").exit_code == 0
    info = EmbeddingSet.load(tmp_path / "emb").info
    assert info["backbone_source"]["name"] == str(run.resolve())
    assert info["weights_digest"] == backbone_fingerprint(load(run).backbone)
    assert_user_error(invoke("embed", data, "--backbone", run, "--image-size", 64, "--out", tmp_path / "e2", "-q"),
                      "do not apply to a run directory")
    assert invoke("index", tmp_path / "emb", "--out", tmp_path / "idx", "-q").exit_code == 0
    result = invoke("search", tmp_path / "idx", data / "dogs" / "1.png", "--k", 1, "--format", "json", "-q")
    assert json.loads(result.stdout)[0]["item"] == str(data / "dogs" / "1.png")


def test_whitening_on_few_embeddings_per_direction_warns(caplog):
    rng = np.random.default_rng(0)
    with caplog.at_level("WARNING", logger="transferlab"):
        Projection.fit(rng.normal(size=(300, 20)).astype(np.float32), components=10, whiten=True)
    assert not caplog.records
    with caplog.at_level("WARNING", logger="transferlab"):
        Projection.fit(rng.normal(size=(50, 20)).astype(np.float32), components=10, whiten=True)
        Projection.fit(rng.normal(size=(50, 20)).astype(np.float32), components=10, whiten=False)
    assert len(caplog.records) == 1 and "fitted on 50 embeddings" in caplog.records[0].getMessage()
