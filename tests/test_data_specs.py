"""Data specs -> ImageData: every loader on tiny synthetic files, every bad input, and the real data sets."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from typer.testing import CliRunner

from transferlab.cli import app
from transferlab.data import ImageData, ImageReadError, load_data, load_splits, require_two_classes
from transferlab.errors import TransferlabError

DIGITS = [str(digit) for digit in range(10)]


def write_image(path: Path, value: int = 0, size: tuple[int, int] = (4, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, color=value).save(path)
    return path


def write_class_tree(root: Path, counts: dict[str, int], ext: str = ".png") -> Path:
    for name, count in counts.items():
        for index in range(count):
            write_image(root / name / f"{name}_{index}{ext}", value=10 * index)
    return root


def write_idx(path: Path, array: np.ndarray, magic: int) -> Path:
    header = magic.to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_mnist(root: Path, gz: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    data = {}
    for split, prefix, count in (("train", "train", 3), ("test", "t10k", 2)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = np.arange(count, dtype=np.uint8) + 4
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, 0x0803)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, 0x0801)
        data[split] = images, labels
    return data


def usps_line(label: str, values: list[float]) -> str:
    return " ".join([label, *(f"{value:.4f}" for value in values)]) + " \n"


def write_usps(root: Path, train_lines: list[str], test_lines: list[str]) -> Path:
    for name, lines in (("zip.train.gz", train_lines), ("zip.test.gz", test_lines)):
        (root / name).write_bytes(gzip.compress("".join(lines).encode()))
    return root


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- loaders on synthetic data ----------------------------------------------------------------------------------


def test_sklearn_digits_scales_to_uint8():
    data = load_splits("sklearn-digits")
    assert list(data) == ["all"]
    digits = data["all"]
    assert digits.pixels.shape == (1797, 8, 8) and digits.pixels.dtype == np.uint8
    assert digits.pixels.max() == 255 and digits.pixels.min() == 0
    assert digits.classes == DIGITS and digits.labels.dtype == np.int64
    assert digits.labels[:3].tolist() == [0, 1, 2]
    assert digits.name == "sklearn-digits"


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_idx_files(tmp_path, gz):
    expected = write_mnist(tmp_path, gz=gz)
    data = load_splits(f"mnist:{tmp_path}", domain="source")
    assert list(data) == ["train", "test"]
    for split, (images, labels) in expected.items():
        np.testing.assert_array_equal(data[split].pixels, images)
        np.testing.assert_array_equal(data[split].labels, labels)
        assert data[split].classes == DIGITS
        assert data[split].domain == "source"
        assert data[split].name == f"mnist:{tmp_path}@{split}"


def test_mnist_split_selector_reads_only_that_split(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()  # would fail if the train split were read
    data = load_splits(f"mnist:{tmp_path}@test")
    assert list(data) == ["test"] and len(data["test"]) == 2
    assert len(load_data(f"mnist:{tmp_path}", split_preference=("val", "test"))) == 2


def test_usps_decodes_values_and_float_labels(tmp_path):
    first = [-1.0] * 128 + [1.0] * 127 + [0.0]
    write_usps(tmp_path, [usps_line("6.0000", first), usps_line("1.0000", [0.5] * 256)], [usps_line("9", [1.0] * 256)])
    data = load_splits(f"usps:{tmp_path}")
    train = data["train"]
    assert train.pixels.shape == (2, 16, 16) and train.pixels.dtype == np.uint8
    assert train.labels.tolist() == [6, 1] and data["test"].labels.tolist() == [9]
    assert train.pixels[0, 0, 0] == 0 and train.pixels[0, 15, 14] == 255
    assert train.pixels[0, 15, 15] == 128  # (0 + 1) / 2 * 255 = 127.5 -> 128
    assert train.pixels[0].ravel()[128] == 255  # row-major: value 129 is row 8, column 0
    assert train.pixels[1, 3, 3] == 191  # 0.75 * 255 = 191.25
    assert train.classes == DIGITS


def test_class_folders_give_one_labeled_split(tmp_path):
    root = write_class_tree(tmp_path / "pets", {"dogs": 2, "cats": 3})
    write_image(root / "cats" / "nested" / "deep.JPG")  # recursive, extension case-insensitive
    write_image(root / "dogs" / "with space.png")
    write_image(root / "dogs" / ".hidden.png")
    write_image(root / "dogs" / ".cache" / "thumb.png")
    (root / "dogs" / "notes.txt").write_text("not an image")
    data = load_splits(str(root))
    assert list(data) == ["all"]
    pets = data["all"]
    assert pets.classes == ["cats", "dogs"]
    assert len(pets) == 7
    names = {path.name: pets.classes[label] for path, label in zip(pets.paths, pets.labels)}
    assert names["deep.JPG"] == "cats" and names["with space.png"] == "dogs" and names["cats_0.png"] == "cats"
    assert ".hidden.png" not in names and "thumb.png" not in names and "notes.txt" not in names
    assert pets.name == str(root) and pets.pixels is None
    assert np.asarray(pets.load_image(0)).shape == (4, 4)


def test_split_folders_share_class_indices(tmp_path):
    write_class_tree(tmp_path / "train", {"a": 2, "b": 2, "c": 1})
    write_class_tree(tmp_path / "val", {"b": 1, "c": 1})
    write_class_tree(tmp_path / "test", {"a": 1, "c": 2})
    write_class_tree(tmp_path / "extras", {"x": 1})
    with pytest.warns(UserWarning, match="ignoring folders \\['extras'\\]"):
        data = load_splits(f"folder:{tmp_path}")
    assert list(data) == ["train", "val", "test"]
    assert all(split.classes == ["a", "b", "c"] for split in data.values())
    assert data["val"].labels.tolist() == [1, 2]
    assert data["test"].labels.tolist() == [0, 2, 2]
    assert data["val"].name == f"folder:{tmp_path}@val"


def test_numeric_class_names_sort_by_value(tmp_path):
    write_class_tree(tmp_path, {"10": 1, "2": 1, "1": 1})
    assert load_splits(str(tmp_path))["all"].classes == ["1", "2", "10"]


def test_folder_of_images_without_class_folders_is_unlabeled(tmp_path):
    for index in range(3):
        write_image(tmp_path / f"img{index}.png")
    data = load_splits(str(tmp_path), domain="target")["all"]
    assert data.labels is None and data.classes == [] and len(data) == 3 and not data.has_labels


def test_csv_manifest_with_labels(tmp_path):
    write_image(tmp_path / "imgs" / "x.png")
    write_image(tmp_path / "imgs" / "y.png")
    outside = write_image(tmp_path.parent / f"{tmp_path.name}_outside" / "z.png")
    manifest = write_csv(tmp_path / "list.csv", f"path,label\nimgs/x.png,dog\nimgs/y.png,cat\n{outside},dog\n")
    data = load_splits(str(manifest))["all"]
    assert data.classes == ["cat", "dog"]
    assert data.labels.tolist() == [1, 0, 1]
    assert data.paths[0] == tmp_path / "imgs" / "x.png" and data.paths[2] == outside
    assert load_splits(f"csv:{manifest}")["all"].labels.tolist() == [1, 0, 1]


def test_csv_manifest_without_labels_is_unlabeled(tmp_path):
    write_image(tmp_path / "x.png")
    data = load_splits(str(write_csv(tmp_path / "u.csv", "path\nx.png\n")))["all"]
    assert data.labels is None and data.classes == []


def test_existing_path_with_at_sign_is_a_path(tmp_path):
    root = write_class_tree(tmp_path / "run@val", {"a": 1, "b": 1})
    assert list(load_splits(str(root))) == ["all"]
    assert len(load_splits(f"{root}@all")["all"]) == 2


def test_load_data_follows_preference(tmp_path):
    root = tmp_path / "split"
    write_class_tree(root / "train", {"a": 2, "b": 2})
    write_class_tree(root / "val", {"a": 1, "b": 1})
    assert load_data(str(root), split_preference=("test", "val")).name == f"{root}@val"
    assert load_data(f"{root}@train", split_preference=("val",)).name == f"{root}@train"
    single = write_class_tree(tmp_path / "flat", {"a": 1, "b": 1})
    assert len(load_data(str(single), split_preference=("test",))) == 2
    with pytest.raises(TransferlabError, match="has splits train, val") as error:
        load_data(str(root), split_preference=("test",))
    assert "@SPLIT" in str(error.value)


def test_bad_domain_names_the_choices(tmp_path):
    with pytest.raises(TransferlabError, match="'sauce'.*source, target"):
        load_splits("sklearn-digits", domain="sauce")


# --- bad input ---------------------------------------------------------------------------------------------------


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(TransferlabError, match="no such file or folder") as error:
        load_splits(str(missing))
    assert str(missing) in str(error.value)
    with pytest.raises(TransferlabError, match="did you mean 'sklearn-digits'"):
        load_splits("sklearn_digits")


def test_unknown_kind_suggests_close_kinds(tmp_path):
    with pytest.raises(TransferlabError, match="unknown data kind 'foo'.*mnist, usps"):
        load_splits(f"foo:{tmp_path}")
    with pytest.raises(TransferlabError, match="did you mean 'mnist'"):
        load_splits(f"mnits:{tmp_path}")


def test_unknown_split_names_valid_ones(tmp_path):
    write_class_tree(tmp_path, {"a": 1, "b": 1})
    with pytest.raises(TransferlabError, match="unknown split 'tset'.*did you mean 'test'.*train, val, test"):
        load_splits(f"{tmp_path}@tset")
    with pytest.raises(TransferlabError, match="split 'val' not found.*it has: all"):
        load_splits(f"{tmp_path}@val")


def test_empty_class_folder_is_named(tmp_path):
    write_class_tree(tmp_path, {"a": 1, "b": 1})
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(TransferlabError, match="class folder .*empty holds no images"):
        load_splits(str(tmp_path))


def test_single_class_data_loads_for_evaluation_and_training_refuses_it(tmp_path):
    write_class_tree(tmp_path / "data", {"only": 2})
    folder = load_splits(str(tmp_path / "data"))["all"]
    assert folder.classes == ["only"] and list(folder.labels) == [0, 0]
    write_image(tmp_path / "x.png")
    manifest = load_splits(str(write_csv(tmp_path / "one.csv", "path,label\nx.png,cat\n")))["all"]
    assert manifest.classes == ["cat"] and list(manifest.labels) == [0]
    with pytest.raises(TransferlabError, match="training data .*one.csv has examples of a single class \\('cat'\\)"):
        require_two_classes(manifest, "training")
    result = CliRunner().invoke(app, ["fit", "--train", str(tmp_path / "data"), "--method", "scratch", "--backbone",
                                      "lenet", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "single class ('only'); training a classifier needs at least two" in result.output


def test_images_mixed_with_folders_are_rejected(tmp_path):
    write_class_tree(tmp_path, {"a": 1, "b": 1})
    write_image(tmp_path / "stray.png")
    with pytest.raises(TransferlabError, match="'stray.png'.*sub-folders"):
        load_splits(str(tmp_path))


def test_names_of_the_spec_module_still_import_from_it():
    from transferlab.data import specs
    from transferlab.data.class_names import sort_class_names
    from transferlab.data.formats.files import IMAGE_EXTENSIONS

    assert specs.sort_class_names is sort_class_names and specs.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert {"manifest_columns", "read_manifest_columns", "KINDS", "SPLITS", "TextColumns"} <= set(specs.__all__)
    assert all(hasattr(specs, name) for name in specs.__all__)
    assert specs.sort_class_names(["10", "2", "9", "2"]) == ["2", "9", "10"]


def test_folder_without_images_is_rejected(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(TransferlabError, match="no images or audio files in"):
        load_splits(str(tmp_path))


def test_digit_files_without_kind_get_a_hint(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(TransferlabError, match=f"use 'mnist:{tmp_path}'"):
        load_splits(str(tmp_path))


def corrupt_tree(root: Path) -> tuple[Path, Path]:
    write_class_tree(root, {"a": 2, "b": 2})
    text = root / "a" / "fake.png"
    text.write_text("this is not a png")
    truncated = root / "b" / "cut.png"
    truncated.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    return text, truncated


def test_corrupt_image_is_named(tmp_path):
    text, _ = corrupt_tree(tmp_path)
    with pytest.raises(ImageReadError, match="fake.png") as error:
        load_splits(str(tmp_path))
    assert "--skip-bad-files (skip_bad_files: true in YAML)" in str(error.value)  # the flag and the YAML key


def test_skip_bad_files_warns_once_with_every_file(tmp_path):
    text, truncated = corrupt_tree(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_splits(str(tmp_path), skip_bad_files=True)["all"]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(text) in message and str(truncated) in message and "skipped 2" in message
    assert len(data) == 4 and text not in data.paths


def test_skip_bad_files_still_fails_when_a_class_has_no_readable_image(tmp_path):
    write_class_tree(tmp_path, {"a": 1})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bad.jpg").write_text("nope")
    with pytest.raises(ImageReadError, match="no readable images left for class\\(es\\) \\['b'\\]"):
        load_splits(str(tmp_path), skip_bad_files=True)


def test_csv_row_with_missing_file_names_row_and_path(tmp_path):
    write_image(tmp_path / "x.png")
    manifest = write_csv(tmp_path / "m.csv", "path,label\nx.png,a\ngone.png,b\n")
    with pytest.raises(ImageReadError, match="row 2 \\(line 3\\).*not found") as error:
        load_splits(str(manifest))
    assert str(tmp_path / "gone.png") in str(error.value)
    assert "--skip-bad-files (skip_bad_files: true in YAML)" in str(error.value)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("path,lable\nx.png,a\n", "unknown column 'lable' \\(did you mean 'label'\\?\\).*path \\(required\\)"),
        ("path,label,weight\nx.png,a,1\n", "unknown column 'weight'.*accepted columns: path"),
        ("label\na\n", "no 'path' column"),
        ("", "is empty.*'path'"),
        ("path,label\n", "header but no rows"),
        ("path,label\nx.png\n", "row 1 \\(line 2\\) has 1 fields, expected 2"),
        ("path,label\nx.png,\n", "row 1 \\(line 2\\) has an empty label"),
    ],
)
def test_bad_csv_is_explained(tmp_path, text, pattern):
    write_image(tmp_path / "x.png")
    manifest = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(TransferlabError, match=pattern) as error:
        load_splits(str(manifest))
    assert "bad.csv" in str(error.value)


def test_mnist_missing_file_is_named(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(TransferlabError, match="has no train-labels-idx1-ubyte or train-labels-idx1-ubyte.gz"):
        load_splits(f"mnist:{tmp_path}")


def test_mnist_wrong_magic_names_the_file(tmp_path):
    write_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros((2, 28, 28), dtype=np.uint8), 0x0803)
    with pytest.raises(TransferlabError, match="t10k-labels-idx1-ubyte.gz is not the expected IDX file.*0x00000803"):
        load_splits(f"mnist:{tmp_path}@test")


def test_mnist_truncated_file_is_named(tmp_path):
    write_mnist(tmp_path, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(TransferlabError, match="train-images-idx3-ubyte is truncated"):
        load_splits(f"mnist:{tmp_path}")


def test_usps_missing_file_is_named(tmp_path):
    write_usps(tmp_path, [usps_line("1", [0.0] * 256)], [])
    (tmp_path / "zip.test.gz").unlink()
    with pytest.raises(TransferlabError, match="usps folder .* has no zip.test or zip.test.gz"):
        load_splits(f"usps:{tmp_path}")


def test_usps_malformed_line_names_the_file(tmp_path):
    write_usps(tmp_path, [usps_line("1", [0.0] * 256), usps_line("2", [0.0] * 200)], [])
    with pytest.raises(TransferlabError, match="cannot parse USPS file .*zip.train.gz"):
        load_splits(f"usps:{tmp_path}@train")


def test_kind_needs_the_right_location(tmp_path):
    manifest = write_csv(tmp_path / "m.csv", "path\nx.png\n")
    with pytest.raises(TransferlabError, match="mnist data must be a folder"):
        load_splits(f"mnist:{manifest}")
    with pytest.raises(TransferlabError, match="has no location"):
        load_splits("usps")
    with pytest.raises(TransferlabError, match="takes no location"):
        load_splits(f"sklearn-digits:{tmp_path}")
    with pytest.raises(TransferlabError, match="not a .csv manifest"):
        load_splits(str(write_image(tmp_path / "one.png")))


# --- real data -----------------------------------------------------------------------------------------------


def test_real_hymenoptera(shared_data):
    data = load_splits(str(shared_data / "hymenoptera"))
    assert {split: len(images) for split, images in data.items()} == {"train": 244, "val": 153}
    assert all(images.classes == ["ants", "bees"] for images in data.values())
    assert set(data["train"].labels.tolist()) == {0, 1}
    assert any(path.name == "ant photos.jpg" for path in data["train"].paths)
    assert isinstance(data["val"], ImageData) and data["val"].domain == "target"


def test_real_mnist(shared_data):
    data = load_splits(f"mnist:{shared_data / 'mnist'}")
    assert data["train"].pixels.shape == (60000, 28, 28) and data["test"].pixels.shape == (10000, 28, 28)
    assert data["train"].pixels.dtype == np.uint8 and data["train"].pixels.max() == 255
    assert data["train"].labels[0] == 5 and data["test"].labels[0] == 7
    assert np.bincount(data["test"].labels).tolist()[:2] == [980, 1135]


def test_real_usps(shared_data):
    data = load_splits(f"usps:{shared_data / 'usps'}")
    assert len(data["train"]) == 7291 and len(data["test"]) == 2007
    assert data["train"].pixels.shape == (7291, 16, 16)
    assert data["train"].pixels.min() == 0 and data["train"].pixels.max() == 255
    assert data["train"].labels[0] == 6 and data["test"].labels[0] == 9
    assert np.bincount(data["train"].labels).tolist()[0] == 1194


def test_real_sklearn_digits_and_single_split_choice(shared_data):
    assert len(load_data("sklearn-digits", split_preference=("train",))) == 1797
    test = load_data(f"usps:{shared_data / 'usps'}", split_preference=("val", "test"))
    assert len(test) == 2007


def test_in_memory_images_are_preprocessed_once_unless_augmented():
    import torch

    from transferlab.backbones.lenet import LeNet
    from transferlab.data.torch_dataset import ImageDataset

    digits = load_data("sklearn-digits", split_preference=("all",))
    plain = ImageDataset(digits, LeNet(16).preprocess, train=True)
    first, label = plain[3]
    assert plain[3][0] is first and label.item() == digits.labels[3]  # kept after the first use
    fresh = ImageDataset(digits, LeNet(16).preprocess)[3][0]
    assert torch.equal(first, fresh)  # the same tensor the transform gives
    augmented = ImageDataset(digits, LeNet(16).preprocess, train=True, augment=True)
    assert augmented._tensors is None


def test_a_csv_manifest_given_to_predict_reads_its_files_whatever_its_label_columns(tmp_path):
    from transferlab.data import examples_from_paths

    write_image(tmp_path / "images" / "a.png", 10)
    write_image(tmp_path / "images" / "b.png", 200)
    manifest = tmp_path / "tasks.csv"
    manifest.write_text("path,species,tags\nimages/b.png,cat,indoor|small\nimages/a.png,,outdoor\n")
    data = examples_from_paths([manifest])
    assert [Path(path).name for path in data.paths] == ["b.png", "a.png"] and data.labels is None
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(ImageReadError, match="a.png"):
        examples_from_paths([manifest])
    assert len(examples_from_paths([manifest], skip_bad_files=True)) == 1
    neither = tmp_path / "scores.csv"  # neither a manifest nor a table of texts: named as such, not "not an image"
    neither.write_text("score,label\n1,a\n")
    with pytest.raises(TransferlabError, match="scores.csv has no 'path' column"):
        examples_from_paths([neither])
