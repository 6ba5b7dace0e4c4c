"""`Examples`: the type of any data container (images, texts or audio), for code that accepts each of them."""

from __future__ import annotations

from transferlab.data.audio_data import AudioData
from transferlab.data.image_data import ImageData
from transferlab.data.text_data import TextData

__all__ = ["Examples"]

Examples = ImageData | TextData | AudioData
"""Any container of examples; they share `transferlab.data.image_data.LabeledExamples` (name, classes, labels,
domain, ``subset``)."""
