"""Backbones from timm: any ``timm.create_model`` name, loaded with timm's own hub code for online users."""

from __future__ import annotations

import re

import timm
import torch
from timm.models import get_pretrained_cfg, split_model_name_tag
from timm.models import group_parameters as timm_group_parameters
from torch import nn

from transferlab.backbones.base import Backbone, FeatureMap, PreprocessConfig, pyramid_positions
from transferlab.backbones.torchvision_backbone import group_by_children
from transferlab.errors import TransferlabError

__all__ = ["TimmBackbone", "create_timm_backbone", "timm_parameter_groups", "timm_preprocess"]


class TimmBackbone(Backbone):
    """A timm model without its classifier.

    ``forward_features`` is timm's own: ``(B, C, H, W)`` for CNNs, ``(B, tokens, D)`` (class/prefix tokens first)
    for vision transformers; no mask. ``pool_features`` is timm's ``forward_head(pre_logits=True)``: the model's own
    pooling (``pool="avg"``: the global average for CNNs, e.g. the class token for transformers, with whatever the
    model applies after pooling, such as ``fc_norm`` or MobileNetV3's ``conv_head``), flattened; with
    ``pool="flatten"`` the model was built without pooling, so it is the flattened final feature map.

    Args:
        model: a timm model created with ``num_classes=0`` (and ``global_pool=""`` for ``pool="flatten"``).
        name: the registry name, recorded in ``spec``.
        pool: ``"avg"`` or ``"flatten"``.
        preprocess: how images become inputs.
        weights_source: where the weights came from (for reports), recorded in ``spec``.
    """

    def __init__(self, model: nn.Module, *, name: str, pool: str, preprocess: PreprocessConfig, weights_source: str):
        super().__init__()
        self.model = model
        self.pool = pool
        self.preprocess = preprocess
        self.num_features = self.infer_num_features(f"backbone '{name}' (pool='{pool}')")
        self.spec = self.describe(name, pool, weights_source)

    def forward_features(self, x: torch.Tensor) -> FeatureMap:
        return FeatureMap(self.model.forward_features(x))

    def pool_features(self, features: FeatureMap) -> torch.Tensor:
        """timm's ``forward_head(pre_logits=True)`` (its pooling holds layers of its own in some models), flattened."""
        return self.model.forward_head(features.values, pre_logits=True).flatten(1)

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        return [(name, [f"model.{p}" for p in params]) for name, params in timm_parameter_groups(self.model)]

    def feature_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of the last stages at strides 8, 16 and 32 (timm's ``feature_info``), from timm's
        ``forward_intermediates``; layers after the last of them (e.g. EfficientNet's ``conv_head``) do not run."""
        return self.model.forward_intermediates(x, indices=[index for index, _, _ in self._pyramid],
                                                intermediates_only=True, stop_early=True)

    @property
    def _pyramid(self) -> list[tuple[int, int, int]]:
        """``(feature_info index, stride, channels)`` of each pyramid map; no pyramid raises."""
        info = getattr(self.model, "feature_info", None)
        if not info or not hasattr(self.model, "forward_intermediates"):
            raise self._no_pyramid()
        entries = [dict(entry) for entry in info]
        positions = pyramid_positions([entry.get("reduction", 0) for entry in entries])
        if not positions:
            raise self._no_pyramid()
        return [(index, entries[index]["reduction"], entries[index]["num_chs"]) for index in positions]


def create_timm_backbone(
    timm_name: str, *, name: str, pretrained: bool, pool: str, image_size: int | None
) -> TimmBackbone:
    """Create a timm model as a backbone; ``pretrained=True`` downloads through timm (Hugging Face hub).

    Raises:
        TransferlabError: when the pretrained weights cannot be downloaded (offline) or do not exist.
    """
    kwargs: dict = {"num_classes": 0}
    if pool == "flatten":
        kwargs["global_pool"] = ""
    cfg = get_pretrained_cfg(split_model_name_tag(timm_name)[0])
    if image_size and cfg is not None and cfg.fixed_input_size:
        kwargs["img_size"] = image_size  # transformers build their position embeddings for one size
    try:
        model = timm.create_model(timm_name, pretrained=pretrained, **kwargs)
    except OSError as err:  # huggingface_hub's offline and HTTP errors and urllib's URLError are all OSErrors
        raise TransferlabError(
            f"could not download the pretrained weights of timm model '{timm_name}' ({type(err).__name__}; "
            "no internet?). Pass --weights PATH with a local weights file, use pretrained=False, or use the "
            "offline backbone 'efficientnet_lite0'"
        ) from err
    except RuntimeError as err:
        if not pretrained:
            raise
        raise TransferlabError(f"timm could not load pretrained weights for '{timm_name}': {err}") from err
    source = f"timm:{timm_name}" if pretrained else "random"
    preprocess = timm_preprocess(model, image_size)
    return TimmBackbone(model, name=name, pool=pool, preprocess=preprocess, weights_source=source)


def timm_preprocess(model: nn.Module, image_size: int | None = None) -> PreprocessConfig:
    """The model's timm data config (``timm.data.resolve_data_config``), optionally at another square size."""
    cfg = timm.data.resolve_data_config({}, model=model)
    preprocess = PreprocessConfig(
        input_size=tuple(cfg["input_size"]),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=cfg["interpolation"],
        crop_pct=float(cfg["crop_pct"]),
        crop_mode=cfg.get("crop_mode", "center"),
    )
    return preprocess.with_image_size(image_size) if image_size else preprocess


def timm_parameter_groups(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Named parameter groups from timm's fine-grained ``group_matcher``, ordered from input to output.

    Groups follow timm's layer ordinals (the ones timm uses for layer-wise learning-rate decay) and are named
    after what they match: ``"stem"``, ``"blocks.1.0"``, ``"layer2.1"``, ``"conv_head"``; parameters no rule
    matches form a last group ``"head"``. Unlike timm, layers its matcher marks "belongs with the previous group"
    (ordinal suffix 99999: EfficientNet's ``conv_head``, ViT's final ``norm``) keep a group of their own, so they
    can be trained or frozen alone.
    """
    try:
        matcher = model.group_matcher(coarse=False)
    except (AttributeError, NotImplementedError):
        return group_by_children(model)
    if not isinstance(matcher, dict):
        ordered = timm_group_parameters(model, matcher)
        return [(f"group{index}", ordered[index]) for index in sorted(ordered)]
    rules = _compile_rules(matcher)
    groups: dict[tuple, list[tuple[str, bool, str]]] = {}
    for param, _ in model.named_parameters():
        ordinal, label, primary = _classify(param, rules)
        groups.setdefault(ordinal, []).append((label, primary, param))
    named, seen = [], set()
    for ordinal in sorted(groups):
        members = groups[ordinal]
        label = next((lab for lab, primary, _ in members if primary), members[0][0])
        if label in seen:
            label = f"{label}_{len(named)}"
        seen.add(label)
        named.append((label, [param for _, _, param in members]))
    return named


def _compile_rules(matcher: dict) -> list[tuple[re.Pattern, int, str, tuple]]:
    rules = []
    for ordinal, (key, spec) in enumerate(matcher.items()):
        if spec is None:
            continue
        entries = spec if isinstance(spec, (list, tuple)) else [(spec, None)]
        rules += [(re.compile(pattern), ordinal, key, tuple(suffix or ())) for pattern, suffix in entries]
    return rules


def _classify(param: str, rules: list) -> tuple[tuple, str, bool]:
    """``(ordinal, label, primary)`` for one parameter name; ``primary`` rules (no ordinal suffix) name groups."""
    for pattern, ordinal, key, suffix in rules:
        match = pattern.match(param)
        if match:
            captures = tuple(float(group) for group in match.groups() if group is not None)
            label = match.group(0) if pattern.groups or suffix else key
            return (ordinal, *captures, *suffix), label.rstrip("."), not suffix
    return (float("inf"),), "head", True

