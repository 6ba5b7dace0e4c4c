"""Backbones from torchvision's classification models (``torchvision:ARCH``), e.g. the seed recipe's VGG16 body."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from transferlab.backbones.base import Backbone, FeatureMap, PreprocessConfig, pyramid_positions
from transferlab.errors import TransferlabError, suggest

__all__ = ["TorchvisionBackbone", "create_torchvision_backbone", "group_by_children", "torchvision_archs"]

# Archs whose classifier is an MLP over the flattened pooled map (fc6/fc7...): their body is `features` alone,
# like Keras' include_top=False.
MLP_HEAD_ARCHS = ("vgg", "alexnet")
IMAGENET_PREPROCESS = PreprocessConfig(
    input_size=(3, 224, 224),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    interpolation="bilinear",
    crop_pct=0.875,
)


class TorchvisionBackbone(Backbone):
    """A torchvision classification model with its classifier removed.

    VGG and AlexNet keep only ``features``, then a global average pool (``pool="avg"``, 512 features for VGG16)
    or a flatten of the final map (``pool="flatten"``, 512x7x7 = 25088 at 224 px, like Keras
    ``include_top=False`` + ``Flatten``). Other archs have their last ``nn.Linear`` replaced by ``nn.Identity``;
    ``pool="flatten"`` replaces their ``avgpool`` module by ``nn.Identity`` where the arch allows it.

    ``forward_features`` gives the final ``(B, C, H, W)`` map: VGG/AlexNet's ``features``; for other archs the
    children before the ``avgpool`` module (or ``features`` when the arch pools it functionally, as MobileNetV2
    does), run in order, and ``pool_features`` pools it and applies the children after the pooling (ConvNeXt's
    norm, MobileNetV3's pre-logits layer). torchvision writes each arch's ``forward`` by hand, so this split is
    checked once against ``model(x)`` on a dummy input; an arch where it does not hold (e.g. DenseNet, which
    applies a ReLU between ``features`` and pooling, or the vision transformers) gives its pooled vector as one
    token, ``(B, 1, num_features)``.

    Args:
        model: the torchvision model, already stripped by `create_torchvision_backbone`.
        name: the registry name (``torchvision:ARCH``), recorded in ``spec``.
        pool: ``"avg"`` or ``"flatten"``.
        preprocess: how images become inputs.
        weights_source: where the weights came from, recorded in ``spec``.
    """

    def __init__(self, model: nn.Module, *, name: str, pool: str, preprocess: PreprocessConfig, weights_source: str):
        super().__init__()
        self.model = model
        self.pool = pool
        self.preprocess = preprocess
        self.stages = name.split(":", 1)[-1].startswith(MLP_HEAD_ARCHS)
        self._split = None if self.stages else _split_at_pooling(model)
        if self._split is not None and not self._split_holds():
            self._split = None
        self.num_features = self.infer_num_features(f"backbone '{name}' (pool='{pool}')")
        self.spec = self.describe(name, pool, weights_source)

    def forward_features(self, x: torch.Tensor) -> FeatureMap:
        if self.stages:
            return FeatureMap(self.model.features(x))
        if self._split is None:
            return FeatureMap(self.model(x).flatten(1).unsqueeze(1))  # (B, 1, D): the pooled vector as one token
        body, _ = self._split
        for child in body:
            x = getattr(self.model, child)(x)
        return FeatureMap(x)

    def pool_features(self, features: FeatureMap) -> torch.Tensor:
        pooled = super().pool_features(features)
        if self._split is None or features.values.dim() != 4:
            return pooled
        _, tail = self._split
        x = pooled if self.pool == "flatten" else pooled[:, :, None, None]  # the (B, C, 1, 1) avgpool gives
        if not any(isinstance(module, nn.Flatten) for name in tail for module in getattr(self.model, name).modules()):
            x = x.flatten(1)  # torchvision flattens between pooling and classifier unless the classifier does
        for child in tail:
            x = getattr(self.model, child)(x)
        return x.flatten(1)

    def _split_holds(self) -> bool:
        """Whether body -> pool -> tail gives ``model(x)`` on a dummy input (eval mode, no gradients)."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                x = torch.randn(2, *self.preprocess.input_size, generator=torch.Generator().manual_seed(0))
                return torch.allclose(self.pool_features(self.forward_features(x)), self.model(x).flatten(1),
                                      rtol=1e-4, atol=1e-5)
        except RuntimeError:
            return False
        finally:
            self.train(was_training)

    def feature_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The last outputs at strides 8, 16 and 32 of the network's feature layers run in order (found once on a
        dummy input); layers after the last of them do not run."""
        positions = [position for position, _, _ in self._pyramid]
        maps = []
        for position, layer in enumerate(self._layers()[: positions[-1] + 1]):
            x = layer(x)
            if position in positions:
                maps.append(x)
        return maps

    def _layers(self) -> list[nn.Module]:
        """The feature layers in the order ``forward_features`` runs them, sequential children opened one level
        (``features.0``, ..., ResNet's blocks, RegNet's stages); empty when they do not run one after another (e.g. a
        vision transformer)."""
        if self.stages:
            return list(self.model.features)
        body = self._split[0] if self._split is not None else ["features"] * isinstance(
            getattr(self.model, "features", None), nn.Sequential)
        layers = []
        for name in body:
            child = getattr(self.model, name)
            layers += list(child) if isinstance(child, nn.Sequential) else [child]
        return layers

    @property
    def _pyramid(self) -> list[tuple[int, int, int]]:
        """``(layer position, stride, channels)`` of each pyramid map, measured once on a dummy input."""
        if not hasattr(self, "_pyramid_levels"):
            self._pyramid_levels = self._measure_pyramid()
        if not self._pyramid_levels:
            raise self._no_pyramid()
        return self._pyramid_levels

    def _measure_pyramid(self) -> list[tuple[int, int, int]]:
        layers = self._layers()
        if not layers:
            return []
        size = self.preprocess.input_size[1]
        x = torch.zeros(1, self.preprocess.channels, size, size, device=next(self.parameters()).device)
        shapes = []
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for layer in layers:
                    x = layer(x)
                    shapes.append(tuple(x.shape) if x.dim() == 4 else None)
        except RuntimeError:
            return []
        finally:
            self.train(was_training)
        strides = [round(size / shape[-1]) if shape else 0 for shape in shapes]
        return [(position, strides[position], shapes[position][1]) for position in pyramid_positions(strides)]

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        """VGG/AlexNet: ``block1`` ... ``blockN`` (conv stages ending at each max-pool, Keras' names); others: one
        group per top-level child, ``features`` split into ``features.0``, ``features.1``, ..."""
        if self.stages:
            return _stage_groups(self.model.features, prefix="model.features.")
        return group_by_children(self.model, prefix="model.")


def torchvision_archs() -> list[str]:
    """Names of torchvision's image classification models."""
    return torchvision.models.list_models(module=torchvision.models)


def create_torchvision_backbone(
    arch: str, *, name: str, pretrained: bool, pool: str, image_size: int | None
) -> TorchvisionBackbone:
    """Build ``torchvision.models.get_model(arch)`` as a backbone; pretrained uses the arch's DEFAULT weights.

    Raises:
        TransferlabError: for an unknown arch, a failed download (offline), or an arch whose classifier or
            pooling this function does not know how to remove.
    """
    archs = torchvision_archs()
    if arch not in archs:
        raise TransferlabError(
            f"unknown torchvision model '{arch}'" + suggest(arch, archs) + "; see torchvision.models.list_models()"
        )
    weights = torchvision.models.get_model_weights(arch).DEFAULT if pretrained else None
    try:
        model = torchvision.models.get_model(arch, weights=weights)
    except OSError as err:  # urllib's URLError when offline
        raise TransferlabError(
            f"could not download the pretrained weights of torchvision:{arch} ({err}). Pass --weights PATH with a "
            "local torchvision state dict file, use pretrained=False, or use the offline backbone 'efficientnet_lite0'"
        ) from err
    _remove_classifier(model, arch, pool)
    preprocess = IMAGENET_PREPROCESS.with_image_size(image_size) if image_size else IMAGENET_PREPROCESS
    source = f"torchvision:{arch}.{weights.name}" if weights is not None else "random"
    return TorchvisionBackbone(model, name=name, pool=pool, preprocess=preprocess, weights_source=source)


def group_by_children(module: nn.Module, prefix: str = "", split: tuple[str, ...] = ("features",)) -> list:
    """One parameter group per top-level child (in registration order, which torchvision keeps input to output).

    Children named in ``split`` get one group per sub-child (``features.0``, ...); parameters held directly by
    ``module`` form a first group ``"root"``.
    """
    groups = []
    own = [f"{prefix}{name}" for name, _ in module.named_parameters(recurse=False)]
    if own:
        groups.append(("root", own))
    for child_name, child in module.named_children():
        parts = list(child.named_children()) if child_name in split else []
        units = [(f"{child_name}.{sub}", sub_child) for sub, sub_child in parts] or [(child_name, child)]
        for unit_name, unit in units:
            params = [f"{prefix}{unit_name}.{name}" for name, _ in unit.named_parameters()]
            if params:
                groups.append((unit_name, params))
    return groups


def _split_at_pooling(model: nn.Module) -> tuple[list[str], list[str]] | None:
    """``(body, tail)``: names of the top-level children before and after the global pooling, or ``None``.

    The pooling is the ``avgpool`` child; an arch without one but with ``features`` followed by ``classifier``
    pools functionally between them (MobileNetV2, SqueezeNet-style). Whether the split really reproduces the
    arch's ``forward`` is checked by the caller.
    """
    names = [name for name, _ in model.named_children()]
    if "avgpool" in names:
        index = names.index("avgpool")
        return names[:index], names[index + 1:]
    if names[:2] == ["features", "classifier"] and len(names) == 2:
        return ["features"], ["classifier"]
    return None


def _stage_groups(features: nn.Module, prefix: str) -> list[tuple[str, list[str]]]:
    groups, current = [], []
    for index, layer in features.named_children():
        current += [f"{prefix}{index}.{name}" for name, _ in layer.named_parameters()]
        if isinstance(layer, nn.MaxPool2d) and current:
            groups.append((f"block{len(groups) + 1}", current))
            current = []
    if current:
        groups.append((f"block{len(groups) + 1}", current))
    return groups


def _remove_classifier(model: nn.Module, arch: str, pool: str) -> None:
    if arch.startswith(MLP_HEAD_ARCHS):
        model.classifier = nn.Identity()
        model.avgpool = nn.Identity() if pool == "flatten" else nn.AdaptiveAvgPool2d(1)
        return
    if not _replace_last_linear(model):
        raise TransferlabError(
            f"transferlab cannot find the classifier of torchvision:{arch}; use another arch or a timm model"
        )
    if pool == "flatten":
        if not isinstance(getattr(model, "avgpool", None), nn.Module):
            raise TransferlabError(
                f"pool='flatten' is not supported for torchvision:{arch} (no avgpool module); use pool='avg'"
            )
        model.avgpool = nn.Identity()


def _replace_last_linear(model: nn.Module) -> bool:
    for attr in ("fc", "classifier", "head", "heads"):
        module = getattr(model, attr, None)
        if isinstance(module, nn.Linear):
            setattr(model, attr, nn.Identity())
            return True
        if isinstance(module, nn.Sequential):
            linear = [i for i, layer in enumerate(module) if isinstance(layer, nn.Linear)]
            if linear:
                module[linear[-1]] = nn.Identity()
                return True
    return False
