"""Images above the pixel limit (decompression bombs, or just huge photos): one transferlab error naming the file, its
size and the limit, or skipped with --skip-bad-files; the limit is --max-image-pixels, max_image_pixels in YAML, or
TRANSFERLAB_MAX_IMAGE_PIXELS (evaluate, predict); PIL's own warning and error never reach the user."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from transferlab.cli import app
from transferlab.data import ImageData, ImageReadError, examples_from_paths, load_data, load_splits
from transferlab.errors import TransferlabError

runner = CliRunner()
PIL_LIMIT = Image.MAX_IMAGE_PIXELS
DEFAULT_LIMIT = 89_478_485  # PIL's default, transferlab's default


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` grey pixels (PIL reads the size from the header; no pixel data
    follows, so a test need not allocate a 100-megapixel image)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))
    return path


def write_image(path: Path, size: int = 32, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


def folder_with(tmp_path: Path, width: int, height: int) -> tuple[Path, Path]:
    """Class folders a/ and b/ of small images, a/ also holding one image of ``width`` x ``height``."""
    root = tmp_path / "data"
    for name in ("a", "b"):
        for i in range(2):
            write_image(root / name / f"{i}.png", value=100 * (name == "b"))
    return root, write_png_header(root / "a" / "huge.png", width, height)


def caught_warnings(load):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load()
    return result, [str(w.message) for w in caught]


@pytest.mark.parametrize("side", [10_000, 20_000])  # above PIL's warning limit; above twice it (PIL's own error)
def test_an_image_above_the_limit_is_one_error_naming_the_file_its_size_and_the_limit(tmp_path, side):
    root, huge = folder_with(tmp_path, side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would fail here
        with pytest.raises(ImageReadError) as error:
            load_splits(str(root))
    message = str(error.value)
    for fragment in (str(huge), f"{side}x{side} ({side * side:,} pixels)", f"limit of {DEFAULT_LIMIT:,}",
                     "--max-image-pixels N (max_image_pixels: N in YAML)", "TRANSFERLAB_MAX_IMAGE_PIXELS",
                     "--skip-bad-files (skip_bad_files: true in YAML)"):
        assert fragment in message, message
    assert "DOS attack" not in message and Image.MAX_IMAGE_PIXELS == PIL_LIMIT  # PIL's limit is restored


def test_an_image_above_the_limit_is_skipped_with_skip_bad_files_and_no_pil_warning(tmp_path):
    root, huge = folder_with(tmp_path, 10_000, 10_000)
    data, messages = caught_warnings(lambda: load_data(str(root), split_preference=("all",), skip_bad_files=True))
    assert len(data) == 4 and huge not in data.paths
    assert len(messages) == 1 and "skipped 1 bad file" in messages[0] and str(huge) in messages[0], messages


def test_the_limit_is_a_setting_and_an_environment_variable(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for name in ("a", "b"):
        write_image(root / name / "0.png", size=32)  # 1,024 pixels
    with pytest.raises(ImageReadError, match="32x32 \\(1,024 pixels\\), more than the limit of 1,000 pixels"):
        load_splits(str(root), max_image_pixels=1000)
    assert len(load_splits(str(root), max_image_pixels=1024)["all"]) == 2

    monkeypatch.setenv("TRANSFERLAB_MAX_IMAGE_PIXELS", "1_000")
    with pytest.raises(ImageReadError, match="limit of 1,000 pixels"):
        examples_from_paths([root / "a" / "0.png"])  # what `transferlab predict` reads
    assert len(load_splits(str(root), max_image_pixels=5000)["all"]) == 2  # the setting wins over the variable
    monkeypatch.setenv("TRANSFERLAB_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(TransferlabError, match="TRANSFERLAB_MAX_IMAGE_PIXELS='lots' is not a positive number"):
        load_splits(str(root))


def test_decoding_checks_the_limit_too_with_transferlabs_message(tmp_path):
    huge = write_png_header(tmp_path / "huge.png", 20_000, 20_000)
    with pytest.raises(ImageReadError, match="20000x20000 .*more than the limit"):
        ImageData(name="t", classes=[], labels=None, paths=[huge]).load_image(0)
    small = write_image(tmp_path / "small.png", size=32)
    with pytest.raises(ImageReadError, match="limit of 1,000"):
        ImageData(name="t", classes=[], labels=None, paths=[small], max_image_pixels=1000).load_image(0)
    data = examples_from_paths([small], max_image_pixels=2000)
    assert data.max_image_pixels == 2000 and data.subset([0]).max_image_pixels == 2000
    assert data.load_image(0).size == (32, 32)


def test_fit_takes_max_image_pixels_from_the_flag_and_from_yaml(tmp_path):
    root = tmp_path / "data"
    for name in ("a", "b"):
        for i in range(3):
            write_image(root / name / f"{i}.png", size=32)
    base = ["fit", "--train", str(root), "--method", "scratch", "--backbone", "lenet", "--epochs", "1", "-q"]
    result = runner.invoke(app, [*base, "--max-image-pixels", "1000", "--out", str(tmp_path / "r1")])
    assert result.exit_code == 2 and "limit of 1,000 pixels" in result.output and "0.png" in result.output, \
        result.output
    config = tmp_path / "run.yaml"
    config.write_text("max_image_pixels: 1000\n")
    result = runner.invoke(app, [*base, "--config", str(config), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "limit of 1,000 pixels" in result.output, result.output
    result = runner.invoke(app, [*base, "--max-image-pixels", "0", "--out", str(tmp_path / "r3")])
    assert result.exit_code == 2 and "max_image_pixels" in result.output, result.output
