"""torchvision's detectors on any backbone's feature pyramid: the necks and the four detectors by name.

A backbone's `transferlab.backbones.Backbone.feature_pyramid` gives maps at strides 8, 16 and 32 (C3-C5). A *neck*
turns them into the maps a detector reads, and one of torchvision's detectors runs on those:

- ``fasterrcnn``: Faster R-CNN (Ren et al., NeurIPS 2015) on a feature pyramid network (Lin et al., CVPR 2017)
  with a max-pooled extra level (P3-P6); one anchor size per level, 4x its stride (32-256 px), ratios 1:2, 1:1,
  2:1; RoI-align over P3-P5; a two-layer box head of 512 features (torchvision's has 1024); fewer proposals
  at test time (500) and RoIs sampled per training image (256) than torchvision's defaults, for CPUs.
- ``fcos``: FCOS (Tian et al., ICCV 2019), anchor-free, on an FPN with P6 and P7 computed from P5 (P3-P7). Its box
  distances go through a softplus before torchvision's ReLU (``relu(softplus(x)) = softplus(x)``): a distance
  that a plain ReLU sends to zero at every object location gets no gradient again, and such dead distances (often
  from the very first steps) left every box of a run degenerate, mAP 0 (FCOS' own issue tracker knows it as
  "reg_loss always 1.0"; its authors' fix is ``exp``, softplus is the same without the overflow).
- ``retinanet``: RetinaNet (Lin et al., ICCV 2017), focal loss, 9 anchors a location (3 scales x 3 ratios, sizes
  4x-6.3x the stride), on the same P3-P7 FPN with GroupNorm in its heads.
- ``ssdlite``: SSDlite (Sandler et al., CVPR 2018; torchvision's ``ssdlite320_mobilenet_v3_large``), without an
  FPN: the stride-16 and stride-32 maps and four extra blocks (1x1 conv, 3x3 depthwise stride 2, 1x1 conv) give six
  maps for its default boxes; it reads a fixed ``min_size`` x ``min_size`` input.

Every detector normalises with the backbone's own mean and std and resizes inside torchvision's
``GeneralizedRCNNTransform`` (shorter side ``min_size``, longer side at most ``max_size``). Faster R-CNN and SSDlite
reserve class 0 for the background: they are built with one class more, and `build_detector` says by how much
labels shift going in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import Conv2dNormActivation

from transferlab.backbones.base import Backbone
from transferlab.errors import TransferlabError, suggest

__all__ = ["DETECTORS", "DetectorSettings", "build_detector"]

# the width of Faster R-CNN's two-layer box head (torchvision: 1024; half of it for CPUs: 2.5M parameters fewer at 128
# FPN channels)
FASTER_RCNN_BOX_FEATURES = 512
# SSDlite's extra blocks (torchvision's widths for MobileNetV3) and its BatchNorm settings
SSDLITE_EXTRA_WIDTHS = (512, 256, 256, 128)
SSDLITE_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)


@dataclass(frozen=True)
class DetectorSettings:
    """How a detector is built (saved in ``model.json``).

    Attributes:
        detector: ``fasterrcnn``, ``fcos``, ``retinanet`` or ``ssdlite``.
        min_size: shorter image side after resizing (ssdlite: the square input side).
        max_size: longer image side at most.
        fpn_channels: channels of the FPN maps and the heads (a multiple of 32: the heads' GroupNorm).
        score_threshold: predictions below this score are left out of `predict`'s output (not of evaluation).
    """

    detector: str = "fasterrcnn"
    min_size: int = 384
    max_size: int = 640
    fpn_channels: int = 128
    score_threshold: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)


class PyramidFeatures(nn.Module):
    """What a torchvision detector calls its backbone: images -> ``OrderedDict`` of the neck's maps, float32.

    It holds the backbone and the neck without registering them: they belong to the model around the detector, so
    every parameter has one name (``backbone.*``, ``neck.*``) and each module moves, saves and freezes once.

    ``autocast_dtype``: the reduced precision (bf16) the backbone and neck run in, or ``None`` for float32; set by
    the model before each call, since the detector's heads and box decoding run in float32 (a bf16 box coordinate
    of a 600 px image is off by up to 2 px, enough to lose matches at IoU 0.75).
    """

    def __init__(self, backbone: Backbone, neck: nn.Module):
        super().__init__()
        self._parts = (backbone, neck)
        self.out_channels = neck.out_channels
        self.autocast_dtype: torch.dtype | None = None

    def forward(self, images: torch.Tensor) -> OrderedDict:
        backbone, neck = self._parts
        # channels-last: the detector's transform batches images in the default layout, in which CPU convolutions
        # (EfficientNet's depthwise ones above all) run many times slower
        images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            maps = neck(backbone.feature_pyramid(images))
        return OrderedDict((name, value.float()) for name, value in maps.items())


class FPNNeck(nn.Module):
    """torchvision's `FeaturePyramidNetwork` over a list of maps (C3-C5), with an extra-levels block."""

    def __init__(self, in_channels: list[int], out_channels: int, extra_blocks: nn.Module):
        super().__init__()
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    def forward(self, maps: list[torch.Tensor]) -> OrderedDict:
        return self.fpn(OrderedDict((str(index), value) for index, value in enumerate(maps)))


