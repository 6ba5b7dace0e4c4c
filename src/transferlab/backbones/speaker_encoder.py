"""``resemblyzer``: the offline pretrained audio backbone, Resemblyzer's 256-d speaker encoder (GE2E, 3-layer LSTM).

The network is Resemblyzer's own ``VoiceEncoder`` with the ``pretrained.pt`` its PyPI package ships, so no
download is needed. ``forward`` reproduces ``VoiceEncoder.embed_utterance`` for a whole batch at once:

1. raise the volume of quiet clips to -30 dBFS (``resemblyzer.audio.normalize_volume(wav, -30,
   increase_only=True)``, the first half of Resemblyzer's ``preprocess_wav``). The encoder reads linear (not log)
   mel power, so its output depends on the recording level; it was trained on audio normalised this way;
2. 40-band mel power spectrogram with 25 ms windows every 10 ms (``resemblyzer.audio.wav_to_mel_spectrogram``,
   computed here in torch with librosa's filterbank);
3. 1.6 s partial windows at 1.3 per second (``VoiceEncoder.compute_partial_slices``), the clip zero-padded to
   its last window; every partial of every clip goes through the LSTM in one batch;
4. each clip's embedding is the L2-normalised mean of its partial embeddings.

Token-level features (``forward_features``) are therefore the partial-window embeddings, ``(B, windows, 256)``
with a mask over each clip's windows, and ``pool_features`` is their mean, L2-normalised. The LSTM's per-frame
outputs are not offered as tokens: each window runs the LSTM afresh from its own start, so a frame has one state
per window covering it, and the embedding is read from the last state of each window only; one LSTM pass over a
whole clip would give frames that do not pool into Resemblyzer's embedding.

The second half of ``preprocess_wav``, trimming long silences with webrtcvad, is not applied: it changes a clip's
length depending on its content, works on 16-bit integer audio and is not differentiable. Clips with long
silences can be trimmed beforehand with ``resemblyzer.preprocess_wav``.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from transferlab.backbones.base import Backbone, FeatureMap
from transferlab.backbones.mel import MelSpectrogram
from transferlab.backbones.pooling import length_mask
from transferlab.backbones.preprocess import AudioPreprocess
from transferlab.errors import TransferlabError

__all__ = ["SpeakerEncoderBackbone", "create_speaker_encoder", "rebuild_speaker_encoder"]

logger = logging.getLogger("transferlab")

NAME = "resemblyzer"
SAMPLING_RATE = 16000
N_FFT = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
PARTIALS_PER_SECOND = 1.3
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
EMBEDDING_SIZE = 256
LSTM_LAYERS = 3


class SpeakerEncoderBackbone(Backbone):
    """Resemblyzer's speaker encoder over batches of 16 kHz waveforms; ``forward`` gives ``(B, 256)`` unit vectors.

    Args:
        pretrained: load Resemblyzer's packaged weights; False re-initialises the network randomly.
        max_seconds: seconds kept per clip.
        normalize_volume: raise quiet clips to -30 dBFS first, as Resemblyzer's ``preprocess_wav`` does.
        preprocess: how waveforms become the batch; by default raw 16 kHz samples (no feature extractor).
    """

    onnx_refusal = "the Resemblyzer encoder's mel spectrogram (torch.stft) has no ONNX form in either exporter"

    def __init__(self, *, pretrained: bool = True, max_seconds: float = 10.0, normalize_volume: bool = True,
                 preprocess: AudioPreprocess | None = None):
        super().__init__()
        self.encoder = _voice_encoder(pretrained)
        self.normalize_volume = normalize_volume
        self.mel = MelSpectrogram(SAMPLING_RATE, N_FFT, HOP_LENGTH, N_MELS)
        self.preprocess = preprocess if preprocess is not None else AudioPreprocess(SAMPLING_RATE, max_seconds)
        self.pool = "avg"
        self.num_features = EMBEDDING_SIZE
        self.spec = {
            "name": NAME,
            "modality": "audio",
            "pool": "avg",
            "num_features": EMBEDDING_SIZE,
            "weights_source": "package:resemblyzer" if pretrained else "random",
            "normalize_volume": normalize_volume,
        }

    def forward_features(self, batch: dict[str, torch.Tensor]) -> FeatureMap:
        """Partial-window embeddings ``(B, windows, 256)`` (unit vectors; zeros past a clip's last window, which
        the ``(B, windows)`` mask marks) of ``{"input_values": (B, T), "attention_mask": (B, T)}`` at 16 kHz."""
        mask = batch["attention_mask"].float()
        waves = batch["input_values"].float() * mask
        lengths = [int(n) for n in batch["attention_mask"].sum(dim=-1)]
        if self.normalize_volume:
            waves = waves * volume_gain(waves, mask)[:, None]
        clip_index, starts = partial_windows(lengths)
        needed = max(waves.shape[1], (max(starts) + PARTIAL_FRAMES) * HOP_LENGTH)  # zeros up to the last window
        mels = self.mel(nn.functional.pad(waves, (0, needed - waves.shape[1])))  # (B, frames, 40)
        clip_index = torch.tensor(clip_index, device=mels.device)
        frames = torch.tensor(starts, device=mels.device)[:, None] + torch.arange(PARTIAL_FRAMES, device=mels.device)
        partials = self.encoder(mels[clip_index[:, None], frames])  # (P, 256), unit vectors
        counts = torch.bincount(clip_index, minlength=len(lengths))  # windows per clip
        position = torch.arange(len(clip_index), device=mels.device) - (torch.cumsum(counts, 0) - counts)[clip_index]
        windows = torch.zeros(len(lengths), int(counts.max()), EMBEDDING_SIZE, dtype=partials.dtype,
                              device=partials.device)
        windows = windows.index_put((clip_index, position), partials)
        return FeatureMap(windows, length_mask(counts, windows.shape[1]))

    def pool_features(self, features: FeatureMap) -> torch.Tensor:
        """The mean of each clip's window embeddings, L2-normalised: ``(B, 256)`` unit vectors."""
        return nn.functional.normalize(super().pool_features(features), dim=1)

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        """``lstm.0``, ``lstm.1``, ``lstm.2`` (one per LSTM layer), then ``linear``."""
        names = [name for name, _ in self.named_parameters()]
        groups = [(f"lstm.{k}", [n for n in names if n.startswith("encoder.lstm.") and n.endswith(f"_l{k}")])
                  for k in range(LSTM_LAYERS)]
        return [*groups, ("linear", [n for n in names if n.startswith("encoder.linear.")])]


