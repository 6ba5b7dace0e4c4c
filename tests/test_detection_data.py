"""Detection data: PASCAL VOC, COCO JSON and YOLO txt read into the same `DetectionData`, EXIF orientation, negatives,
difficult boxes, clipping and degenerate boxes, every bad input as one line naming the file, the torch dataset,
and the real raccoon data."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from transferlab.data import ImageData, ImageReadError, load_splits
from transferlab.data.detection import (
    DetectionDataset,
    align_detection_classes,
    collate_detection,
    detect_format,
    detection_transform,
    is_detection_spec,
    load_detection_data,
    load_detection_splits,
)
from transferlab.data.detection.records import exif_boxes
from transferlab.errors import TransferlabError

COLOURS = {"blue": (0, 0, 255), "green": (0, 200, 0), "red": (255, 0, 0)}
CLASSES = sorted(COLOURS)
COCO_IDS = {"blue": 1, "green": 3, "red": 7}  # not contiguous: class indices must not be the ids

# (file name, (width, height), [(class, (x1, y1, x2, y2), difficult)]); c.png has no objects
SCENES = [
    ("a.png", (64, 48), [("red", (4, 6, 20, 30), False), ("blue", (30, 10, 60, 40), False)]),
    ("b.png", (50, 70), [("green", (10, 12, 40, 60), False), ("red", (2, 2, 8, 9), False)]),
    ("c.png", (40, 40), []),
]


def draw(path: Path, size: tuple[int, int], objects, mode: str = "RGB", exif: Image.Exif | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (128, 128, 128))
    for name, (x1, y1, x2, y2), _ in objects:
        image.paste(COLOURS[name], (int(x1), int(y1), int(x2), int(y2)))
    image = image.convert(mode)
    image.save(path, **({"exif": exif} if exif is not None else {}))
    return path


def voc_xml(filename: str, size, objects, recorded: bool = True) -> str:
    parts = [f"<annotation><folder>images</folder><filename>{filename}</filename>"]
    if recorded:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, (x1, y1, x2, y2), difficult in objects:
        parts.append(f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox><xmin>{x1}</xmin>"
                     f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def write_voc(root: Path, scenes=SCENES, images: str = "images", annotations: str = "annotations") -> Path:
    for filename, size, objects in scenes:
        draw(root / images / filename, size, objects)
        xml = root / annotations / f"{Path(filename).stem}.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text(voc_xml(filename, size, objects))
    return root


def coco_json(scenes, categories=COCO_IDS) -> dict:
    images, annotations = [], []
    for image_id, (filename, size, objects) in enumerate(scenes, start=10):
        images.append({"id": image_id, "file_name": filename, "width": size[0], "height": size[1]})
        for name, (x1, y1, x2, y2), difficult in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": categories[name],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": int(difficult), "area": 1})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": name} for name, i in categories.items()]}


def write_coco(root: Path, scenes=SCENES, json_name: str = "instances_default.json") -> Path:
    for filename, size, objects in scenes:
        draw(root / "images" / filename, size, objects)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / json_name).write_text(json.dumps(coco_json(scenes), indent=1))
    return root


def yolo_lines(size, objects) -> str:
    lines = []
    for name, (x1, y1, x2, y2), _ in objects:
        w, h = size
        lines.append(f"{CLASSES.index(name)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
                     f"{(y2 - y1) / h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_yolo(root: Path, scenes=SCENES, split: str = "", names: str = "yaml") -> Path:
    for filename, size, objects in scenes:
        draw(root / "images" / split / filename, size, objects)
        label = root / "labels" / split / f"{Path(filename).stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        if objects:  # a negative has no label file, as LabelImg and Ultralytics have it
            label.write_text(yolo_lines(size, objects))
    if names == "yaml":
        (root / "data.yaml").write_text("path: .\nnames:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASSES)))
    else:
        (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def one_line_error(exc_info, *parts: str) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    for part in parts:
        assert str(part) in message, message
    return message


def boxes_of(data) -> list[list[tuple]]:
    return [[(data.classes[label], tuple(np.round(box, 3))) for box, label in zip(boxes, labels, strict=True)]
            for boxes, labels in zip(data.boxes, data.labels, strict=True)]


# --- the real data ---------------------------------------------------------------------------------------------------

def test_raccoon_loads_every_image_and_box_within_bounds(shared_data):
    root = shared_data / "raccoon"
    assert detect_format(root) == "voc" and is_detection_spec(str(root)) and is_detection_spec(f"voc:{root}@all")
    splits = load_detection_splits(str(root))
    assert list(splits) == ["all"]
    data = splits["all"]
    assert len(data) == 200 and data.box_count == 217 and data.classes == ["raccoon"]
    assert data.describe().startswith(f"{root}: 200 images (0 without objects), 217 boxes (0 difficult), 1 class")
    for boxes, (width, height) in zip(data.boxes, data.sizes, strict=True):
        assert boxes.dtype == np.float32 and boxes.shape[1] == 4
        assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= width) and np.all(boxes[:, 3] <= height)
        assert np.all(boxes[:, 2:] > boxes[:, :2])
    gray = [i for i, path in enumerate(data.paths) if Image.open(path).mode == "L"]
    assert len(gray) == 3
    for index in gray:
        image = data.load_image(index)
        assert image.mode == "RGB" and image.size == data.sizes[index]
    first = data.paths.index(root / "images" / "raccoon-1.jpg")
    np.testing.assert_array_equal(data.boxes[first], [[81, 88, 522, 408]])
    assert load_detection_data(f"voc:{root}", split_preference=("val", "test")).box_count == 217


def test_raccoon_is_refused_by_the_classification_loader_and_the_reverse(shared_data):
    for spec in (str(shared_data / "raccoon"), f"voc:{shared_data / 'raccoon'}", f"folder:{shared_data / 'raccoon'}"):
        with pytest.raises(TransferlabError) as exc_info:
            load_splits(spec)
        one_line_error(exc_info, "detection", "--method detection")
    assert not is_detection_spec(str(shared_data / "hymenoptera"))
    with pytest.raises(TransferlabError) as exc_info:
        load_detection_splits(str(shared_data / "hymenoptera"))
    one_line_error(exc_info, shared_data / "hymenoptera", "class folders (ants, bees)", "classification")


# --- three formats, one picture set ----------------------------------------------------------------------------------

def test_voc_coco_and_yolo_give_the_same_data(tmp_path):
    loaded = {
        "voc": load_detection_splits(str(write_voc(tmp_path / "voc")))["all"],
        "coco": load_detection_splits(str(write_coco(tmp_path / "coco")))["all"],
        "yolo": load_detection_splits(str(write_yolo(tmp_path / "yolo")))["all"],
        "yolo-classes.txt": load_detection_data(f"yolo:{write_yolo(tmp_path / 'yolo2', names='txt')}",
                                                split_preference=("train",)),
    }
    expected = [[(name, tuple(float(v) for v in box)) for name, box, _ in objects] for _, _, objects in SCENES]
    for kind, data in loaded.items():
        assert data.classes == CLASSES, kind
        assert [path.name for path in data.paths] == ["a.png", "b.png", "c.png"], kind
        assert data.sizes == [size for _, size, _ in SCENES], kind
        assert boxes_of(data) == expected, kind
        assert [flags.tolist() for flags in data.difficult] == [[False, False], [False, False], []]
        assert all(labels.dtype == np.int64 for labels in data.labels)
    assert {detect_format(tmp_path / kind) for kind in ("voc", "coco", "yolo")} == {"voc", "coco", "yolo"}


def test_box_pixels_hold_the_object(tmp_path):
    data = load_detection_splits(str(write_coco(tmp_path)))["all"]
    for index in range(len(data)):
        pixels = np.asarray(data.load_image(index))
        for box, label in zip(data.boxes[index], data.labels[index], strict=True):
            x1, y1, x2, y2 = box.astype(int)
            assert tuple(pixels[y1, x1]) == COLOURS[data.classes[label]]
            assert tuple(pixels[y2 - 1, x2 - 1]) == COLOURS[data.classes[label]]
            assert tuple(pixels[y2, x2]) != COLOURS[data.classes[label]]  # the first pixel past the box


def test_negatives_are_kept_and_voc_images_without_xml_are_negatives(tmp_path):
    root = write_voc(tmp_path)
    (root / "annotations" / "c.xml").unlink()
    data = load_detection_splits(str(root))["all"]
    assert [path.name for path in data.paths] == ["a.png", "b.png", "c.png"]
    assert len(data.boxes[2]) == 0 and data.boxes[2].shape == (0, 4)
    assert "(1 without objects)" in data.describe()
    sub = data.subset([2, 0])
    assert [path.name for path in sub.paths] == ["c.png", "a.png"] and sub.box_count == 2


# --- EXIF orientation ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_boxes_follow_pil_exif_transpose(orientation):
    stored = Image.new("L", (30, 20), 0)
    stored.paste(255, (3, 4, 11, 9))
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.info["exif"] = exif.tobytes()
    stored.getexif()[0x0112] = orientation
    shown = np.asarray(ImageOps.exif_transpose(stored))
    ys, xs = np.nonzero(shown)
    box = exif_boxes(np.array([[3.0, 4.0, 11.0, 9.0]]), (30, 20), orientation)[0]
    np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_exif_rotated_image_boxes_refer_to_the_displayed_image(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60x40, displayed 40x60 (turned 90 degrees clockwise)
    stored_box = (5, 10, 25, 20)
    root = tmp_path / "voc"
    draw(root / "images" / "p.jpg", (60, 40), [("red", stored_box, False)], exif=exif)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(root / "images" / "p.jpg")).convert("RGB"))
    redness = (shown[..., 0] > 180) & (shown[..., 1] < 80)
    ys, xs = np.nonzero(redness)
    displayed_box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    assert displayed_box == (20, 5, 30, 25)
    (root / "annotations").mkdir()
    xml = root / "annotations" / "p.xml"
    # a tool that honours EXIF: displayed size, displayed coordinates
    xml.write_text(voc_xml("p.jpg", (40, 60), [("red", displayed_box, False)]))
    data = load_detection_splits(str(root))["all"]
    assert data.sizes == [(40, 60)] and boxes_of(data) == [[("red", tuple(map(float, displayed_box)))]]
    image = data.load_image(0)
    assert image.size == (40, 60) and image.getpixel((25, 15))[0] > 180
    # a tool that ignored EXIF: stored size, stored coordinates -> turned with the image
    xml.write_text(voc_xml("p.jpg", (60, 40), [("red", stored_box, False)]))
    assert boxes_of(load_detection_splits(str(root))["all"]) == [[("red", tuple(map(float, displayed_box)))]]
    # YOLO fractions are of the displayed image
    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (root / "images" / "p.jpg").rename(yolo / "images" / "p.jpg")
    (yolo / "labels").mkdir()
    (yolo / "labels" / "p.txt").write_text("0 0.625 0.25 0.25 0.333333\n")
    (yolo / "classes.txt").write_text("red\n")
    box = load_detection_splits(str(yolo))["all"].boxes[0][0]
    np.testing.assert_allclose(box, displayed_box, atol=1e-3)


def test_recorded_size_that_fits_neither_frame_is_an_error(tmp_path):
    root = write_voc(tmp_path)
    (root / "annotations" / "a.xml").write_text(voc_xml("a.png", (640, 480), SCENES[0][2]))
    with pytest.raises(TransferlabError) as exc_info:
        load_detection_splits(str(root))
    one_line_error(exc_info, root / "annotations" / "a.xml", "640x480", "64x48")


# --- difficult, clipping, degenerate boxes ---------------------------------------------------------------------------

def test_difficult_and_crowd_boxes_are_kept_and_flagged(tmp_path):
    scenes = [("a.png", (64, 48), [("red", (4, 6, 20, 30), True), ("blue", (30, 10, 60, 40), False)])]
    for data in (load_detection_splits(str(write_voc(tmp_path / "voc", scenes)))["all"],
                 load_detection_splits(str(write_coco(tmp_path / "coco", scenes)))["all"]):
        assert data.difficult[0].tolist() == [True, False]
        assert "(1 difficult)" in data.describe()
        _, target = DetectionDataset(data)[0]
        assert target["iscrowd"].tolist() == [1, 0]
        _, kept = DetectionDataset(data, drop_difficult=True)[0]
        assert kept["labels"].tolist() == [CLASSES.index("blue")] and kept["iscrowd"].tolist() == [0]


def test_boxes_crossing_the_border_are_clipped_with_one_warning(tmp_path):
    scenes = [("a.png", (64, 48), [("red", (-3, 6, 20, 30), False), ("blue", (30, 10, 66, 50), False)]),
              ("b.png", (50, 70), [("green", (10, 12, 40, 60), False)])]
    root = write_voc(tmp_path, scenes)
    with pytest.warns(UserWarning) as record:
        data = load_detection_splits(str(root))["all"]
    messages = [str(w.message) for w in record]
    clipped = [m for m in messages if m.startswith("clipped")]
    assert len(clipped) == 1 and "clipped 2 box(es)" in clipped[0] and "a.xml" in clipped[0]
    np.testing.assert_array_equal(data.boxes[0], [[0, 6, 20, 30], [30, 10, 64, 48]])


def test_degenerate_boxes_are_skipped_with_a_warning_naming_file_and_box(tmp_path):
    scenes = [("a.png", (64, 48), [("red", (4, 6, 4, 30), False), ("blue", (30, 10, 60, 40), False)]),
              ("b.png", (50, 70), [("green", (40, 12, 10, 60), False)])]
    root = write_voc(tmp_path, scenes)
    with pytest.warns(UserWarning, match="skipped 2 box") as record:
        data = load_detection_splits(str(root))["all"]
    message = next(str(w.message) for w in record if "skipped" in str(w.message))
    assert "a.xml: object 1 [4, 6, 4, 30]" in message and "b.xml: object 1 [40, 12, 10, 60]" in message
    assert boxes_of(data) == [[("blue", (30.0, 10.0, 60.0, 40.0))], []]


# --- splits ----------------------------------------------------------------------------------------------------------

def test_voc_imagesets_give_the_splits(tmp_path):
    root = write_voc(tmp_path, images="JPEGImages", annotations="Annotations")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\nc\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("b\n")
    (root / "ImageSets" / "Main" / "aeroplane_train.txt").write_text("a 1\n")  # per-class lists are ignored
    splits = load_detection_splits(str(root))
    assert list(splits) == ["train", "val"]
    assert [p.name for p in splits["train"].paths] == ["a.png", "b.png", "c.png"]
    assert splits["val"].name == f"{root}@val" and splits["val"].classes == CLASSES
    only = load_detection_splits(f"voc:{root}@val")
    assert list(only) == ["val"] and len(only["val"]) == 1


def test_yolo_split_folders_and_roboflow_layout(tmp_path):
    root = tmp_path / "ultralytics"
    write_yolo(root, SCENES[:2], split="train")
    write_yolo(root, SCENES[1:], split="val")
    splits = load_detection_splits(str(root))
    assert list(splits) == ["train", "val"] and [len(d) for d in splits.values()] == [2, 2]
    assert load_detection_data(str(root), split_preference=("val",)).name == f"{root}@val"
    robo = tmp_path / "roboflow"
    write_yolo(robo / "train", SCENES[:2])
    write_yolo(robo / "valid", SCENES[1:])
    (robo / "train" / "data.yaml").rename(robo / "data.yaml")
    (robo / "valid" / "data.yaml").unlink()
    assert detect_format(robo) == "yolo"
    assert list(load_detection_splits(str(robo))) == ["train", "val"]


def test_coco_splits_from_file_names_and_a_json_file_as_spec(tmp_path):
    root = tmp_path / "coco"
    for split, scenes in (("train", SCENES[:2]), ("val", SCENES[1:])):
        for filename, size, objects in scenes:
            draw(root / f"{split}2017" / filename, size, objects)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(coco_json(scenes)))
    splits = load_detection_splits(f"coco:{root}")
    assert list(splits) == ["train", "val"] and splits["val"].paths[0].parent.name == "val2017"
    single = load_detection_splits(str(root / "annotations" / "instances_val2017.json"))
    assert list(single) == ["val"] and boxes_of(single["val"]) == boxes_of(splits["val"])


def test_roboflow_coco_export(tmp_path):
    root = tmp_path / "roboflow"
    for folder, scenes in (("train", SCENES[:2]), ("valid", SCENES[1:]), ("test", SCENES[:1])):
        for filename, size, objects in scenes:
            draw(root / folder / filename, size, objects)
        (root / folder / "_annotations.coco.json").write_text(json.dumps(coco_json(scenes)))
    assert detect_format(root) == "coco"
    splits = load_detection_splits(str(root))
    assert list(splits) == ["train", "val", "test"] and [len(d) for d in splits.values()] == [2, 2, 1]
    assert boxes_of(splits["test"]) == boxes_of(splits["train"])[:1]


def test_a_class_that_training_never_shows_is_an_error(tmp_path):
    root = tmp_path / "voc"
    write_voc(root / "train", [SCENES[0]])
    write_voc(root / "val", [SCENES[1]])  # green is only in val
    with pytest.raises(TransferlabError) as exc_info:
        load_detection_splits(str(root))
    one_line_error(exc_info, "'green'", root / "val" / "images" / "b.png")
    train = load_detection_splits(f"{root}@train")["train"]
    val = load_detection_splits(str(write_voc(tmp_path / "other", [SCENES[0]])))["all"]
    aligned = align_detection_classes(train, val)
    assert aligned.classes == train.classes and boxes_of(aligned) == boxes_of(val)


# --- bad input: one line, naming the file ----------------------------------------------------------------------------

def _raises(spec, *parts, error=TransferlabError, **kwargs) -> str:
    with pytest.raises(error) as exc_info:
        load_detection_splits(str(spec), **kwargs)
    return one_line_error(exc_info, *parts)


def test_voc_bad_input(tmp_path):
    root = write_voc(tmp_path)
    xml = root / "annotations" / "a.xml"
    xml.write_text(voc_xml("missing.png", (64, 48), SCENES[0][2]))
    _raises(root, xml, "'missing.png'")
    xml.write_text("<annotation>\n<filename>a.png</filename>\n<object><name>red</object>\n</annotation>")
    _raises(root, xml, "line 3", "not valid XML")
    xml.write_text(voc_xml("a.png", (64, 48), [("red", ("4", "six", 20, 30), False)]))
    _raises(root, xml, "object 1", "<ymin> is 'six'")
    xml.write_text("<annotation><filename>a.png</filename><object><bndbox/></object></annotation>")
    _raises(root, xml, "object 1 has no <name>")


def test_coco_bad_input(tmp_path):
    root = write_coco(tmp_path)
    path = root / "annotations" / "instances_default.json"
    content = coco_json(SCENES)
    path.write_text(json.dumps(content, indent=1)[:-30])
    _raises(root, path, "line", "not valid JSON")
    bad = {**content, "annotations": [*content["annotations"], {"id": 99, "image_id": 5, "category_id": 1,
                                                                "bbox": [0, 0, 2, 2]}]}
    path.write_text(json.dumps(bad))
    _raises(root, path, "annotation id 99", "image id 5")
    bad = {**content, "annotations": [{**content["annotations"][0], "bbox": [1, 2, 3]}]}
    path.write_text(json.dumps(bad))
    _raises(root, path, "annotation id 1", "[1, 2, 3]")
    bad = {**content, "annotations": [{**content["annotations"][0], "category_id": 2}]}
    path.write_text(json.dumps(bad))
    _raises(root, path, "category id 2")
    bad = {**content, "images": [*content["images"], {"id": 50, "file_name": "gone.png", "width": 4, "height": 4}]}
    path.write_text(json.dumps(bad))
    _raises(root, path, "'gone.png'", "image id 50")
    path.write_text(json.dumps({"images": [], "annotations": []}))
    assert detect_format(root) == "coco"
    _raises(f"coco:{root}", path, "'categories'")


def test_yolo_bad_input(tmp_path):
    root = write_yolo(tmp_path)
    label = root / "labels" / "a.txt"
    label.write_text("0 0.5 0.5 0.2\n")
    _raises(root, label, "line 1", "'class cx cy w h'")
    label.write_text("0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n")
    _raises(root, label, "line 2", "class index 3", "blue, green, red")
    label.write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "zzz.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    _raises(root, root / "labels" / "zzz.txt", "has no image")
    (root / "labels" / "zzz.txt").unlink()
    (root / "data.yaml").write_text("names: [a, b\nnc: 2\n")
    _raises(root, root / "data.yaml", "line", "not valid YAML")
    (root / "data.yaml").unlink()
    _raises(root, root, "no class names", "data.yaml")


def test_boxes_far_outside_the_image_are_errors(tmp_path):
    for box, how in (((4, 6, 80, 30), "more than 10% beyond"), ((70, 6, 75, 30), "wholly outside")):
        root = write_voc(tmp_path / how, [("a.png", (64, 48), [("red", box, False)])])
        _raises(root, root / "annotations" / "a.xml", how, "64x48")
    root = write_yolo(tmp_path / "pixels-as-fractions", [("a.png", (64, 48), [])])
    (root / "labels" / "a.txt").write_text("0 32 24 10 10\n")  # pixels where fractions belong
    _raises(root, root / "labels" / "a.txt", "line 1", "more than 10% beyond")


def test_unreadable_images_raise_or_are_skipped(tmp_path):
    root = write_voc(tmp_path)
    (root / "images" / "b.png").write_bytes(b"not an image")
    _raises(root, root / "images" / "b.png", "--skip-bad-files", error=ImageReadError)
    with pytest.warns(UserWarning, match="skipped 1 bad file"):
        data = load_detection_splits(str(root), skip_bad_files=True)["all"]
    assert [path.name for path in data.paths] == ["a.png", "c.png"]


def test_empty_data_after_filtering_is_an_error(tmp_path):
    root = write_voc(tmp_path / "unreadable", [SCENES[0]])
    (root / "images" / "a.png").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _raises(root, "no readable images", root, error=ImageReadError, skip_bad_files=True)
    root = write_yolo(tmp_path / "labels-elsewhere", SCENES)
    for label in (root / "labels").glob("*.txt"):
        label.unlink()
    _raises(root, "no .txt label files in labels/")
    _raises(f"yolo:{root}", "not one box", "a.png")
    root = write_voc(tmp_path / "all-degenerate", [("a.png", (64, 48), [("red", (4, 6, 4, 30), False)])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _raises(root, "not one box")


def test_bad_specs(tmp_path):
    root = write_voc(tmp_path / "voc")
    _raises(f"vocc:{root}", "unknown detection data kind 'vocc'", "did you mean 'voc'")
    _raises(f"{root}@tran", "unknown split 'tran'", "did you mean 'train'")
    _raises(f"{root}@val", "split 'val' not found", "all")
    _raises(tmp_path / "nowhere", "no such file or folder")
    (tmp_path / "empty").mkdir()
    _raises(tmp_path / "empty", "no detection annotations found in", tmp_path / "empty")
    _raises(f"yolo:{root}", root, "images/")
    assert not is_detection_spec(f"vocc:{root}") and not is_detection_spec(str(tmp_path / "empty"))


# --- tensors ---------------------------------------------------------------------------------------------------------

def test_dataset_yields_float_images_and_targets_that_torchvision_reads(tmp_path):
    data = load_detection_splits(str(write_voc(tmp_path)))["all"]
    dataset = DetectionDataset(data)
    images, targets = collate_detection([dataset[i] for i in range(len(dataset))])
    assert isinstance(images, list) and len(images) == 3 and isinstance(targets, list)
    assert images[0].shape == (3, 48, 64) and images[0].dtype == torch.float32 and float(images[0].max()) <= 1.0
    assert type(images[0]) is torch.Tensor and type(targets[0]["boxes"]) is torch.Tensor
    assert targets[0]["boxes"].dtype == torch.float32 and targets[0]["labels"].dtype == torch.int64
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[4.0, 6, 20, 30], [30, 10, 60, 40]]))
    assert targets[2]["boxes"].shape == (0, 4) and targets[1]["image_id"] == 1
    shrunk_image, shrunk = DetectionDataset(data, max_size=32)[0]
    assert shrunk_image.shape == (3, 24, 32)
    torch.testing.assert_close(shrunk["boxes"], torch.tensor([[2.0, 3, 10, 15], [15, 5, 30, 20]]))


def test_augmentation_moves_boxes_with_the_image(tmp_path):
    data = load_detection_splits(str(write_voc(tmp_path)))["all"]
    flipped_image, flipped = DetectionDataset(data, detection_transform(train=True, hflip=1.0, crop=0.0))[0]
    torch.testing.assert_close(flipped["boxes"], torch.tensor([[44.0, 6, 60, 30], [4, 10, 34, 40]]))
    assert flipped_image[0, 10, 50] == 1.0 and flipped_image[2, 10, 50] == 0.0  # red moved to the right
    torch.manual_seed(0)
    dataset = DetectionDataset(data, detection_transform(train=True, size=64, crop=1.0))
    for _ in range(10):
        for index in range(len(dataset)):
            image, target = dataset[index]
            height, width = image.shape[-2:]
            boxes = target["boxes"]
            assert len(boxes) == len(target["labels"]) == len(target["iscrowd"])
            assert torch.all(boxes[:, 2:] > boxes[:, :2]) and torch.all(boxes >= 0)
            assert torch.all(boxes[:, 2] <= width) and torch.all(boxes[:, 3] <= height)


def test_content_digest_and_image_modes(tmp_path):
    root = write_voc(tmp_path)
    draw(root / "images" / "b.png", (50, 70), SCENES[1][2], mode="RGBA")
    draw(root / "images" / "c.png", (40, 40), [], mode="I;16")
    data = load_detection_splits(str(root))["all"]
    assert {data.load_image(i).mode for i in range(3)} == {"RGB"}
    plain = ImageData(name="x", classes=[], labels=None, paths=list(data.paths))
    assert data.content_digest(0) != plain.content_digest(0)
    assert data.content_digest(0) == data.subset([0]).content_digest(0)