class SSDLiteNeck(nn.Module):
    """The last two pyramid maps (strides 16, 32) and four extra blocks that halve the resolution each."""

    def __init__(self, in_channels: list[int]):
        super().__init__()
        widths = [in_channels[-1], *SSDLITE_EXTRA_WIDTHS]
        self.extra = nn.ModuleList(_extra_block(widths[i], widths[i + 1]) for i in range(len(SSDLITE_EXTRA_WIDTHS)))
        self.out_channels = [*in_channels[-2:], *SSDLITE_EXTRA_WIDTHS]

    def forward(self, maps: list[torch.Tensor]) -> OrderedDict:
        outputs, x = list(maps[-2:]), maps[-1]
        for block in self.extra:
            x = block(x)
            outputs.append(x)
        return OrderedDict((str(index), value) for index, value in enumerate(outputs))


def _extra_block(in_channels: int, out_channels: int) -> nn.Sequential:
    middle = out_channels // 2
    layer = partial(Conv2dNormActivation, norm_layer=SSDLITE_NORM, activation_layer=nn.ReLU6)
    return nn.Sequential(layer(in_channels, middle, 1), layer(middle, middle, 3, stride=2, groups=middle),
                         layer(middle, out_channels, 1))


def _normalisation(backbone: Backbone) -> dict:
    return {"image_mean": list(backbone.preprocess.mean), "image_std": list(backbone.preprocess.std)}


def _sizes(settings: DetectorSettings) -> dict:
    return {"min_size": settings.min_size, "max_size": settings.max_size}


def _faster_rcnn(backbone: Backbone, num_classes: int, settings: DetectorSettings) -> tuple[nn.Module, nn.Module]:
    neck = FPNNeck(backbone.pyramid_channels, settings.fpn_channels, LastLevelMaxPool())
    strides = [*backbone.pyramid_strides, backbone.pyramid_strides[-1] * 2]
    anchors = AnchorGenerator(tuple((4 * stride,) for stride in strides), ((0.5, 1.0, 2.0),) * len(strides))
    pooled = MultiScaleRoIAlign([str(index) for index in range(len(backbone.pyramid_strides))], 7, 2)
    box_head = TwoMLPHead(settings.fpn_channels * 7 * 7, FASTER_RCNN_BOX_FEATURES)
    detector = FasterRCNN(PyramidFeatures(backbone, neck), rpn_anchor_generator=anchors, box_roi_pool=pooled,
                          box_head=box_head, box_predictor=FastRCNNPredictor(FASTER_RCNN_BOX_FEATURES, num_classes + 1),
                          rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=500, box_batch_size_per_image=256,
                          **_sizes(settings), **_normalisation(backbone))
    return neck, detector


def _p3_to_p7(backbone: Backbone, settings: DetectorSettings) -> tuple[FPNNeck, list[int]]:
    neck = FPNNeck(backbone.pyramid_channels, settings.fpn_channels,
                   LastLevelP6P7(settings.fpn_channels, settings.fpn_channels))
    last = backbone.pyramid_strides[-1]
    return neck, [*backbone.pyramid_strides, last * 2, last * 4]


