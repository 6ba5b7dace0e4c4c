"""The ``onnx`` feature engine: the same features as PyTorch, cached apart from them, exported once, refused in
one line where it does not apply."""

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from transferlab.backbones import create_backbone  # noqa: E402
from transferlab.data import load_data, load_splits  # noqa: E402
from transferlab.embeddings import extract_features  # noqa: E402
from transferlab.engine import onnx_features  # noqa: E402
from transferlab.errors import TransferlabError  # noqa: E402
from transferlab.fileio import cache_root  # noqa: E402


@pytest.fixture(scope="module")
def lenet():
    return create_backbone("lenet").eval()


@pytest.fixture(scope="module")
def digits():
    return load_data("sklearn-digits", split_preference=("all",)).subset(np.arange(21))


def _min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b).min().item()


def test_onnx_features_match_torch_on_real_photos(shared_data):
    backbone = create_backbone("efficientnet_lite0", image_size=96)
    photos = load_splits(str(shared_data / "hymenoptera"))["val"].subset(np.arange(0, 153, 10))
    torch_features = extract_features(backbone, photos, precision="fp32", use_cache=False, progress=False)
    onnx = extract_features(backbone, photos, precision="fp32", engine="onnx", use_cache=False, progress=False)
    assert onnx.shape == torch_features.shape == (len(photos), backbone.num_features)
    assert _min_cosine(onnx, torch_features) >= onnx_features.MIN_COSINE


def test_onnx_features_are_cached_apart_and_exported_once(lenet, digits, monkeypatch):
    torch_features = extract_features(lenet, digits, precision="fp32", progress=False)
    onnx = extract_features(lenet, digits, precision="fp32", engine="onnx", progress=False)
    assert _min_cosine(onnx, torch_features) >= onnx_features.MIN_COSINE
    keys = sorted(path.name for path in (cache_root() / "features").iterdir())
    assert len(keys) == 2 and keys[1] == f"{keys[0]}-onnx"  # torch's key unchanged, onnx's beside it
    assert len(list((cache_root() / "onnx").glob("*.onnx"))) == 1

    def no_export(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_features, "_export_checked", no_export)
    more = load_data("sklearn-digits", split_preference=("all",)).subset(np.arange(30))
    again = extract_features(lenet, more, precision="fp32", engine="onnx", progress=False)
    torch.testing.assert_close(again[:21], onnx)  # the first 21 from the cache, the rest from the kept file


