"""The inputs of an exported model: batches as named tensors (`transferlab.engine.onnx_runtime`), example batches
to trace and check it, and its preprocessing written out for a consumer.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from transferlab.data import Examples, ImageData, TextData
from transferlab.data.torch_dataset import make_dataset
from transferlab.engine.distributed import make_loader
from transferlab.engine.onnx_runtime import (
    IMAGE_INPUT,
    dynamic_axes,
    model_batch,
    named_inputs,
    require_package,
)

__all__ = [
    "IMAGE_INPUT",
    "dynamic_axes",
    "example_batches",
    "generated_batches",
    "model_batch",
    "named_inputs",
    "preprocessing_description",
    "require_package",
]

# texts of different lengths for checking an exported text model when the user gives no data
_SENTENCES = [
    "a gripping, beautifully acted film.",
    "dull.",
    "the plot wanders for two hours and never finds a reason to care about anyone on screen, sadly.",
    "not bad at all",
    "I expected more from the director of such a fine first film; the second half drags on",
    "wonderful",
    "a mess",
    "it is what it is: a pleasant way to spend an evening, no more and no less",
]


def example_batches(data: Examples, preprocess, *, limit: int = 32, batch_size: int = 8) -> list:
    """Batches of the first ``limit`` examples of ``data`` through the model's own preprocessing."""
    if len(data) > limit:
        data = data.subset(np.arange(limit))
    loader = make_loader(make_dataset(data, preprocess), batch_size=batch_size, shuffle=False)
    return [inputs for inputs, _ in loader]


def generated_batches(preprocess, *, count: int = 8, batch_size: int = 4, seed: int = 0) -> list:
    """Batches of ``count`` made-up examples of the preprocessing's modality (random images; texts of different
    lengths; noise of different lengths), for when no real data is given."""
    rng = np.random.default_rng(seed)
    if preprocess.modality == "image":
        channels, height, width = preprocess.input_size
        shape = (count, height, width) if channels == 1 else (count, height, width, channels)
        data = ImageData(name="generated images", classes=[], labels=None,
                         pixels=rng.integers(0, 256, shape, dtype=np.uint8))
        return example_batches(data, preprocess, limit=count, batch_size=batch_size)
    if preprocess.modality == "text":
        texts = [_SENTENCES[i % len(_SENTENCES)] for i in range(count)]
        return example_batches(TextData(name="generated texts", classes=[], labels=None, texts=texts), preprocess,
                               limit=count, batch_size=batch_size)
    rate = preprocess.sampling_rate
    waves = [rng.normal(0, 0.1, int(rate * (0.5 + 0.25 * i))).astype(np.float32) for i in range(count)]
    return [preprocess.collate(waves[i:i + batch_size]) for i in range(0, count, batch_size)]


def preprocessing_description(preprocess, files: Path | None = None, files_name: str = "") -> dict:
    """How raw examples become the graph's inputs, for a consumer: the preprocessing's settings, for images the
    steps spelled out, and the files it needs (a tokenizer), saved into the folder ``files`` that will be named
    ``files_name`` beside the model (paths relative to the model's folder)."""
    described = {"modality": preprocess.modality, **preprocess.to_dict()}
    if preprocess.modality == "image":
        size = preprocess.input_size[1]
        draft = int(max(preprocess.input_size[1:]) / preprocess.crop_pct) + 1
        described["steps"] = [
            f"JPEG files: decode with PIL's draft mode, image.draft('{preprocess.image_mode}', ({draft}, {draft}))",
            f"convert to {preprocess.image_mode}",
            (f"resize the shorter side to {math.floor(size / preprocess.crop_pct)} px, the longer one in proportion "
             f"(truncated) ({preprocess.interpolation}, as torchvision's Resize)"),
            (f"{preprocess.crop_mode} crop {size}x{size} (offsets round((side - {size}) / 2), as torchvision's "
             "CenterCrop)"),
            "scale pixels to [0, 1], then (x - mean) / std per channel",
            f"layout (batch, channels, height, width) float32, input '{IMAGE_INPUT}'",
        ]
    if preprocess.modality == "text":
        described["steps"] = [
            f"tokenize with the saved tokenizer, truncating to {preprocess.max_length} tokens",
            "pad a batch to its longest text; attention_mask is 1 on real tokens and 0 on padding",
            "int64 inputs (batch, sequence), named as the tokenizer names them",
        ]
    if files is not None:
        for key, value in described.items():
            if isinstance(value, str) and (files / value).exists():
                described[key] = f"{files_name}/{value}"
    return described
