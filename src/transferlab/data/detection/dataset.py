"""From `DetectionData` to what torchvision's detectors read: ``(image, target)`` pairs, box-aware augmentation
(torchvision ``transforms.v2`` moves `tv_tensors.BoundingBoxes` with the image) and a collate that keeps a batch
as lists, since detection images differ in size.

Labels stay 0-based class indices, as in the data. torchvision's Faster R-CNN, SSD and SSDlite reserve class 0 for
the background (build them with ``num_classes = len(classes) + 1`` and add 1 to the labels); FCOS and RetinaNet
have no background class and take the labels as they are. The model, not the data, makes that shift.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from transferlab.data.detection.container import DetectionData

__all__ = ["DetectionDataset", "detection_transform", "collate_detection"]


def detection_transform(*, train: bool, size: int | None = None, hflip: float = 0.5, crop: float = 0.5,
                        scale_range: tuple[float, float] = (0.5, 1.0)) -> v2.Compose:
    """The transform of `DetectionDataset`: ``(uint8 image, target) -> (float image in [0, 1], target)``.

    Evaluation (``train=False``) only converts the image: detectors resize internally (cap the decoded size with
    `DetectionDataset`'s ``max_size``). Training adds, in this order: a horizontal flip (probability ``hflip``),
    SSD's random IoU crop (probability ``crop``), scale jitter to ``scale_range`` times a ``size`` x ``size``
    frame when ``size`` is given, then drops boxes the crop cut below one pixel.

    Args:
        train: add the random augmentations.
        size: the frame scale jitter fits the image into (e.g. the detector's input size); ``None``: no jitter.
        hflip: probability of a horizontal flip.
        crop: probability of a random IoU crop (``torchvision.transforms.v2.RandomIoUCrop``).
        scale_range: the scale jitter's range, relative to ``size``.
    """
    steps: list = []
    if train:
        steps += [v2.RandomHorizontalFlip(hflip), v2.RandomApply([v2.RandomIoUCrop()], p=crop)]
        if size is not None:
            steps.append(v2.ScaleJitter((size, size), scale_range=scale_range))
        steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(labels_getter=_labels_and_flags)]
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


def _labels_and_flags(sample) -> tuple[torch.Tensor, torch.Tensor]:
    """What `v2.SanitizeBoundingBoxes` drops along with the boxes it removes."""
    target = sample[1]
    return target["labels"], target["iscrowd"]


class DetectionDataset(Dataset):
    """Yields ``(image, target)``: the image a float ``(3, H, W)`` tensor in ``[0, 1]`` (RGB, EXIF orientation
    applied), the target a dict of ``"boxes"`` float32 ``(n, 4)`` xyxy pixels of that tensor, ``"labels"``
    int64 ``(n,)`` 0-based class indices (see the module docstring), ``"iscrowd"`` int64 ``(n,)`` (1 for a
    difficult or crowd box, to be ignored when evaluating: torchmetrics' ``MeanAveragePrecision`` reads this
    key), and ``"image_id"``, the image's index in ``data``.

    Args:
        data: the images and boxes.
        transform: a ``transforms.v2`` transform of ``(tv_tensors.Image uint8, target)`` with
            ``tv_tensors.BoundingBoxes``, e.g. `detection_transform`; ``None``: just to float.
        max_size: shrink images whose longer side is larger to this many pixels (boxes scaled with them), decoding
            JPEGs at reduced size when possible; ``None``: full size.
        drop_difficult: leave difficult and crowd boxes out (for training, as torchvision's references do with
            crowd boxes).
    """

    def __init__(self, data: DetectionData, transform=None, *, max_size: int | None = None,
                 drop_difficult: bool = False):
        self.data = data
        self.transform = transform if transform is not None else detection_transform(train=False)
        self.max_size = max_size
        self.drop_difficult = drop_difficult

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor | int]]:
        image, boxes = self._image_and_boxes(index)
        labels = torch.as_tensor(self.data.labels[index], dtype=torch.int64)
        iscrowd = torch.as_tensor(self.data.difficult[index], dtype=torch.int64)
        if self.drop_difficult:
            keep = iscrowd == 0
            boxes, labels, iscrowd = boxes[keep], labels[keep], iscrowd[keep]
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=image.shape[-2:]),
            "labels": labels,
            "iscrowd": iscrowd,
        }
        image, target = self.transform(image, target)
        return image.as_subclass(torch.Tensor), {
            "boxes": target["boxes"].as_subclass(torch.Tensor).to(torch.float32),
            "labels": target["labels"],
            "iscrowd": target["iscrowd"],
            "image_id": index,
        }

    def _image_and_boxes(self, index: int) -> tuple[tv_tensors.Image, torch.Tensor]:
        """The uint8 image (at most ``max_size`` on its longer side) and its boxes in its pixels."""
        pil = self.data.load_image(index, max_size=self.max_size)
        image = tv_tensors.Image(F.pil_to_tensor(pil))
        if self.max_size is not None and max(image.shape[-2:]) > self.max_size:
            height, width = image.shape[-2:]
            scale = self.max_size / max(height, width)
            image = F.resize(image, [max(1, round(height * scale)), max(1, round(width * scale))], antialias=True)
        width, height = self.data.sizes[index]
        scale = torch.tensor([image.shape[-1] / width, image.shape[-2] / height] * 2)
        return image, torch.as_tensor(self.data.boxes[index]) * scale


def collate_detection(batch: list) -> tuple[list[torch.Tensor], list[dict]]:
    """``(images, targets)`` lists of a batch of `DetectionDataset` items: what torchvision's detectors take."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)