def volume_gain(waves: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-clip factor ``(B,)`` that raises clips quieter than -30 dBFS (RMS over real samples) to -30 dBFS and
    leaves louder clips alone: ``resemblyzer.audio.normalize_volume(wav, -30, increase_only=True)``."""
    rms = ((waves**2).sum(dim=1) / mask.sum(dim=1).clamp_min(1)).sqrt()
    target = 10.0 ** (TARGET_DBFS / 20)
    return (target / rms.clamp_min(1e-12)).clamp_min(1.0)


def partial_windows(lengths: list[int]) -> tuple[list[int], list[int]]:
    """Where each clip's 1.6 s partial windows start, in mel frames, exactly as ``embed_utterance`` splits a clip.

    Returns:
        ``(clip_index, start_frame)``: one entry per partial window, clip by clip.
    """
    from resemblyzer import VoiceEncoder

    clip_index, starts = [], []
    for clip, length in enumerate(lengths):
        _, mel_slices = VoiceEncoder.compute_partial_slices(length, PARTIALS_PER_SECOND, MIN_COVERAGE)
        clip_index += [clip] * len(mel_slices)
        starts += [piece.start for piece in mel_slices]
    return clip_index, starts


def create_speaker_encoder(*, pretrained: bool, pool: str, max_seconds: float) -> SpeakerEncoderBackbone:
    """The ``resemblyzer`` backbone (registry entry point).

    Args:
        pretrained: Resemblyzer's packaged weights (offline); False gives a random initialisation.
        pool: ``"avg"``: the mean of the partial-window embeddings, as Resemblyzer does.
        max_seconds: seconds kept per clip.

    Raises:
        TransferlabError: for another ``pool``, or when Resemblyzer is not installed.
    """
    if pool != "avg":
        raise TransferlabError(f"backbone 'resemblyzer' averages its partial-window embeddings: pool must be "
                               f"'avg', got {pool!r}")
    return SpeakerEncoderBackbone(pretrained=pretrained, max_seconds=max_seconds)


def rebuild_speaker_encoder(spec: dict) -> SpeakerEncoderBackbone:
    """A randomly initialised ``resemblyzer`` backbone for ``spec``, with ``preprocess`` left ``None`` (the
    artifact loader sets it from the run directory)."""
    backbone = SpeakerEncoderBackbone(pretrained=False, normalize_volume=bool(spec.get("normalize_volume", True)))
    backbone.preprocess = None
    backbone.spec["weights_source"] = spec.get("weights_source", "random")
    return backbone


def _voice_encoder(pretrained: bool) -> nn.Module:
    try:
        from resemblyzer import VoiceEncoder
    except ImportError as err:
        raise TransferlabError("backbone 'resemblyzer' needs the Resemblyzer package: pip install --no-deps "
                               "Resemblyzer, then librosa webrtcvad-wheels") from err
    encoder = VoiceEncoder(device="cpu", verbose=False)  # always loads the packaged pretrained.pt
    if not pretrained:
        encoder.lstm.reset_parameters()
        encoder.linear.reset_parameters()
    return encoder
