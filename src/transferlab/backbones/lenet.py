"""LeNet: a small CNN for 16-32 px digit images, as in TLlib's digit benchmarks (MNIST, USPS, SVHN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.backbones.base import Backbone, FeatureMap, PreprocessConfig
from transferlab.errors import TransferlabError

__all__ = ["LeNet"]

MIN_IMAGE_SIZE = 16


class LeNet(Backbone):
    """LeNet with TLlib's layer sizes (``tllib.vision.models.digits.LeNet``): 500 features from grayscale digits.

    conv 5x5 (20) -> max-pool 2 -> ReLU -> conv 5x5 (50) -> dropout -> max-pool 2 -> ReLU -> flatten ->
    linear (500) -> ReLU -> dropout. ``forward_features`` gives the last map ``(B, 50, s, s)`` (``s = 4`` at 28 px);
    ``pool_features`` is the network's own: it always flattens that map into ``fc1``, so both ``pool`` values give
    the same 500 features. It has no pretrained weights: it is trained from scratch or loaded from a weights file.

    Args:
        image_size: square input size, at least 16 (28 for MNIST; the map before ``fc1`` is 4x4 at 28 px).
        pool: recorded in ``spec``; ``"avg"`` or ``"flatten"``.
        weights_source: where the weights came from, recorded in ``spec``.

    Raises:
        TransferlabError: when ``image_size`` is below 16.
    """

    def __init__(self, image_size: int = 28, pool: str = "avg", weights_source: str = "random"):
        super().__init__()
        if image_size < MIN_IMAGE_SIZE:
            raise TransferlabError(f"lenet needs images of at least {MIN_IMAGE_SIZE} px, got image_size={image_size}")
        side = ((image_size - 4) // 2 - 4) // 2
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.conv2_drop = nn.Dropout2d(p=0.5)
        self.fc1 = nn.Linear(50 * side * side, 500)
        self.fc1_drop = nn.Dropout(p=0.5)
        self.pool = pool
        self.num_features = 500
        self.preprocess = PreprocessConfig(
            input_size=(1, image_size, image_size), mean=(0.5,), std=(0.5,), interpolation="bilinear", crop_pct=1.0
        )
        self.spec = self.describe("lenet", pool, weights_source)

    def forward_features(self, x: torch.Tensor) -> FeatureMap:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        return FeatureMap(F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2)))

    def pool_features(self, features: FeatureMap) -> torch.Tensor:
        """flatten -> ``fc1`` -> ReLU -> dropout, whatever ``pool`` says (see the class docstring)."""
        return self.fc1_drop(F.relu(self.fc1(features.values.flatten(1))))

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        """``conv1``, ``conv2``, ``fc1``."""
        return [(name, [f"{name}.weight", f"{name}.bias"]) for name in ("conv1", "conv2", "fc1")]
