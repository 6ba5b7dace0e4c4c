"""Mel power spectrograms in torch, with librosa's filterbank: shared by the audio backbones that read mel frames."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["MelSpectrogram"]


class MelSpectrogram(nn.Module):
    """``(B, T)`` waveforms -> ``(B, frames, n_mels)`` mel power, as ``librosa.feature.melspectrogram`` computes it:
    centred periodic Hann windows of ``n_fft`` samples every ``hop_length``, zero padding at the ends, power 2,
    Slaney mel filters (``librosa.filters.mel``). ``frames = T // hop_length + 1``."""

    def __init__(self, sampling_rate: int, n_fft: int, hop_length: int, n_mels: int):
        super().__init__()
        import librosa  # imported here: only audio backbones need it

        self.n_fft, self.hop_length = n_fft, hop_length
        basis = librosa.filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=n_mels)
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        self.register_buffer("basis", torch.from_numpy(np.asarray(basis, dtype=np.float32)), persistent=False)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(waves.float(), self.n_fft, hop_length=self.hop_length, window=self.window, center=True,
                              pad_mode="constant", return_complex=True)
        power = spectrum.real**2 + spectrum.imag**2  # (B, n_fft // 2 + 1, frames)
        return torch.matmul(self.basis, power).transpose(1, 2)
