"""Every PIL mode a user can hand in decodes to the same 8-bit picture: high bit depths scaled, not clipped;
transparent pixels on white. Each case is a file on disk read through `ImageDataset`, as training and prediction
read it, and compared with the same picture saved as plain 8-bit RGB."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.backbones.base import PreprocessConfig
from transferlab.data import ImageData
from transferlab.data.image_modes import TRANSPARENT_BACKGROUND, to_model_mode
from transferlab.data.torch_dataset import ImageDataset

HEIGHT, WIDTH = 24, 32
RGB_CONFIG = PreprocessConfig(input_size=(3, HEIGHT, WIDTH), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
GREY_CONFIG = PreprocessConfig(input_size=(1, HEIGHT, WIDTH), mean=(0.5,), std=(0.25,))


def picture() -> np.ndarray:
    """``(H, W, 3)`` uint8: colour gradients over the whole 0..255 range, bright and dark."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([x * 255 // (WIDTH - 1), y * 255 // (HEIGHT - 1), (x + y) * 255 // (WIDTH + HEIGHT - 2)],
                    axis=-1).astype(np.uint8)


def grey() -> np.ndarray:
    """``(H, W)`` uint8: the picture in grey (PIL's luma), 0 to 255."""
    return np.asarray(Image.fromarray(picture()).convert("L"))


def alpha() -> np.ndarray:
    """``(H, W)`` uint8: opaque, with a transparent block and a half-transparent block."""
    values = np.full((HEIGHT, WIDTH), 255, dtype=np.uint8)
    values[2:10, 2:12] = 0
    values[12:20, 16:28] = 128
    return values


def on_white(rgb: np.ndarray, a: np.ndarray) -> np.ndarray:
    weight = a[..., None].astype(np.float64) / 255
    background = np.array(TRANSPARENT_BACKGROUND, dtype=np.float64)
    return np.rint(rgb * weight + background * (1 - weight)).astype(np.uint8)


def grey_rgb(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1)


def write_png_rgb16(path: Path, values: np.ndarray) -> None:
    """A 16-bit RGB PNG, written by hand: PIL reads such files but cannot write them."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = values.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, colour type 2 (RGB)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def case_1(path):
    bits = np.where(grey() >= 128, 255, 0).astype(np.uint8)
    Image.fromarray(bits).convert("1", dither=Image.Dither.NONE).save(path.with_suffix(".png"))
    return path.with_suffix(".png"), grey_rgb(bits)


def case_L(path):
    Image.fromarray(grey()).save(path.with_suffix(".png"))
    return path.with_suffix(".png"), grey_rgb(grey())


def case_LA(path):
    Image.fromarray(np.stack([grey(), alpha()], axis=-1), "LA").save(path.with_suffix(".png"))
    return path.with_suffix(".png"), on_white(grey_rgb(grey()), alpha())


def case_P_with_transparency(path):
    indices = np.maximum(grey(), 1)
    indices[2:10, 2:12] = 0  # palette entry 0 is black, and transparent
    image = Image.fromarray(indices, "L").convert("P")
    image.putpalette([value for level in range(256) for value in (level, level, level)])
    image.save(path.with_suffix(".png"), transparency=0)
    expected = grey_rgb(indices)
    expected[2:10, 2:12] = TRANSPARENT_BACKGROUND
    return path.with_suffix(".png"), expected


def case_RGB(path):
    Image.fromarray(picture()).save(path.with_suffix(".png"))
    return path.with_suffix(".png"), picture()


def case_RGBA(path):
    under = picture().copy()
    under[alpha() == 0] = np.random.default_rng(0).integers(0, 256, (int((alpha() == 0).sum()), 3))  # noise
    Image.fromarray(np.concatenate([under, alpha()[..., None]], axis=-1), "RGBA").save(path.with_suffix(".png"))
    return path.with_suffix(".png"), on_white(picture(), alpha())


def case_CMYK(path):
    Image.fromarray(picture()).convert("CMYK").save(path.with_suffix(".tif"))
    return path.with_suffix(".tif"), picture()


def case_I16(path):
    Image.fromarray(grey().astype(np.uint16) * 257).save(path.with_suffix(".png"))  # PIL reads it as I;16
    return path.with_suffix(".png"), grey_rgb(grey())


def case_I_from_16bit_pgm(path):
    Image.fromarray(grey().astype(np.uint16) * 257).save(path.with_suffix(".pgm"))  # PIL reads it as I
    return path.with_suffix(".pgm"), grey_rgb(grey())


def case_I_with_8bit_values(path):
    Image.fromarray(grey().astype(np.int32)).save(path.with_suffix(".tif"))
    return path.with_suffix(".tif"), grey_rgb(grey())


def case_F_from_0_to_1(path):
    Image.fromarray(grey().astype(np.float32) / 255).save(path.with_suffix(".tif"))
    return path.with_suffix(".tif"), grey_rgb(grey())


def case_F_from_0_to_255(path):
    Image.fromarray(grey()).convert("F").save(path.with_suffix(".tif"))  # PIL's own float scale
    return path.with_suffix(".tif"), grey_rgb(grey())


def case_RGB_16bit_png(path):
    noise = np.random.default_rng(0).integers(0, 257, picture().shape)  # the low byte: PIL keeps the high one
    write_png_rgb16(path.with_suffix(".png"), picture().astype(np.int64) * 257 + noise * (picture() < 255))
    return path.with_suffix(".png"), picture()


CASES = {
    "1": case_1, "L": case_L, "LA": case_LA, "P": case_P_with_transparency, "RGB": case_RGB, "RGBA": case_RGBA,
    "CMYK": case_CMYK, "I;16": case_I16, "I": case_I_from_16bit_pgm, "I (8-bit values)": case_I_with_8bit_values,
    "F": case_F_from_0_to_1, "F (0..255)": case_F_from_0_to_255, "RGB (16-bit PNG)": case_RGB_16bit_png,
}


def decoded(path: Path, config: PreprocessConfig = RGB_CONFIG) -> tuple[np.ndarray, torch.Tensor]:
    """The 8-bit picture and the model's input tensor for one file, as training and prediction read it."""
    dataset = ImageDataset(ImageData(name="t", classes=[], labels=None, paths=[path]), config)
    return np.asarray(dataset.image(0), dtype=np.int64), dataset[0][0]