def _fcos(backbone: Backbone, num_classes: int, settings: DetectorSettings) -> tuple[nn.Module, nn.Module]:
    neck, strides = _p3_to_p7(backbone, settings)
    anchors = AnchorGenerator(tuple((stride,) for stride in strides), ((1.0,),) * len(strides))
    detector = FCOS(PyramidFeatures(backbone, neck), num_classes, anchor_generator=anchors, score_thresh=0.05,
                    **_sizes(settings), **_normalisation(backbone))
    regression = detector.head.regression_head
    regression.bbox_reg = nn.Sequential(regression.bbox_reg, nn.Softplus())
    return neck, detector


def _retinanet(backbone: Backbone, num_classes: int, settings: DetectorSettings) -> tuple[nn.Module, nn.Module]:
    neck, strides = _p3_to_p7(backbone, settings)
    sizes = tuple(tuple(round(4 * stride * 2 ** (step / 3)) for step in range(3)) for stride in strides)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))
    head = RetinaNetHead(settings.fpn_channels, anchors.num_anchors_per_location()[0], num_classes,
                         norm_layer=partial(nn.GroupNorm, 32))
    detector = RetinaNet(PyramidFeatures(backbone, neck), num_classes, anchor_generator=anchors, head=head,
                         **_sizes(settings), **_normalisation(backbone))
    return neck, detector


def _ssdlite(backbone: Backbone, num_classes: int, settings: DetectorSettings) -> tuple[nn.Module, nn.Module]:
    neck = SSDLiteNeck(backbone.pyramid_channels)
    anchors = DefaultBoxGenerator([[2, 3]] * len(neck.out_channels), min_ratio=0.2, max_ratio=0.95)
    head = SSDLiteHead(neck.out_channels, anchors.num_anchors_per_location(), num_classes + 1, SSDLITE_NORM)
    detector = SSD(PyramidFeatures(backbone, neck), anchors, (settings.min_size, settings.min_size), num_classes + 1,
                   head=head, score_thresh=0.001, detections_per_img=100, topk_candidates=300, nms_thresh=0.55,
                   **_normalisation(backbone))
    return neck, detector


# name -> (builder, label shift: 1 where class 0 is the background)
DETECTORS: dict[str, tuple[Callable[[Backbone, int, DetectorSettings], tuple[nn.Module, nn.Module]], int]] = {
    "fasterrcnn": (_faster_rcnn, 1),
    "fcos": (_fcos, 0),
    "retinanet": (_retinanet, 0),
    "ssdlite": (_ssdlite, 1),
}


def build_detector(backbone: Backbone, num_classes: int, settings: DetectorSettings
                   ) -> tuple[nn.Module, nn.Module, int]:
    """``(neck, detector, label_shift)``: the neck over ``backbone``'s pyramid, the torchvision detector for
    ``num_classes`` classes (not counting a background), and what to add to 0-based class indices for it.

    Raises:
        TransferlabError: an unknown detector, a backbone without a feature pyramid or not reading RGB images, or
            ``fpn_channels`` that GroupNorm cannot split into 32 groups.
    """
    if settings.detector not in DETECTORS:
        raise TransferlabError(f"unknown detector {settings.detector!r}{suggest(settings.detector, DETECTORS)}; "
                               f"choose one of {', '.join(DETECTORS)}")
    _ = backbone.pyramid_channels  # no pyramid: one line naming the backbone
    name = backbone.spec.get("name")
    if backbone.modality != "image" or backbone.preprocess.channels != 3:
        what = f"{backbone.preprocess.channels}-channel images" if backbone.modality == "image" else backbone.modality
        raise TransferlabError(f"detection reads RGB images, but backbone {name!r} reads {what}")
    if settings.fpn_channels % 32:
        raise TransferlabError(f"fpn_channels must be a multiple of 32 (the heads' GroupNorm has 32 groups), got "
                               f"{settings.fpn_channels}")
    build, shift = DETECTORS[settings.detector]
    neck, detector = build(backbone, num_classes, settings)
    return neck, detector, shift
