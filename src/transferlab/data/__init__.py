"""Image data: the `ImageData` container, loading it from a data spec, and index splits of labeled data."""

from transferlab.data.audio_data import AudioData
from transferlab.data.image_data import (
    ImageData,
    ImageReadError,
    align_classes,
    keep_classes,
)
from transferlab.data.specs import (
    choose_split,
    examples_from_paths,
    load_data,
    load_splits,
)
from transferlab.data.splits import stratified_split, take_per_class
from transferlab.data.text_data import TextData

Examples = ImageData | TextData | AudioData  # any container of examples: images, texts or audio clips

__all__ = [
    "AudioData",
    "Examples",
    "TextData",
    "ImageData",
    "ImageReadError",
    "align_classes",
    "keep_classes",
    "choose_split",
    "examples_from_paths",
    "load_data",
    "load_splits",
    "stratified_split",
    "take_per_class",
]
