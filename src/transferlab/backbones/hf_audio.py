"""Hugging Face audio encoders as backbones: wav2vec2, HuBERT, WavLM and the encoder of Whisper.

``forward_features`` takes the batch `AudioPreprocess.collate` makes and gives the encoder's last hidden states
``(B, frames, hidden)`` with a mask over the frames that hold real audio; ``forward`` is their mean over those
frames (``(B, hidden)``): padding added to batch clips of different lengths is left out of the average. The
sample-level ``attention_mask`` of the batch gives each clip's length in samples; the model's own convolution
arithmetic turns it into a number of frames (`HFAudioBackbone.frame_lengths`).

wav2vec2-style models whose feature encoder uses layer norm (``config.feat_extract_norm == "layer"``) also get
the ``attention_mask``, so padding does not change their output at all. Models with group norm
(``"group"``, e.g. wav2vec2-base, HuBERT-base, WavLM) were trained without one and Hugging Face advises not to pass
it: their padded frames are still left out of the average, but the padding can shift the other frames slightly.
Whisper pads every clip to 30 s itself, so its output never depends on the rest of the batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from transferlab.backbones.base import Backbone, FeatureMap
from transferlab.backbones.pooling import length_mask
from transferlab.backbones.preprocess import AudioPreprocess
from transferlab.errors import TransferlabError

__all__ = ["AUDIO_MODEL_TYPES", "HFAudioBackbone", "create_hf_audio_backbone", "rebuild_audio_backbone"]

logger = logging.getLogger("transferlab")

WAV2VEC2_STYLE = ("wav2vec2", "hubert", "wavlm")
AUDIO_MODEL_TYPES = (*WAV2VEC2_STYLE, "whisper")
AUDIO_POOLS = ("avg",)
WHISPER_MAX_SECONDS = 30.0
WHISPER_HOP_LENGTH = 160  # WhisperFeatureExtractor's default: one mel frame per 10 ms at 16 kHz
# Whisper's sinusoidal position table: HF builds it frozen (``requires_grad_(False)``); it stays in no group
FIXED_PARAMETERS = ("embed_positions.weight",)


class HFAudioBackbone(Backbone):
    """A Hugging Face audio encoder, mean-pooled over the real frames of each clip.

    Args:
        model: a ``Wav2Vec2Model``, ``HubertModel``, ``WavLMModel`` or ``WhisperEncoder``.
        name: the registry name (a local directory or a hub name), recorded in ``spec``.
        pool: ``"avg"``, the only pooling audio encoders have here.
        preprocess: how waveforms become the batch; ``None`` until the artifact loader sets it (rebuilt models).
        weights_source: where the weights came from (``"hf:NAME"`` or ``"random"``), recorded in ``spec``.
        mel_hop_length: samples per mel frame of Whisper's feature extractor (ignored for wav2vec2-style models).
    """

    onnx_refusal = ("Hugging Face audio encoders are not exported yet: their export and its parity are untested "
                    "(and the audio preprocessing is not described for a consumer)")

    def __init__(self, model: nn.Module, *, name: str, pool: str, preprocess: AudioPreprocess | None,
                 weights_source: str, mel_hop_length: int = WHISPER_HOP_LENGTH):
        super().__init__()
        _check_pool(pool)
        self.model = model
        self.pool = pool
        for param_name, param in model.named_parameters():
            if param_name in FIXED_PARAMETERS:
                param.requires_grad_(False)  # transformers' from_pretrained makes it trainable again
        self.preprocess = preprocess
        self.is_whisper = model.config.model_type == "whisper"
        self.mel_hop_length = int(mel_hop_length)
        self.passes_attention_mask = getattr(model.config, "feat_extract_norm", None) == "layer"
        self.num_features = _hidden_size(model.config)
        self.spec = {
            "name": name,
            "modality": "audio",
            "pool": pool,
            "num_features": self.num_features,
            "weights_source": weights_source,
            "hf_config": model.config.to_dict(),
        }
        if self.is_whisper:
            self.spec["mel_hop_length"] = self.mel_hop_length

    def forward_features(self, batch: dict[str, torch.Tensor]) -> FeatureMap:
        """Last hidden states ``(B, frames, hidden)`` of a batch ``{input_values or input_features,
        attention_mask}``, with a ``(B, frames)`` mask of the frames holding real audio.

        ``attention_mask`` is ``(B, T)`` over samples (1 for real audio, 0 for padding).
        """
        samples = batch["attention_mask"].sum(dim=-1).long()
        if self.is_whisper:
            hidden = self.model(batch["input_features"]).last_hidden_state
        else:
            extra = {"attention_mask": batch["attention_mask"]} if self.passes_attention_mask else {}
            hidden = self.model(batch["input_values"], **extra, **self._time_masking(batch["input_values"]))
            hidden = hidden.last_hidden_state
        frames = self.frame_lengths(samples, hidden.shape[1]).to(hidden.device)
        return FeatureMap(hidden, length_mask(frames, hidden.shape[1]))

    def frame_lengths(self, samples: torch.Tensor, frames: int) -> torch.Tensor:
        """``(B,)`` output frames holding real audio for clips of ``samples`` ``(B,)`` samples, between 1 and
        ``frames`` (the batch's output length)."""
        if self.is_whisper:
            return self._whisper_frames(samples, frames)
        lengths = self.model._get_feat_extract_output_lengths(samples)
        return torch.as_tensor(lengths, dtype=torch.long).clamp(1, frames)

    def _time_masking(self, values: torch.Tensor) -> dict:
        """``{"mask_time_indices": nothing masked}`` for training batches shorter than one SpecAugment time mask
        (``config.mask_time_length`` frames, 0.2 s for wav2vec2-base), on which transformers raises; else ``{}``."""
        config = self.model.config
        if not (self.training and config.apply_spec_augment and config.mask_time_prob > 0):
            return {}
        frames = values.shape[1]
        for kernel, stride in zip(config.conv_kernel, config.conv_stride):
            frames = (frames - kernel) // stride + 1
        if frames >= config.mask_time_length:
            return {}
        return {"mask_time_indices": torch.zeros(values.shape[0], max(frames, 0), dtype=torch.bool,
                                                 device=values.device)}

    def _whisper_frames(self, samples: torch.Tensor, encoder_frames: int) -> torch.Tensor:
        """Encoder frames holding real audio: one mel frame per hop, then the stride-2 convolution halves them."""
        stride = self.model.conv1.stride[0] * self.model.conv2.stride[0]
        mel_frames = torch.div(samples + self.mel_hop_length - 1, self.mel_hop_length, rounding_mode="floor")
        return torch.div(mel_frames + stride - 1, stride, rounding_mode="floor").clamp(1, encoder_frames)

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        """``feature_encoder`` (the convolutions over the signal), ``embeddings`` (projection, positional
        convolution, ...), ``layer.0`` ... ``layer.N-1``, then ``encoder_norm`` and any other top module.

        Whisper's fixed sinusoidal position table is in no group: it is not trainable.
        """
        stable_norm = bool(getattr(self.model.config, "do_stable_layer_norm", True))
        groups: dict[str, list[str]] = {}
        for name, _ in self.model.named_parameters():
            if name in FIXED_PARAMETERS:
                continue
            groups.setdefault(_group_of(name, stable_norm), []).append(f"model.{name}")
        return sorted(groups.items(), key=lambda item: _group_rank(item[0]))


def create_hf_audio_backbone(name: str, *, pretrained: bool, pool: str, max_seconds: float) -> HFAudioBackbone:
    """A wav2vec2, HuBERT, WavLM or Whisper (encoder) backbone from a local directory or a hub name.

    Args:
        name: a directory holding ``config.json`` (and the weights when ``pretrained``), or a hub name such as
            ``facebook/wav2vec2-base`` (needs internet, or the hub cache).
        pretrained: load the weights; False builds the same architecture with random weights.
        pool: ``"avg"``.
        max_seconds: seconds kept per clip (Whisper reads at most 30 s).

    The feature extractor comes from the same source; when the source has none (``preprocessor_config.json``),
    the family's default is built: wav2vec2-style normalisation at 16 kHz, or Whisper's log-mel.

    Raises:
        TransferlabError: for an invalid ``pool``, a model that cannot be loaded (offline, missing files) or a
            model that is not one of the supported audio families.
    """
    _check_pool(pool)
    config = _load_config(name)
    model = _load_model(name, config) if pretrained else _model_from_config(config)
    extractor = _load_feature_extractor(name, config)
    if config.model_type == "whisper":
        extractor.return_attention_mask = False  # keep collate's attention_mask over samples
        if max_seconds > WHISPER_MAX_SECONDS:
            logger.info("Whisper reads at most %.0f s per clip: max_seconds %.1f becomes %.0f",
                        WHISPER_MAX_SECONDS, max_seconds, WHISPER_MAX_SECONDS)
            max_seconds = WHISPER_MAX_SECONDS
    preprocess = AudioPreprocess(sampling_rate=int(extractor.sampling_rate), max_seconds=max_seconds,
                                 feature_extractor=extractor)
    return HFAudioBackbone(model, name=name, pool=pool, preprocess=preprocess,
                           weights_source=f"hf:{name}" if pretrained else "random",
                           mel_hop_length=getattr(extractor, "hop_length", WHISPER_HOP_LENGTH))


def rebuild_audio_backbone(spec: dict) -> Backbone:
    """The audio backbone ``spec`` describes, randomly initialised and without any download.

    ``preprocess`` is left ``None``: the artifact loader sets it from the run directory.

    Raises:
        TransferlabError: when ``spec`` is not an audio backbone spec or rebuilds into another feature size.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise TransferlabError(f"an audio backbone spec must be a dict with a 'name', got {spec!r}")
    if spec["name"] == "resemblyzer":
        from transferlab.backbones.speaker_encoder import rebuild_speaker_encoder

        backbone = rebuild_speaker_encoder(spec)
    else:
        if not isinstance(spec.get("hf_config"), dict):
            raise TransferlabError(f"audio backbone spec for {spec['name']!r} has no 'hf_config' to rebuild from")
        config = _config_from_dict(spec["hf_config"])
        backbone = HFAudioBackbone(_model_from_config(config), name=spec["name"], pool=spec.get("pool", "avg"),
                                   preprocess=None, weights_source=spec.get("weights_source", "random"),
                                   mel_hop_length=spec.get("mel_hop_length", WHISPER_HOP_LENGTH))
    expected = spec.get("num_features", backbone.num_features)
    if backbone.num_features != expected:
        raise TransferlabError(f"audio backbone spec for {spec['name']!r} rebuilds with {backbone.num_features} "
                               f"features instead of {expected} (saved with another version of the library?)")
    return backbone


def _check_pool(pool: str) -> None:
    if pool not in AUDIO_POOLS:
        raise TransferlabError(f"audio backbones pool over time with 'avg' only, got pool {pool!r}; "
                               f"choose one of {', '.join(AUDIO_POOLS)}")


def _hidden_size(config) -> int:
    if config.model_type == "whisper":
        return int(config.d_model)
    if getattr(config, "add_adapter", False):
        return int(config.output_hidden_size)
    return int(config.hidden_size)


def _group_of(name: str, stable_norm: bool) -> str:
    """The parameter group of a parameter name of a wav2vec2-style model or a Whisper encoder."""
    parts = name.split(".")
    if parts[0] in ("feature_extractor", "conv1", "conv2"):
        return "feature_encoder"
    if parts[0] == "encoder":  # wav2vec2-style: the transformer is model.encoder
        parts = parts[1:]
        if parts[0] == "layer_norm" and not stable_norm:
            return "embeddings"  # post-norm models normalise the embeddings before the first layer
    if parts[0] == "layers":
        return f"layer.{parts[1]}"
    if parts[0] in ("feature_projection", "masked_spec_embed", "pos_conv_embed"):
        return "embeddings"
    if parts[0] == "layer_norm":
        return "encoder_norm"
    return parts[0]


def _group_rank(group: str) -> tuple[int, int]:
    if group == "feature_encoder":
        return (0, 0)
    if group == "embeddings":
        return (1, 0)
    if group.startswith("layer."):
        return (2, int(group.split(".")[1]))
    return (3, 0)


def _offline_error(name: str, what: str, err: Exception) -> TransferlabError:
    if Path(name).is_dir():
        return TransferlabError(f"could not load the {what} of the audio model in {name}: {err}")
    if Path(name).is_absolute() or name.startswith((".", "~")):
        return TransferlabError(f"audio model directory not found: {name}")
    return TransferlabError(
        f"could not load the {what} of Hugging Face audio model {name!r} ({type(err).__name__}; no internet?). "
        f"Download it once where there is internet (e.g. `hf download {name} --local-dir DIR`) and pass the "
        "local directory DIR as the backbone, or use the offline audio backbone 'resemblyzer'"
    )


def _load_config(name: str):
    from transformers import AutoConfig  # imported here: transformers is slow to import

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:  # hub offline/HTTP errors are OSErrors; unknown model types ValueErrors
        raise _offline_error(name, "configuration", err) from err
    if config.model_type not in AUDIO_MODEL_TYPES:
        raise TransferlabError(f"{name!r} is a {config.model_type!r} model, not an audio encoder transferlab "
                               f"supports; choose a model of type {', '.join(AUDIO_MODEL_TYPES)}")
    return config


def _config_from_dict(values: dict):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = values.get("model_type")
    if model_type not in AUDIO_MODEL_TYPES:
        raise TransferlabError(f"audio backbone spec has model_type {model_type!r}; expected one of "
                               f"{', '.join(AUDIO_MODEL_TYPES)}")
    return CONFIG_MAPPING[model_type].from_dict(values)


def _model_from_config(config) -> nn.Module:
    """Randomly initialised encoder (for Whisper only the encoder is built)."""
    if config.model_type == "whisper":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        return WhisperEncoder(config)
    from transformers import AutoModel

    return AutoModel.from_config(config)


def _load_model(name: str, config) -> nn.Module:
    from transformers import AutoModel, WhisperModel

    loader = WhisperModel if config.model_type == "whisper" else AutoModel
    try:
        model = loader.from_pretrained(name, config=config, dtype=torch.float32)
    except OSError as err:
        raise _offline_error(name, "weights", err) from err
    return model.encoder if config.model_type == "whisper" else model


def _load_feature_extractor(name: str, config):
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(name)
    except (OSError, ValueError):  # no preprocessor_config.json beside the model
        logger.info("%s has no feature extractor settings: using the %s default", name, config.model_type)
    return _default_feature_extractor(config)


def _default_feature_extractor(config):
    """The feature extractor the family's checkpoints ship with, at 16 kHz."""
    if config.model_type == "whisper":
        from transformers import WhisperFeatureExtractor

        return WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=16000)
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                    return_attention_mask=config.feat_extract_norm == "layer")