def test_a_damaged_cached_export_is_detected_and_exported_again(lenet, digits, caplog):
    first = extract_features(lenet, digits, precision="fp32", engine="onnx", use_cache=False, progress=False)
    (kept,) = (cache_root() / "onnx").glob("*.onnx")
    kept.write_bytes(kept.read_bytes()[: kept.stat().st_size // 2])  # a half-written or damaged file
    again = extract_features(lenet, digits, precision="fp32", engine="onnx", use_cache=False, progress=False)
    assert "does not load or run" in caplog.text and "exporting again" in caplog.text
    torch.testing.assert_close(again, first)
    caplog.clear()
    extract_features(lenet, digits, precision="fp32", engine="onnx", use_cache=False, progress=False)
    assert "exporting again" not in caplog.text  # the new export is whole and kept


def test_an_export_that_disagrees_with_torch_is_refused_and_not_kept(lenet, digits, monkeypatch):
    monkeypatch.setattr(onnx_features, "MIN_COSINE", 1.5)
    with pytest.raises(TransferlabError, match="other features than PyTorch"):
        extract_features(lenet, digits, precision="fp32", engine="onnx", use_cache=False, progress=False)
    assert not list((cache_root() / "onnx").glob("*.onnx"))


@pytest.mark.parametrize(("engine", "precision", "device", "message"), [
    ("tensorrt", "fp32", "cpu", "engine must be one of auto, torch, onnx, got 'tensorrt'"),
    ("onnx", "bf16", "cpu", "engine onnx computes in fp32; precision is bf16"),
    ("onnx", "fp32", "cuda", "engine onnx runs on the CPU"),
])
def test_onnx_engine_refuses_what_it_does_not_run(lenet, digits, engine, precision, device, message):
    with pytest.raises(TransferlabError, match=message):
        extract_features(lenet, digits, precision=precision, device=torch.device(device), engine=engine,
                         progress=False)


def test_onnx_engine_refuses_a_backbone_without_an_onnx_form(lenet, digits, monkeypatch):
    monkeypatch.setattr(type(lenet), "onnx_refusal", "its front end has no ONNX form")
    with pytest.raises(TransferlabError, match="lenet backbone cannot be exported to ONNX: its front end"):
        extract_features(lenet, digits, precision="fp32", engine="onnx", progress=False)


def test_features_method_takes_the_engine(tmp_path):
    from transferlab.api import build_config, fit

    config = build_config(overrides={"train": "sklearn-digits", "method": "features", "backbone": "lenet",
                                     "engine": "onnx", "precision": "fp32", "labels_per_class": 5,
                                     "out": tmp_path / "run"})
    fit(config, progress=False)
    assert any(path.name.endswith("-fp32-onnx") for path in (cache_root() / "features").iterdir())


def test_an_unwritable_cache_keeps_the_export_elsewhere_for_the_process(lenet, digits, monkeypatch, caplog):
    writable = onnx_features.atomic_path

    def cache_unwritable(path):
        if str(path).startswith(str(cache_root())):
            raise PermissionError(13, "Permission denied", str(path))
        return writable(path)

    monkeypatch.setattr(onnx_features, "atomic_path", cache_unwritable)
    features = extract_features(lenet, digits, precision="fp32", engine="onnx", use_cache=False, progress=False)
    assert features.shape == (len(digits), lenet.num_features) and "cannot keep the export in the cache" in caplog.text
    caplog.clear()
    extract_features(lenet, digits, precision="fp32", engine="onnx", use_cache=False, progress=False)
    assert "cannot keep" not in caplog.text  # the process reuses its own export


def test_onnx_engine_refuses_torchrun_and_other_methods():
    from transferlab.api import build_config

    with pytest.raises(TransferlabError, match="engine onnx embeds in one process; this run has 2 torchrun"):
        onnx_features.require_feature_engine("onnx", create_backbone("lenet"), "fp32", torch.device("cpu"), 2)
    with pytest.raises(TransferlabError, match="engine"):
        build_config(overrides={"method": "finetune", "train": "x", "engine": "onnx"})


def test_embed_refuses_an_unknown_engine_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from transferlab.cli import app

    result = CliRunner().invoke(app, ["embed", "sklearn-digits", "--backbone", "lenet", "--engine", "tensorrt",
                                      "--out", str(tmp_path / "emb")])
    assert result.exit_code != 0 and "engine must be one of auto, torch, onnx, got 'tensorrt'" in result.output
    assert not (tmp_path / "emb").exists()


@pytest.mark.parametrize("engine", ["onnx", "auto"])
def test_a_features_run_scores_its_own_splits_with_its_engine(shared_data, tmp_path, engine, monkeypatch):
    from transferlab.api import fit

    monkeypatch.setattr(onnx_features, "AUTO_ONNX_MIN_EXAMPLES", 30)  # 50 + 2,007 images of 28 px: worth 32

    usps = shared_data / "usps"
    result = fit({"method": "features", "backbone": "lenet", "image_size": 28, "train": f"usps:{usps}@train",
                  "labels_per_class": 5, "test": f"usps:{usps}@test", "precision": "fp32", "engine": engine,
                  "out": str(tmp_path / "run")}, progress=False)
    assert result.metrics["engine"] == "onnx" and "test" in result.metrics
    keys = [path.name for path in (cache_root() / "features").iterdir()]
    assert keys and all(key.endswith("-onnx") for key in keys)  # train and test embedded by onnx, none by torch


LENET_IMAGES_WORTH_ENOUGH = onnx_features.AUTO_ONNX_MIN_EXAMPLES * 64  # 28 px: 1/64 of the pixels of 224 px


@pytest.mark.parametrize(("precision", "examples", "processes", "expected"), [
    ("fp32", LENET_IMAGES_WORTH_ENOUGH, 1, "onnx"),
    ("bf16", LENET_IMAGES_WORTH_ENOUGH, 1, "torch"),  # bf16 torch is as fast as onnxruntime's fp32
    ("fp32", LENET_IMAGES_WORTH_ENOUGH - 1, 1, "torch"),  # too few pixels to pay for the export
    ("fp32", LENET_IMAGES_WORTH_ENOUGH, 2, "torch"),  # torchrun: onnx embeds in one process
])
def test_engine_auto_picks_onnx_only_where_it_is_faster(lenet, precision, examples, processes, expected):
    chosen = onnx_features.choose_feature_engine("auto", lenet, precision, torch.device("cpu"), processes, examples)
    assert chosen == expected


def test_engine_auto_weighs_images_by_their_pixels():
    small = create_backbone("efficientnet_lite0", image_size=112, pretrained=False)
    cpu = torch.device("cpu")
    enough = onnx_features.AUTO_ONNX_MIN_EXAMPLES
    assert onnx_features.choose_feature_engine("auto", small, "fp32", cpu, 1, enough) == "torch"
    assert onnx_features.choose_feature_engine("auto", small, "fp32", cpu, 1, 4 * enough) == "onnx"


def test_engine_auto_keeps_what_onnx_does_not_speed_up_on_torch(lenet, monkeypatch):
    many = LENET_IMAGES_WORTH_ENOUGH
    cpu = torch.device("cpu")
    assert onnx_features.choose_feature_engine("auto", lenet, "fp32", torch.device("cuda"), 1, many) == "torch"
    text = create_backbone("sentence-transformers/all-MiniLM-L6-v2")  # text: no gain measured
    assert onnx_features.choose_feature_engine("auto", text, "fp32", cpu, 1, 10**6) == "torch"
    monkeypatch.setattr(type(lenet), "onnx_refusal", "its front end has no ONNX form")
    assert onnx_features.choose_feature_engine("auto", lenet, "fp32", cpu, 1, many) == "torch"
    monkeypatch.undo()
    monkeypatch.setattr(onnx_features.importlib.util, "find_spec", lambda name: None)  # onnxruntime not installed
    assert onnx_features.choose_feature_engine("auto", lenet, "fp32", cpu, 1, many) == "torch"
