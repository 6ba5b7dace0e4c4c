"""From data to tensors with the backbone's preprocessing: timm transforms per image, the tokenizer for texts, decoding
and resampling for audio. `make_dataset` picks the dataset for the backbone's modality and checks the data fits it;
text and audio datasets carry a ``collate_fn`` (dynamic padding) that `transferlab.engine.distributed.make_loader`
uses."""

from __future__ import annotations

import logging

import torch
from timm.data import create_transform
from torch.utils.data import Dataset, get_worker_info

from transferlab.backbones.base import PreprocessConfig
from transferlab.backbones.preprocess import AudioPreprocess, TextPreprocess
from transferlab.backbones.registry import DEFAULT_BACKBONES
from transferlab.data.audio_data import AudioData
from transferlab.data.examples import Examples
from transferlab.data.image_data import ImageData
from transferlab.data.image_modes import to_model_mode
from transferlab.data.text_data import TextData
from transferlab.errors import TransferlabError

__all__ = ["ImageDataset", "TextDataset", "AudioDataset", "build_transform", "make_dataset", "DATA_MODALITY"]

UNLABELED = -1
log = logging.getLogger("transferlab")


def build_transform(preprocess: PreprocessConfig, *, train: bool = False, augment: bool = False, hflip: float = 0.5,
                    scale: tuple[float, float] = (0.08, 1.0)):
    """timm's transform for the backbone's config: resize + center crop + normalise; with ``train and augment``,
    random resized crops (area share in ``scale``), horizontal flips (probability ``hflip``) and colour jitter."""
    return create_transform(
        input_size=preprocess.input_size,
        is_training=train and augment,
        interpolation=preprocess.interpolation,
        mean=preprocess.mean,
        std=preprocess.std,
        crop_pct=preprocess.crop_pct,
        crop_mode=preprocess.crop_mode,
        **({"hflip": hflip, "scale": scale} if train and augment else {}),
    )


def _label_tensor(labels, index: int) -> torch.Tensor:
    return torch.tensor(UNLABELED if labels is None else int(labels[index]), dtype=torch.long)


# in-memory pixel data whose preprocessed tensors fit in this many bytes keeps them after the first use
TENSOR_CACHE_BYTES = 2 * 1024**3


class ImageDataset(Dataset):
    """Yields ``(image_tensor (C, H, W), label)``; the label is -1 for unlabeled data.

    JPEGs are decoded at reduced size when the target resolution allows it (PIL draft mode), which makes decoding
    several times cheaper for photos much larger than the input size. Images held in memory (``data.pixels``, e.g.
    MNIST) whose transform is deterministic (no augmentation) are preprocessed once and kept, when all of them fit
    in `TENSOR_CACHE_BYTES`; in the main process only (a loader's worker processes would each hold a copy).
    """

    def __init__(self, data: ImageData, preprocess: PreprocessConfig, *, train: bool = False, augment: bool = False):
        self.data = data
        self.mode = preprocess.image_mode
        self.transform = build_transform(preprocess, train=train, augment=augment)
        # decode at least this large so the resize (then center crop) still starts from enough pixels
        self.draft_size = int(max(preprocess.input_size[1:]) / preprocess.crop_pct) + 1
        tensor_bytes = len(data) * 4 * int(torch.tensor(preprocess.input_size).prod())
        deterministic = not (train and augment)
        self._tensors: dict[int, torch.Tensor] | None = (
            {} if data.pixels is not None and deterministic and tensor_bytes <= TENSOR_CACHE_BYTES else None
        )

    def __len__(self) -> int:
        return len(self.data)

    def image(self, index: int):
        """Example ``index`` as an 8-bit PIL image in the backbone's mode, decoded no larger than the transform needs
        (high-bit-depth images scaled, transparency composited on white: `transferlab.data.image_modes`)."""
        return to_model_mode(self.data.load_image(index, draft=(self.mode, self.draft_size)), self.mode)

    def label(self, index: int) -> torch.Tensor:
        """The class index of example ``index``, or -1 for unlabeled data."""
        return _label_tensor(self.data.labels, index)

    def __getitem__(self, index: int):
        cached = self._tensors.get(index) if self._tensors is not None else None
        if cached is None:
            cached = self.transform(self.image(index))
            if self._tensors is not None and get_worker_info() is None:
                self._tensors[index] = cached
        return cached, self.label(index)