@pytest.mark.parametrize("mode", CASES)
def test_every_mode_decodes_to_the_same_picture_as_8bit_rgb(tmp_path, mode):
    path, expected = CASES[mode](tmp_path / "image")
    reference = tmp_path / "reference.png"
    Image.fromarray(expected).save(reference)
    stored = Image.open(path).mode
    assert stored == mode.split(" ")[0], f"the file was meant to open as {mode}, not {stored}"

    pixels, tensor = decoded(path)
    reference_pixels, reference_tensor = decoded(reference)

    assert pixels.shape == (HEIGHT, WIDTH, 3)
    assert np.abs(pixels - expected.astype(np.int64)).max() <= 1
    assert torch.allclose(tensor, reference_tensor, atol=1 / 255 / 0.25 + 1e-6)  # 1 level, after normalising


def test_a_16bit_image_is_scaled_not_clipped_to_white(tmp_path):
    """The issue's case: a 16-bit PNG went through convert("RGB"), which clipped it almost white."""
    path, _ = case_I16(tmp_path / "photo")
    pixels, _ = decoded(path)
    assert pixels.mean() == pytest.approx(grey().mean(), abs=1) and pixels.mean() < 200


def test_a_grey_backbone_reads_high_bit_depth_and_transparent_images_in_grey(tmp_path):
    for case in (case_I16, case_LA, case_RGBA):
        path, expected = case(tmp_path / case.__name__)
        pixels, tensor = decoded(path, GREY_CONFIG)
        expected_grey = np.asarray(Image.fromarray(expected).convert("L"), dtype=np.int64)
        assert tensor.shape == (1, HEIGHT, WIDTH) and np.abs(pixels - expected_grey).max() <= 1, case.__name__


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16B", ">u2"), ("I;16L", "<u2")])
def test_16bit_images_of_either_byte_order_scale_in_memory(mode, dtype):
    image = Image.frombytes(mode, (WIDTH, HEIGHT), (grey().astype(np.uint16) * 257).astype(dtype).tobytes())
    assert image.mode == mode
    assert np.array_equal(np.asarray(to_model_mode(image, "L")), grey())


def test_float_images_with_nan_negative_or_huge_values_stay_in_range():
    values = np.array([[np.nan, -5.0, np.inf], [0.0, 70000.0, 140000.0]], dtype=np.float32)
    out = np.asarray(to_model_mode(Image.fromarray(values, "F"), "L"))
    assert out.tolist() == [[0, 0, 0], [0, 128, 255]]
