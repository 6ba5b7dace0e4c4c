"""``audio-cnn``: a small CNN on log-mel spectrograms, the from-scratch audio baseline (what ``lenet`` is for digits).

It has no pretrained weights. It exists so that "does the pretrained speech encoder pay off?" can be answered
against a network that trains well from scratch on a few thousand clips: Resemblyzer's LSTM, randomly initialised,
does not (its 1.6 s windows zero-pad short clips, and a random LSTM's final state forgets the speech before the
padding; measured in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import torch
from torch import nn

from transferlab.backbones.base import Backbone, FeatureMap
from transferlab.backbones.mel import MelSpectrogram
from transferlab.backbones.pooling import length_mask
from transferlab.backbones.preprocess import AudioPreprocess

__all__ = ["AudioCNN"]

SAMPLING_RATE = 16000
N_FFT, HOP_LENGTH, N_MELS = 400, 160, 64  # 25 ms windows every 10 ms
WIDTHS = (32, 64, 128, 128)


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False), nn.BatchNorm2d(channels_out),
                         nn.ReLU(inplace=True))


class AudioCNN(Backbone):
    """log-mel (64 bands, per-clip standardised over its real frames) -> 4 x [conv 3x3, BatchNorm, ReLU, max-pool 2]
    -> mean over frequency (``forward_features``: ``(B, frames / 16, 128)`` with a mask of the real frames) -> mean
    over the clip's real frames -> 128 features. Padding frames are zeroed before every convolution and pooling,
    so (in eval mode) a clip gives the same features alone or padded in a batch.

    Inputs: ``{"input_values": (B, T), "attention_mask": (B, T)}`` of 16 kHz waveforms.

    Args:
        max_seconds: seconds kept per clip.
        weights_source: where the weights came from, recorded in ``spec``.
    """

    onnx_refusal = ("its mel spectrogram front end (torch.stft) has no ONNX form in either exporter")

    def __init__(self, max_seconds: float = 10.0, weights_source: str = "random"):
        super().__init__()
        self.mel = MelSpectrogram(SAMPLING_RATE, N_FFT, HOP_LENGTH, N_MELS)
        widths = (1, *WIDTHS)
        self.blocks = nn.ModuleList(_block(a, b) for a, b in zip(widths, widths[1:]))
        self.pool = "avg"
        self.num_features = WIDTHS[-1]
        self.preprocess = AudioPreprocess(SAMPLING_RATE, max_seconds)
        self.spec = {"name": "audio-cnn", "modality": "audio", "pool": "avg", "num_features": self.num_features,
                     "weights_source": weights_source}

    def forward_features(self, batch: dict[str, torch.Tensor]) -> FeatureMap:
        frames = batch["attention_mask"].sum(dim=1) // HOP_LENGTH + 1  # (B,) real mel frames per clip
        mels = torch.log(self.mel(batch["input_values"] * batch["attention_mask"]) + 1e-6)  # (B, F, 64)
        real = length_mask(frames, mels.shape[1]).unsqueeze(-1)
        mean = (mels * real).sum(dim=(1, 2), keepdim=True) / (frames[:, None, None] * N_MELS)
        std = (((mels - mean) * real) ** 2).sum(dim=(1, 2), keepdim=True).div(frames[:, None, None] * N_MELS).sqrt()
        x = (((mels - mean) / (std + 1e-5)) * real).unsqueeze(1)  # (B, 1, F, 64), padding zeroed
        for block in self.blocks:
            x = block(x) * length_mask(frames, x.shape[2])[:, None, :, None]  # ReLU outputs: zeros never win the pool
            x = nn.functional.max_pool2d(x, 2, ceil_mode=True)
            frames = torch.div(frames + 1, 2, rounding_mode="floor")  # ceil-mode pooling: real frames, rounded up
        x = x.mean(dim=3)  # over frequency: (B, C, F')
        return FeatureMap(x.transpose(1, 2), length_mask(frames, x.shape[2]))

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        """``block.0`` ... ``block.3``, input to output."""
        return [(f"block.{i}", [f"blocks.{i}.{name}" for name, _ in block.named_parameters()])
                for i, block in enumerate(self.blocks)]
