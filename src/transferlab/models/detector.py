"""`DetectorModel`: an object detector on any image backbone's feature pyramid (kind ``detector``).

The backbone, a neck and one of torchvision's detectors (`transferlab.models.detector_heads`: ``fasterrcnn``,
``fcos``, ``retinanet``, ``ssdlite``). Class indices are 0-based everywhere outside the torchvision detector, as in
`transferlab.data.detection.DetectionData`; the shift of the detectors that reserve class 0 for the background
happens in `DetectorModel.forward` alone. Boxes are ``x1, y1, x2, y2`` in pixels of the image as displayed (EXIF
orientation applied).

Evaluation is COCO-style mAP by torchmetrics (`transferlab.metrics.detection_metrics`), difficult boxes ignored;
prediction gives each image's boxes above a score threshold, as JSON, CSV (a line per box), COCO results JSON, or
drawn onto the images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_bounding_boxes

from transferlab.artifacts import save_weights, write_model_info
from transferlab.backbones.base import Backbone
from transferlab.data import ImageData
from transferlab.data.detection import DetectionData, load_detection_data
from transferlab.data.image_modes import to_model_mode
from transferlab.engine.precision import autocast, resolve_precision
from transferlab.errors import TransferlabError
from transferlab.fileio import atomic_path
from transferlab.metrics import detection_metrics
from transferlab.models.base import DataOptions, FrozenBatchNormMixin, Predictor, rebuild_saved, register_kind
from transferlab.models.classifier import refuse_task
from transferlab.models.detector_heads import DETECTORS, DetectorSettings, build_detector
from transferlab.models.info import ModelInfo, read_info

__all__ = ["DetectorInfo", "DetectorModel"]

EVAL_BATCH_SIZE = 4
# box colours by class index (drawn images)
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#469990",
           "#9a6324"]


@register_kind
class DetectorModel(FrozenBatchNormMixin, Predictor):
    """A backbone, a neck and a torchvision detector over ``classes``.

    Args:
        backbone: an image backbone with a feature pyramid (`transferlab.backbones.Backbone.feature_pyramid`).
        classes: the class names, in label order (no background class).
        settings: which detector and how it resizes (`DetectorSettings`).

    Raises:
        TransferlabError: see `transferlab.models.detector_heads.build_detector`.
    """

    kind = "detector"
    onnx_refusal = ("torchvision's detectors take lists of images of any size and keep boxes by data-dependent "
                    "score filtering and NMS, which transferlab does not export yet")
    output_formats = ("csv", "json", "coco")
    prediction_options = ("score_threshold",)
    draws_predictions = True

    def __init__(self, backbone: Backbone, classes: list[str], settings: DetectorSettings | None = None):
        super().__init__()
        self.settings = settings or DetectorSettings()
        self.classes = list(classes)
        neck, detector, self.label_shift = build_detector(backbone, len(self.classes), self.settings)
        self.backbone = backbone
        self.neck = neck
        self.detector = detector

    @property
    def preprocess(self):
        return self.backbone.preprocess

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        """Losses or detections of a list of ``(3, H, W)`` float images in ``[0, 1]`` (sizes may differ).

        In train mode with ``targets`` (per image ``"boxes"`` ``(n, 4)`` xyxy pixels and ``"labels"`` ``(n,)``
        0-based): the detector's losses ``{name: scalar}``. In eval mode: per image ``{"boxes", "labels"
        (0-based), "scores"}``, boxes in the input image's pixels. Under bf16 autocast only the backbone and the neck
        run in bf16; heads, losses and boxes stay float32.
        """
        if targets is not None:
            targets = [{"boxes": target["boxes"], "labels": target["labels"] + self.label_shift} for target in targets]
        device = images[0].device.type
        reduced = torch.is_autocast_enabled(device)
        self.detector.backbone.autocast_dtype = torch.get_autocast_dtype(device) if reduced else None
        with torch.autocast(device, enabled=False):  # heads and box decoding in float32 (see PyramidFeatures)
            outputs = self.detector(images, targets)
        if isinstance(outputs, dict):
            return outputs
        return [{**output, "labels": output["labels"] - self.label_shift} for output in outputs]

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        """The backbone's named groups (prefixed ``backbone.``), then ``head``: the neck and the detector, all new."""
        backbone = [(f"backbone.{name}", [f"backbone.{p}" for p in params])
                    for name, params in self.backbone.parameter_groups()]
        head = [name for name, _ in self.named_parameters() if not name.startswith("backbone.")]
        return [*backbone, ("head", head)]

    # --- inference -------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def detect(self, data: DetectionData | ImageData, *, precision: str = "fp32", device: torch.device | None = None,
               num_workers: int = 0, batch_size: int = EVAL_BATCH_SIZE) -> list[dict]:
        """Every detection (scores from the detector's own low threshold up) of each image of ``data``, in eval mode
        (restored after): per image ``{"boxes" (n, 4) float32 pixels of the image as displayed, "labels" (n,)
        0-based, "scores" (n,)}`` on the CPU."""
        images = InferenceImages(data, self.settings.max_size)
        loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers, collate_fn=_as_lists)
        device = device or next(self.parameters()).device
        results, was_training = [], self.training
        self.eval()
        try:
            for batch, sizes in loader:
                batch = [image.to(device) for image in batch]
                with autocast(precision, device):
                    outputs = self(batch)
                for image, (width, height), output in zip(batch, sizes, outputs, strict=True):
                    scale = torch.tensor([width / image.shape[-1], height / image.shape[-2]] * 2)
                    results.append({"boxes": output["boxes"].float().cpu() * scale, "labels": output["labels"].cpu(),
                                    "scores": output["scores"].float().cpu()})
        finally:
            self.train(was_training)
        return results

    # --- the predictor contract --------------------------------------------------------------------------------

    def load_eval_data(self, spec: str, options: DataOptions) -> DetectionData:
        """The test (else val, else only) split of the detection data at ``spec``, in the model's class order."""
        refuse_task(options, "detector")
        data = load_detection_data(spec, split_preference=("test", "val", "all"),
                                   skip_bad_files=options.skip_bad_files)
        return self.in_model_classes(data)

    def in_model_classes(self, data: DetectionData) -> DetectionData:
        """``data`` with its labels indexing the model's classes.

        Raises:
            TransferlabError: a box of a class the model does not know (naming the file and the classes).
        """
        position = {name: self.classes.index(name) for name in data.classes if name in self.classes}
        labels = []
        for path, image_labels in zip(data.paths, data.labels, strict=True):
            unknown = sorted({data.classes[label] for label in image_labels} - set(position))
            if unknown:
                raise TransferlabError(f"{path} (in {data.name}) has a box of class {unknown[0]!r}, which this "
                                       f"detector does not know (its classes: {', '.join(self.classes)})")
            labels.append(np.array([position[data.classes[label]] for label in image_labels], dtype=np.int64))
        return DetectionData(name=data.name, classes=list(self.classes), paths=data.paths, sizes=data.sizes,
                             boxes=data.boxes, labels=labels, difficult=data.difficult, domain=data.domain,
                             max_image_pixels=data.max_image_pixels)

    def evaluate(self, data, *, precision="auto", num_workers=None) -> dict:
        """COCO-style mAP (0.5:0.95), mAP@0.5, mAP@0.75, recall, and AP / AP@0.5 / recall per class
        (`transferlab.metrics.detection_metrics`); difficult boxes are ignored."""
        if not isinstance(data, DetectionData):
            raise TransferlabError(f"{data.name} holds no boxes; a detector is evaluated on detection data (PASCAL "
                                   "VOC, COCO or YOLO annotations)")
        found = self.detect(data, **self._inference(precision, num_workers))
        targets = [{"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                    "iscrowd": torch.from_numpy(difficult.astype(np.int64))}
                   for boxes, labels, difficult in zip(data.boxes, data.labels, data.difficult, strict=True)]
        return detection_metrics(found, targets, self.classes)

    def predict(self, data, *, precision="auto", num_workers=None, score_threshold: float | None = None
                ) -> list[dict]:
        """``{"objects": [{"label", "score", "box": [x1, y1, x2, y2]}, ...]}`` per image, best first, with the
        detections scoring at least ``score_threshold`` (default: the model's, ``settings.score_threshold``)."""
        threshold = self.settings.score_threshold if score_threshold is None else score_threshold
        if not 0 <= threshold <= 1:
            raise TransferlabError(f"score threshold must be between 0 and 1, got {threshold}")
        rows = []
        for found in self.detect(data, **self._inference(precision, num_workers)):
            keep = found["scores"] >= threshold
            rows.append({"objects": [
                {"label": self.classes[int(label)], "score": round(float(score), 6),
                 "box": [round(float(value), 2) for value in box]}
                for box, label, score in zip(found["boxes"][keep], found["labels"][keep], found["scores"][keep],
                                             strict=True)]})
        return rows

    def prediction_lines(self, rows):
        """One CSV line per box (``label, score, x1, y1, x2, y2``); an image without boxes gets one empty line."""
        columns = ["label", "score", "x1", "y1", "x2", "y2"]
        lines = []
        for index, row in enumerate(rows):
            boxes = [[obj["label"], f"{obj['score']:.4f}", *(f"{v:.1f}" for v in obj["box"])] for obj in row["objects"]]
            lines += [(index, cells) for cells in boxes or [[""] * len(columns)]]
        return columns, lines

    def format_predictions(self, rows, names, output_format):
        """COCO results JSON: a list of ``{"image_id", "file_name", "category_id", "bbox": [x, y, width, height],
        "score"}``, where ``image_id`` is the image's 1-based position in the inputs and ``category_id`` the
        1-based class index (COCO's ids start at 1)."""
        if output_format != "coco":
            raise TransferlabError(f"a detector writes csv, json or coco, not {output_format!r}")
        category = {name: index + 1 for index, name in enumerate(self.classes)}
        results = [{"image_id": position, "file_name": name, "category_id": category[obj["label"]],
                    "bbox": [obj["box"][0], obj["box"][1], round(obj["box"][2] - obj["box"][0], 2),
                             round(obj["box"][3] - obj["box"][1], 2)], "score": obj["score"]}
                   for position, (name, row) in enumerate(zip(names, rows, strict=True), 1) for obj in row["objects"]]
        return json.dumps(results, indent=2)

    def draw_predictions(self, data, rows, out_dir):
        """Each image with its boxes, class names and scores drawn (torchvision's ``draw_bounding_boxes``), written
        atomically to ``out_dir`` under the input's file name (``-2``, ``-3``... for repeated names).

        Raises:
            TransferlabError: a file to write would replace one of the input images.
        """
        out_dir = Path(out_dir)
        inputs = {Path(path).resolve() for path in (data.paths or [])}
        written, used = [], set()
        for index, row in enumerate(rows):
            target = _drawing_path(out_dir, data, index, used)
            if target.resolve() in inputs:
                raise TransferlabError(f"--draw {out_dir} would overwrite the input image {target}; draw into "
                                       "another folder")
            image = F.pil_to_tensor(display_image(data, index))
            boxes = torch.tensor([obj["box"] for obj in row["objects"]], dtype=torch.float32).reshape(-1, 4)
            labels = [f"{obj['label']} {obj['score']:.2f}" for obj in row["objects"]]
            colors = [PALETTE[self.classes.index(obj["label"]) % len(PALETTE)] for obj in row["objects"]]
            drawn = draw_bounding_boxes(image, boxes, labels, colors=colors, width=max(2, max(image.shape) // 250)) \
                if len(boxes) else image
            with atomic_path(target) as tmp:
                F.to_pil_image(drawn).save(tmp, format="JPEG" if target.suffix.lower() in (".jpg", ".jpeg") else "PNG")
            written.append(target)
        return written

    def metric_lines(self, metrics, *, detail=False):
        summary = (f"mAP: {metrics['map']:.4f}  mAP@0.5: {metrics['map_50']:.4f}  mAP@0.75: {metrics['map_75']:.4f}"
                   f"  recall: {metrics['mar_100']:.4f}")
        if not detail:
            return [summary]

        def shown(value):
            return "-" if value is None else f"{value:.4f}"

        width = max(map(len, metrics["classes"]))
        per_class = [f"  {name.ljust(width)}  AP {shown(part['ap'])}  AP@0.5 {shown(part['ap_50'])}  recall "
                     f"{shown(part['recall'])}" for name, part in metrics["per_class"].items()]
        return [f"images: {metrics['n']}  boxes: {metrics['boxes']}", summary,
                "per class (AP over IoU 0.5:0.95; '-': no boxes of the class in the data):", *per_class]

    @classmethod
    def headline_metrics(cls, metrics):
        return {"map": metrics["map"], "map_50": metrics["map_50"]}

    def save(self, run_dir: Path) -> None:
        save_weights(run_dir, self)
        write_model_info(run_dir, self.kind, {
            "backbone": self.backbone.spec,
            "num_features": self.backbone.num_features,
            "classes": self.classes,
            "detector": self.settings.to_dict(),
            "preprocess": self.preprocess.to_dict(),
        })

    @classmethod
    def from_run_dir(cls, run_dir, info):
        saved = read_info(DetectorInfo, run_dir, info)
        settings = DetectorSettings(**saved.detector.model_dump())
        return rebuild_saved(run_dir, saved, lambda backbone: cls(backbone, saved.classes, settings))

    def _inference(self, precision: str, num_workers: int | None) -> dict:
        device = next(self.parameters()).device
        return {"precision": resolve_precision(precision, device), "device": device, "num_workers": num_workers or 0}


class DetectorPart(BaseModel):
    """``detector`` in ``model.json``: how the detector was built (`DetectorSettings`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: str = Field(pattern=f"^({'|'.join(DETECTORS)})$", description="the detector's name")
    min_size: int = Field(ge=32, le=1 << 14)
    max_size: int = Field(ge=32, le=1 << 14)
    fpn_channels: int = Field(ge=32, le=4096, multiple_of=32)
    score_threshold: float = Field(ge=0, le=1)


class DetectorInfo(ModelInfo):
    """``model.json`` of a ``detector`` run."""

    classes: list[str] = Field(min_length=1, description="the class names, in label order (no background)")
    detector: DetectorPart = Field(description="how the detector was built")


# --- images for inference ---------------------------------------------------------------------------------------


def display_image(data: DetectionData | ImageData, index: int, max_size: int | None = None) -> Image.Image:
    """Image ``index`` of ``data`` as RGB with its EXIF orientation applied (the frame boxes refer to); with
    ``max_size``, `DetectionData` may decode a JPEG at reduced scale (its longer side stays at least that)."""
    if isinstance(data, DetectionData):
        return data.load_image(index, max_size=max_size)
    return to_model_mode(ImageOps.exif_transpose(data.load_image(index)), "RGB")


class InferenceImages(Dataset):
    """Yields ``(image, (width, height))``: a float ``(3, H, W)`` image in ``[0, 1]`` whose longer side is at most
    ``max_size`` (the detector resizes it no larger), and the size of the image as displayed, to scale boxes back.

    Raises:
        TransferlabError: ``data`` holds no images (text or audio).
    """

    def __init__(self, data, max_size: int):
        if not isinstance(data, (DetectionData, ImageData)):
            raise TransferlabError(f"{data.name} holds {type(data).__name__}; a detector finds objects in images")
        self.data = data
        self.max_size = max_size

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, tuple[int, int]]:
        image = display_image(self.data, index, self.max_size)
        size = self.data.sizes[index] if isinstance(self.data, DetectionData) else image.size
        tensor = F.pil_to_tensor(image)
        height, width = tensor.shape[-2:]
        if max(height, width) > self.max_size:
            scale = self.max_size / max(height, width)
            tensor = F.resize(tensor, [max(1, round(height * scale)), max(1, round(width * scale))], antialias=True)
        return F.to_dtype(tensor, torch.float32, scale=True), size


def _as_lists(batch: list) -> tuple[list, list]:
    images, sizes = zip(*batch, strict=True)
    return list(images), list(sizes)


def _drawing_path(out_dir: Path, data, index: int, used: set[str]) -> Path:
    """Where image ``index`` is drawn: its file name in ``out_dir`` (PNG for in-memory or non-JPEG/PNG images),
    made unique among the files of this call."""
    source = Path(data.paths[index]) if data.paths is not None else Path(f"{index}.png")
    suffix = source.suffix if source.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
    name, count = f"{source.stem}{suffix}", 1
    while name in used:
        count += 1
        name = f"{source.stem}-{count}{suffix}"
    used.add(name)
    return out_dir / name
