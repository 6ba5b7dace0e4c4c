"""How raw text and audio become a backbone's inputs; the image counterpart is `transferlab.backbones.PreprocessConfig`.

Every preprocessing object has a ``modality`` (``"image"``, ``"text"``, ``"audio"``), ``to_dict()`` for
``model.json`` and, for text and audio, ``collate(items) -> {name: tensor}``: the batch the backbone's ``forward``
takes. Text and audio batches are padded to their longest member (dynamic padding) and carry an
``attention_mask``. Files the preprocessing needs (a tokenizer, a feature extractor's settings) are written into the
run directory by ``save(run_dir)`` and read back by `preprocess_from_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from transferlab.errors import TransferlabError

__all__ = ["TextPreprocess", "AudioPreprocess", "preprocess_from_dict", "MODALITIES"]

MODALITIES = ("image", "text", "audio")
TOKENIZER_DIR = "tokenizer"
FEATURE_EXTRACTOR_DIR = "feature_extractor"


@dataclass
class TextPreprocess:
    """Texts -> token ids with the backbone's Hugging Face tokenizer, truncated to ``max_length`` tokens.

    ``encode`` tokenizes a whole dataset once (no padding); ``collate`` pads one batch to its longest text.
    """

    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    max_length: int = 128
    modality: ClassVar[str] = "text"

    def encode(self, texts: list[str]) -> list[dict[str, list[int]]]:
        """Token ids (and the tokenizer's other per-token fields) of every text, truncated, unpadded."""
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        return [dict(zip(encoded.keys(), values)) for values in zip(*encoded.values())]

    def collate(self, encoded: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """One padded batch ``{input_ids, attention_mask, ...}``, each ``(B, longest)``."""
        return dict(self.tokenizer.pad(encoded, padding=True, return_tensors="pt"))

    def to_dict(self) -> dict:
        return {"modality": self.modality, "max_length": self.max_length, "tokenizer": TOKENIZER_DIR}

    def save(self, run_dir: Path) -> None:
        self.tokenizer.save_pretrained(str(Path(run_dir) / TOKENIZER_DIR))

    @classmethod
    def from_dict(cls, values: dict, run_dir: Path) -> "TextPreprocess":
        from transformers import AutoTokenizer  # imported here: transformers is slow to import

        path = Path(run_dir) / values.get("tokenizer", TOKENIZER_DIR)
        if not path.is_dir():
            raise TransferlabError(f"{run_dir} has no tokenizer folder {path.name!r}: was it saved by transferlab?")
        return cls(AutoTokenizer.from_pretrained(str(path)), int(values["max_length"]))


@dataclass
class AudioPreprocess:
    """Waveforms (mono float32 at ``sampling_rate``, at most ``max_seconds`` long) -> a padded batch.

    Without a ``feature_extractor`` the batch is ``{"input_values": (B, T), "attention_mask": (B, T)}`` of raw
    samples. With one (a Hugging Face feature extractor: wav2vec2's normalisation, Whisper's log-mel), its output
    is the batch, and ``attention_mask`` (over samples) is added when it returns none, so backbones can always pool
    over the real part of each clip.
    """

    sampling_rate: int
    max_seconds: float = 10.0
    feature_extractor: Any | None = None
    modality: ClassVar[str] = "audio"
    extra: dict = field(default_factory=dict)  # backbone-specific settings kept in model.json

    def collate(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        lengths = torch.tensor([len(wave) for wave in waves])
        mask = (torch.arange(int(lengths.max())) < lengths[:, None]).long()
        if self.feature_extractor is None:
            values = torch.zeros(len(waves), int(lengths.max()))
            for row, wave in enumerate(waves):
                values[row, : len(wave)] = torch.from_numpy(np.asarray(wave, dtype=np.float32))
            return {"input_values": values, "attention_mask": mask}
        options = {"padding": "longest"} if "input_values" in self.feature_extractor.model_input_names else {}
        batch = dict(self.feature_extractor([np.asarray(w, dtype=np.float32) for w in waves],
                                            sampling_rate=self.sampling_rate, return_tensors="pt", **options))
        batch.setdefault("attention_mask", mask)
        return batch

    def to_dict(self) -> dict:
        return {"modality": self.modality, "sampling_rate": self.sampling_rate, "max_seconds": self.max_seconds,
                "feature_extractor": FEATURE_EXTRACTOR_DIR if self.feature_extractor is not None else None,
                "extra": dict(self.extra)}

    def save(self, run_dir: Path) -> None:
        if self.feature_extractor is not None:
            self.feature_extractor.save_pretrained(str(Path(run_dir) / FEATURE_EXTRACTOR_DIR))

    @classmethod
    def from_dict(cls, values: dict, run_dir: Path) -> "AudioPreprocess":
        extractor = None
        if values.get("feature_extractor"):
            from transformers import AutoFeatureExtractor

            path = Path(run_dir) / values["feature_extractor"]
            if not path.is_dir():
                raise TransferlabError(f"{run_dir} has no feature extractor folder {path.name!r}: was it saved by "
                                       "transferlab?")
            extractor = AutoFeatureExtractor.from_pretrained(str(path))
        return cls(int(values["sampling_rate"]), float(values["max_seconds"]), extractor, dict(values.get("extra", {})))


def preprocess_from_dict(values: dict, run_dir: Path):
    """The preprocessing object ``model.json`` describes (images: `PreprocessConfig`), with its files from
    ``run_dir``."""
    from transferlab.backbones.base import PreprocessConfig

    modality = values.get("modality", "image")
    if modality == "text":
        return TextPreprocess.from_dict(values, run_dir)
    if modality == "audio":
        return AudioPreprocess.from_dict(values, run_dir)
    if modality == "image":
        return PreprocessConfig.from_dict({k: v for k, v in values.items() if k != "modality"})
    raise TransferlabError(f"unknown modality {modality!r} in the preprocessing of {run_dir}; expected one of "
                           f"{', '.join(MODALITIES)}")
