"""From `ImageData` to tensors: the backbone's preprocessing (timm transforms) applied per image."""

from __future__ import annotations

import torch
from timm.data import create_transform
from torch.utils.data import Dataset, get_worker_info

from transferlab.backbones.base import PreprocessConfig
from transferlab.data.image_data import ImageData

__all__ = ["ImageDataset", "build_transform"]

UNLABELED = -1


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
        """Example ``index`` as a PIL image in the backbone's mode, decoded no larger than the transform needs."""
        image = self.data.load_image(index, draft=(self.mode, self.draft_size))
        return image if image.mode == self.mode else image.convert(self.mode)

    def label(self, index: int) -> torch.Tensor:
        """The class index of example ``index``, or -1 for unlabeled data."""
        return torch.tensor(UNLABELED if self.data.labels is None else int(self.data.labels[index]), dtype=torch.long)

    def __getitem__(self, index: int):
        cached = self._tensors.get(index) if self._tensors is not None else None
        if cached is None:
            cached = self.transform(self.image(index))
            if self._tensors is not None and get_worker_info() is None:
                self._tensors[index] = cached
        return cached, self.label(index)
