"""Data of any modality: the containers (`ImageData`, `TextData`, `AudioData`, any of them an `Examples`), loading
them from a data spec, and index splits of labeled data (the validation hold-out, n examples per class)."""

from transferlab.data.audio_data import AudioData, AudioReadError
from transferlab.data.class_names import require_two_classes
from transferlab.data.examples import Examples
from transferlab.data.image_data import ImageData, ImageReadError, align_classes, keep_classes
from transferlab.data.specs import choose_split, examples_from_paths, load_data, load_splits
from transferlab.data.splits import hold_out_indices, stratified_split, take_per_class
from transferlab.data.text_data import TextData

__all__ = [
    "Examples",
    "ImageData",
    "TextData",
    "AudioData",
    "ImageReadError",
    "AudioReadError",
    "align_classes",
    "keep_classes",
    "require_two_classes",
    "choose_split",
    "examples_from_paths",
    "load_data",
    "load_splits",
    "hold_out_indices",
    "stratified_split",
    "take_per_class",
]
