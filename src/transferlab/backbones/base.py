"""The one backbone interface every image, text and audio backbone implements (STYLE.md rule 1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from transferlab.backbones.pooling import pool_feature_map
from transferlab.errors import TransferlabError

__all__ = ["PYRAMID_STRIDES", "Backbone", "FeatureMap", "PreprocessConfig", "pyramid_positions"]

# the strides of the maps `Backbone.feature_pyramid` gives (FPN's C3, C4, C5)
PYRAMID_STRIDES = (8, 16, 32)


def pyramid_positions(strides: list[int]) -> list[int]:
    """Positions of the pyramid's maps among a network's stage outputs of ``strides`` (input order): for each of
    `PYRAMID_STRIDES`, the last output at that stride. Empty when fewer than two of those strides occur (a network
    that never changes its stride, like a vision transformer, gives no pyramid)."""
    last = {stride: position for position, stride in enumerate(strides) if stride in PYRAMID_STRIDES}
    return [last[stride] for stride in sorted(last)] if len(last) >= 2 else []


@dataclass(frozen=True)
class FeatureMap:
    """Token-level or spatial features of a batch, before pooling (what ``Backbone.forward_features`` returns).

    Attributes:
        values: ``(B, T, D)`` tokens or frames (text, audio, vision transformers) or ``(B, C, H, W)`` maps
            (conv nets).
        mask: ``(B, T)`` long or bool, 1/True on real tokens and 0/False on padding, where lengths vary in a
            batch (text, audio); ``None`` when every position is real.
    """

    values: torch.Tensor
    mask: torch.Tensor | None = None

    @property
    def lengths(self) -> torch.Tensor:
        """``(B,)`` real positions per example (all ``T`` without a mask; ``H * W`` for maps)."""
        if self.mask is not None:
            return self.mask.long().sum(dim=1)
        size = self.values.shape[1] if self.values.dim() == 3 else self.values.shape[2] * self.values.shape[3]
        return torch.full((self.values.shape[0],), size, dtype=torch.long, device=self.values.device)


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw images become the backbone's input tensor; saved in every run directory.

    ``input_size`` is ``(channels, height, width)``; 1 channel means images are converted to grayscale ("L"),
    3 channels to RGB. The other fields follow timm's data config (``timm.data.resolve_data_config``).
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    crop_mode: str = "center"
    modality: ClassVar[str] = "image"

    @property
    def channels(self) -> int:
        return self.input_size[0]

    @property
    def image_mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    def with_image_size(self, size: int) -> "PreprocessConfig":
        return PreprocessConfig(**{**asdict(self), "input_size": (self.channels, size, size)})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "PreprocessConfig":
        values = {key: value for key, value in values.items() if key != "modality"}
        for key in ("input_size", "mean", "std"):
            values[key] = tuple(values[key])
        return cls(**values)


class Backbone(nn.Module):
    """A pretrained (or random) network that maps a batch of inputs to token-level features and pools them.

    The interface follows timm's: ``forward_features(x)`` gives the unpooled features as a `FeatureMap`
    (``(B, T, D)`` with a padding mask where lengths vary, or ``(B, C, H, W)`` for conv nets), ``pool_features``
    turns them into ``(B, num_features)`` with the backbone's named pooling (`pool`, saved as ``spec["pool"]``), and
    ``forward(x) = pool_features(forward_features(x))``. Heads that read every token or frame (CTC, detection,
    retrieval) use ``forward_features``; classifiers use ``forward``.

    Subclasses implement `forward_features` and `parameter_groups`, and set:
        pool: the name of the pooling step, ``"avg"``, ``"flatten"`` or ``"cls"`` (recorded as ``spec["pool"]``).
        num_features: size of the vectors ``forward`` returns.
        preprocess: what turns raw examples into inputs: `PreprocessConfig` for images,
            `transferlab.backbones.preprocess.TextPreprocess` / ``AudioPreprocess`` for text and audio.
        spec: a JSON-serialisable dict from which `transferlab.backbones.rebuild_backbone` builds the same
            architecture again (without pretrained weights; weights then come from the run directory). Text and
            audio specs carry ``"modality"``.

    Backbones whose pretrained weights come with their source classifier may override `source_logits`. Backbones
    with no ONNX form set `onnx_refusal` to the reason (`transferlab export` refuses their models in one line).

    ``x`` is ``(B, C, H, W)`` images, or the ``{name: tensor}`` batch the text/audio preprocessing's ``collate``
    makes.
    """

    pool: str
    num_features: int
    preprocess: "PreprocessConfig"
    spec: dict
    onnx_refusal: ClassVar[str | None] = None

    @property
    def modality(self) -> str:
        """``"image"``, ``"text"`` or ``"audio"``: the kind of data this backbone reads."""
        return self.preprocess.modality

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        """Named groups of parameter names (relative to this module), ordered from the input to the output.

        Every trainable parameter belongs to exactly one group. Freezing (``--freeze N``) and discriminative
        learning rates work over these groups by name.
        """
        raise NotImplementedError

    def forward_features(self, x: Any) -> FeatureMap:  # pragma: no cover - interface
        """Unpooled features of a batch: ``values`` ``(B, T, D)`` or ``(B, C, H, W)``, ``mask`` ``(B, T)`` or None."""
        raise NotImplementedError

    def pool_features(self, features: FeatureMap) -> torch.Tensor:
        """``(B, num_features)`` from `forward_features`' output, with the backbone's named pooling `pool`
        (`transferlab.backbones.pooling.pool_feature_map`: ``avg``, ``flatten`` or ``cls``).

        Backbones whose pooled vector passes through layers of their own after pooling (timm heads, LeNet's
        ``fc1``) override this.
        """
        return pool_feature_map(features.values, features.mask, self.pool)

    def forward(self, x: Any) -> torch.Tensor:
        """``pool_features(forward_features(x))``: ``(B, num_features)``."""
        return self.pool_features(self.forward_features(x))

    def source_logits(self, features: torch.Tensor) -> torch.Tensor | None:
        """Logits of the source task's classifier (e.g. the 1000 ImageNet classes) on pooled features, or ``None``.

        Args:
            features: ``(B, num_features)``, what ``forward`` returns (so cached embeddings can be reused).

        Returns:
            ``(B, Z)`` source-class logits when the backbone carries the classifier its pretrained weights were
            trained with; ``None`` (the default) when it has none, e.g. random or replaced weights. Scores that
            need a source classifier (LEEP, NCE) apply only where this is not ``None``.
        """
        return None

    def feature_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at increasing strides, for detection heads (an FPN reads them).

        Args:
            x: ``(B, C, H, W)`` images.

        Returns:
            ``[(B, pyramid_channels[i], H / pyramid_strides[i], W / pyramid_strides[i])]``, strides increasing
            (8, 16, 32 for the image CNNs; sizes rounded as the network's convolutions round them).

        Raises:
            TransferlabError: the backbone gives no multi-scale maps (the default: text, audio, LeNet, vision
                transformers).
        """
        raise self._no_pyramid()

    @property
    def pyramid_channels(self) -> list[int]:
        """Channels of each map `feature_pyramid` returns."""
        return [channels for _, _, channels in self._pyramid]

    @property
    def pyramid_strides(self) -> list[int]:
        """Strides (input pixels per map cell) of each map `feature_pyramid` returns, increasing."""
        return [stride for _, stride, _ in self._pyramid]

    @property
    def _pyramid(self) -> list[tuple[int, int, int]]:
        """``(position, stride, channels)`` of each pyramid map; backbones that give a pyramid override it."""
        raise self._no_pyramid()

    def _no_pyramid(self) -> TransferlabError:
        name = getattr(self, "spec", {}).get("name", type(self).__name__)
        return TransferlabError(
            f"backbone {name!r} gives no multi-scale feature maps; detection needs an image CNN backbone: "
            "efficientnet_lite0/1/2, a timm CNN (e.g. resnet18, mobilenetv3_large_100) or torchvision:ARCH (e.g. "
            "torchvision:resnet18, torchvision:mobilenet_v3_large)"
        )

    def describe(self, name: str, pool: str, weights_source: str) -> dict:
        """The ``spec`` of this backbone (``preprocess`` and ``num_features`` must be set)."""
        return {
            "name": name,
            "pool": pool,
            "image_size": self.preprocess.input_size[1],
            "in_chans": self.preprocess.channels,
            "num_features": self.num_features,
            "weights_source": weights_source,
        }

    def infer_num_features(self, label: str = "this backbone") -> int:
        """Size of the vectors ``forward`` returns, found by one dummy input of ``preprocess.input_size``.

        Runs in eval mode under ``torch.no_grad`` and restores the training mode afterwards.

        Raises:
            TransferlabError: when the network cannot take inputs of that size (``label`` names the backbone).
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self(torch.zeros(1, *self.preprocess.input_size))
        except RuntimeError as err:
            size = "x".join(str(v) for v in self.preprocess.input_size)
            message = f"{label} cannot take inputs of size {size} (channels x height x width): {err}"
            raise TransferlabError(message) from err
        finally:
            self.train(was_training)
        return int(out.shape[1])