class _PaddedDataset(Dataset):
    """What the text and audio datasets share: ``data`` with labels, and batches padded by the preprocessing's
    ``collate`` (``collate_inputs`` for inputs alone, ``collate_fn`` for ``(inputs, label)`` items)."""

    def __init__(self, data, preprocess):
        self.data = data
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.data)

    def label(self, index: int) -> torch.Tensor:
        return _label_tensor(self.data.labels, index)

    def collate_inputs(self, inputs: list) -> dict[str, torch.Tensor]:
        return self.preprocess.collate(inputs)

    def collate_fn(self, items: list) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self.collate_inputs([x for x, _ in items]), torch.stack([label for _, label in items])


class TextDataset(_PaddedDataset):
    """Yields ``(token_fields, label)``: a text's token ids (tokenized once, for the whole dataset, on creation);
    ``collate_fn`` pads a batch to its longest text."""

    def __init__(self, data: TextData, preprocess: TextPreprocess):
        super().__init__(data, preprocess)
        self.encoded = preprocess.encode(data.texts)
        self.lengths = [len(fields["input_ids"]) for fields in self.encoded]  # training batches group by length

    def __getitem__(self, index: int):
        return self.encoded[index], self.label(index)


class AudioDataset(_PaddedDataset):
    """Yields ``(waveform, label)``: a clip decoded to mono at the backbone's rate, at most ``max_seconds`` long
    (while training with ``augment``, a random ``max_seconds`` window of a longer clip; otherwise its start);
    ``collate_fn`` pads a batch to its longest clip."""

    def __init__(self, data: AudioData, preprocess: AudioPreprocess, *, train: bool = False, augment: bool = False):
        super().__init__(data, preprocess)
        self.random_crop = train and augment

    def waveform(self, index: int):
        rate, seconds = self.preprocess.sampling_rate, self.preprocess.max_seconds
        if not self.random_crop:
            return self.data.load_waveform(index, rate, seconds)
        wave = self.data.load_waveform(index, rate)
        keep = max(1, int(round(seconds * rate)))
        start = int(torch.randint(0, len(wave) - keep + 1, ()).item()) if len(wave) > keep else 0
        return wave[start : start + keep]

    def __getitem__(self, index: int):
        return self.waveform(index), self.label(index)


# which data container each modality reads
DATA_MODALITY = {ImageData: "image", TextData: "text", AudioData: "audio"}


def make_dataset(data: Examples, preprocess, *, train: bool = False, augment: bool = False) -> Dataset:
    """The dataset that turns ``data`` into the inputs ``preprocess`` describes (see the module docstring).

    Raises:
        TransferlabError: when the data is of another modality than the backbone (e.g. texts for an image
            backbone); the message names both.
    """
    modality = DATA_MODALITY.get(type(data))
    if modality != preprocess.modality:
        raise TransferlabError(
            f"{data.name} holds {modality or type(data).__name__} data, but the backbone reads {preprocess.modality}; "
            f"choose a {modality} backbone (e.g. {DEFAULT_BACKBONES.get(modality)}, the default for {modality} data "
            f"when --backbone is not given) or {preprocess.modality} data"
        )
    if modality == "text":
        if train and augment:
            log.warning("--augment has no effect on text: %s is used as it is", data.name)
        return TextDataset(data, preprocess)
    if modality == "audio":
        return AudioDataset(data, preprocess, train=train, augment=augment)
    return ImageDataset(data, preprocess, train=train, augment=augment)

