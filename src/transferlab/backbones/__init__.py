"""Backbones: one interface (`Backbone`: `forward_features` -> `FeatureMap`, then `pool_features`) over timm,
torchvision, the offline EfficientNet-Lite models, LeNet and the Hugging Face text and audio encoders."""

from transferlab.backbones.base import Backbone, FeatureMap, PreprocessConfig
from transferlab.backbones.registry import create_backbone, list_backbones, rebuild_backbone
from transferlab.backbones.weights import load_weights_file

__all__ = [
    "Backbone",
    "FeatureMap",
    "PreprocessConfig",
    "create_backbone",
    "list_backbones",
    "load_weights_file",
    "rebuild_backbone",
]
