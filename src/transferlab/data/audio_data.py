"""`AudioData`: audio files of one domain with optional class labels or transcripts, and their decoding.

Decoding uses soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, MP3 where libsndfile has it); several channels are
averaged to mono and the signal is resampled to the backbone's rate with scipy's polyphase filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np

from transferlab.data.digests import file_digest
from transferlab.data.image_data import LabeledExamples
from transferlab.errors import TransferlabError

__all__ = ["AUDIO_EXTENSIONS", "AudioData", "AudioReadError", "audio_problem", "read_audio"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


class AudioReadError(TransferlabError):
    """An audio file that is missing, unreadable, empty or not audio."""


def read_audio(path: Path, sampling_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode ``path`` to a mono float32 waveform at ``sampling_rate``, cut to the first ``max_seconds``.

    Raises:
        AudioReadError: the file is missing, not audio libsndfile can decode, or holds no samples.
    """
    import soundfile  # imported here: only audio runs need libsndfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise AudioReadError(f"audio file not found: {path}") from None
    except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioReadError(f"cannot read audio file {path}: {exc}") from None
    if samples.size == 0:
        raise AudioReadError(f"audio file {path} holds no samples (zero length)")
    wave = samples.mean(axis=1)
    if max_seconds is not None:
        wave = wave[: max(1, int(round(max_seconds * rate)))]
    if rate != sampling_rate:
        from scipy.signal import resample_poly

        common = gcd(int(rate), int(sampling_rate))
        wave = resample_poly(wave, sampling_rate // common, int(rate) // common)
    return np.ascontiguousarray(wave, dtype=np.float32)


def audio_problem(path: Path) -> str | None:
    """Why ``path`` is not usable audio (missing, unreadable, zero-length), from its header; ``None`` if usable."""
    import soundfile  # imported here: only audio runs need libsndfile

    if not Path(path).is_file():
        return f"audio file not found: {path}"
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        return f"cannot read audio file {path}: {exc}"
    if info.frames == 0:
        return f"audio file {path} holds no samples (zero length)"
    return None


@dataclass
class AudioData(LabeledExamples):
    """Audio clips of one domain, backed by files.

    Attributes:
        name: where the data came from (the spec the user gave), used in messages and reports.
        classes: class names; ``labels`` index into it. Empty for unlabeled data.
        labels: ``(N,)`` int64 class indices, or ``None``.
        paths: one audio file per example.
        transcripts: one transcript per example (speech recognition data), or ``None``.
        domain: ``"source"`` or ``"target"``.
    """

    name: str
    classes: list[str]
    labels: np.ndarray | None
    paths: list[Path]
    transcripts: list[str] | None = None
    domain: str = "target"
    _digests: dict[int, str] = field(default_factory=dict, repr=False, compare=False)
    noun = "audio clips"
    per_example = ("paths", "transcripts")

    def __post_init__(self) -> None:
        self._check_domain_and_labels()
        if self.transcripts is not None and len(self.transcripts) != len(self.paths):
            raise ValueError(f"{len(self.transcripts)} transcripts for {len(self.paths)} clips in {self.name}")

    def __len__(self) -> int:
        return len(self.paths)

    def load_waveform(self, index: int, sampling_rate: int, max_seconds: float | None = None) -> np.ndarray:
        """Clip ``index`` as mono float32 samples at ``sampling_rate`` (see `read_audio`)."""
        return read_audio(self.paths[index], sampling_rate, max_seconds)

    def content_digest(self, index: int) -> str:
        """SHA-1 of the file's bytes: the key of the feature cache."""
        return file_digest(self._digests, index, self.paths[index], error=AudioReadError, noun="audio file")
