"""Any image a user can hand in, in any PIL mode, as the 8-bit picture a backbone reads (``"RGB"`` or ``"L"``).

PIL's own ``convert("RGB")`` clips 16-bit, 32-bit integer and float values above 255 (a 16-bit photo turns almost
white) and drops alpha, leaving whatever colour lies under transparent pixels. Here:

- 16-bit images (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``) are scaled from 0..65535 to 0..255.
- 32-bit integer (``I``) and float (``F``) images have no fixed range; their values are read in the smallest of the
  usual ranges that holds the image's largest value: 0..255, then 0..65535 (PIL reads 16-bit PGM files as ``I``),
  then 0..2**31-1 for ``I``; 0..1, then 0..255, then 0..65535, then 0..its own maximum for ``F``. Negative and
  non-finite values count as 0. (So a 16-bit image darker than 256/65536 everywhere is read as 8-bit, i.e. brightened.)
- 16-bit RGB(A) PNGs are read by PIL as 8-bit ``RGB``/``RGBA`` (the high byte of each value): nothing to do.
- Transparency (``LA``, ``PA``, ``RGBA``, ``RGBa``, ``P`` or ``L``/``RGB`` with a transparent colour) is
  composited on `TRANSPARENT_BACKGROUND`, white: what an image viewer shows and what the person who labeled the
  picture saw. Partly transparent pixels are blended.
- Bilevel (``1``), palette (``P``), ``CMYK``, ``YCbCr``, ``LAB`` and ``HSV`` images are converted by PIL.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["TRANSPARENT_BACKGROUND", "to_model_mode", "to_8bit"]

TRANSPARENT_BACKGROUND = (255, 255, 255)

_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_INT_RANGES = (255, 65535, 2**31 - 1)
_FLOAT_RANGES = (1.0, 255.0, 65535.0)


def to_model_mode(image: Image.Image, mode: str) -> Image.Image:
    """``image`` as an 8-bit image in ``mode`` (a backbone's ``image_mode``, ``"RGB"`` or ``"L"``), scaled and
    composited as the module docstring says."""
    image = to_8bit(image)
    return image if image.mode == mode else image.convert(mode)


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` as an 8-bit ``"L"`` (grey sources) or ``"RGB"`` image with no alpha, whatever its mode."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_scaled_to_uint8(np.asarray(image), mode), "L")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return _composited(image.convert("RGBA"))
    if mode in ("L", "RGB"):
        return image
    return image.convert("L" if mode == "1" else "RGB")


def _composited(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (*TRANSPARENT_BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scaled_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """0..255 values of a 16-bit, 32-bit integer or float image (ranges in the module docstring)."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    largest = float(values.max(initial=0))
    if mode.startswith("I;16"):
        top = 65535.0
    else:
        ranges = _FLOAT_RANGES if mode == "F" else _INT_RANGES
        top = next((float(limit) for limit in ranges if largest <= limit), largest)
    return np.rint(values * (255.0 / top)).clip(0, 255).astype(np.uint8)
