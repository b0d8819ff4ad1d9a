"""Joint augmentation of image, mask and boxes with ``torchvision.transforms.v2``.

A :class:`SampleTransform` takes a loaded sample (uint8 HxW or HxWxC image, HxW class-id or
KxHxW bool mask, Nx4 xyxy boxes) and returns it with a float CxHxW image in [0, 1] (optionally
normalised), a tensor mask and tensor boxes, all moved by the same random geometry. Masks are
resampled nearest-neighbour by torchvision, so class ids survive resizing. Boxes that a crop
leaves smaller than a pixel are dropped; when a random crop is used and the mask is known, the
image label and classes are recomputed from the cropped mask (a crop can cut a defect away).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from defectkit.data.io import convert_channels
from defectkit.data.sample import Sample


class AugmentConfig(BaseModel):
    """Input geometry and augmentation. Probabilities are per image; 0 disables a transform."""

    model_config = ConfigDict(extra="forbid")

    size: tuple[int, int] | None = Field(
        None, description="(height, width) after resizing; None keeps the size"
    )
    channels: int | None = Field(None, description="1 or 3; None keeps what the file has")
    hflip: float = Field(0.0, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    rot90: float = Field(0.0, ge=0, le=1, description="probability of a random 90/180/270-degree rotation")
    resized_crop_scale: tuple[float, float] | None = Field(
        None, description="area fraction range of a random resized crop (needs size); None = plain resize"
    )
    antialias: bool = Field(
        True, description="antialiased resizing; False matches the ONNX/torch inference pre-processor exactly"
    )
    allow_transpose: bool = Field(
        False,
        description="let rot90 turn a non-square size into its transpose (fully convolutional models "
        "trained with batch size 1 only: images of both orientations cannot be stacked)",
    )
    brightness: float = Field(0.0, ge=0)
    contrast: float = Field(0.0, ge=0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AugmentConfig:
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or null, got {self.channels}")
        if self.resized_crop_scale is not None and self.size is None:
            raise ValueError("resized_crop_scale needs size")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        if self.rot90 and self.size is not None and self.size[0] != self.size[1] and not self.allow_transpose:
            raise ValueError(
                "rot90 swaps height and width: use it only with square sizes, or set allow_transpose "
                "(batch size 1)"
            )
        return self


class RandomRot90(v2.Transform):
    """Rotate by a random multiple of 90 degrees, exactly (no interpolation), boxes included."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        applied = torch.rand(()) < self.p
        return {"k": int(torch.randint(1, 4, ()).item()) if applied else 0}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        k = params["k"]
        if k == 0 or not isinstance(inpt, Tensor):
            return inpt
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return _rot90_boxes(inpt, k)
        return tv_tensors.wrap(torch.rot90(inpt, k, dims=(-2, -1)), like=inpt)


def _rot90_boxes(boxes: tv_tensors.BoundingBoxes, k: int) -> tv_tensors.BoundingBoxes:
    # torch.rot90 by one step moves pixel (row r, col c) of an HxW image to (W - 1 - c, r), so a
    # pixel-edge box (x0, y0, x1, y1) becomes (y0, W - x1, y1, W - x0) on a WxH canvas.
    height, width = boxes.canvas_size
    data = boxes.as_subclass(Tensor)
    for _ in range(k):
        x0, y0, x1, y1 = data.unbind(-1)
        data = torch.stack([y0, width - x1, y1, width - x0], dim=-1)
        height, width = width, height
    return tv_tensors.BoundingBoxes(data, format="XYXY", canvas_size=(height, width))


class SampleTransform:
    """Callable ``Sample -> Sample`` applying one joint v2 pipeline to image, mask and boxes."""

    def __init__(self, config: AugmentConfig, train: bool) -> None:
        self.config = config
        self.train = train
        steps: list[v2.Transform] = []
        if config.size is not None:
            if train and config.resized_crop_scale is not None:
                steps.append(
                    v2.RandomResizedCrop(
                        config.size, scale=config.resized_crop_scale, antialias=config.antialias
                    )
                )
            else:
                steps.append(v2.Resize(config.size, antialias=config.antialias))
        if train:
            if config.hflip:
                steps.append(v2.RandomHorizontalFlip(config.hflip))
            if config.vflip:
                steps.append(v2.RandomVerticalFlip(config.vflip))
            if config.rot90:
                steps.append(RandomRot90(config.rot90))
            if config.brightness or config.contrast:
                steps.append(v2.ColorJitter(brightness=config.brightness, contrast=config.contrast))
        steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
        if config.mean is not None and config.std is not None:
            steps.append(v2.Normalize(list(config.mean), list(config.std)))
        self.pipeline = v2.Compose(steps)
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=1.0)

    def __call__(self, sample: Sample) -> Sample:
        if sample.image is None:
            raise ValueError(f"{sample.path}: load the sample before transforming it")
        image = np.asarray(sample.image)
        if self.config.channels is not None:
            image = convert_channels(image, self.config.channels)
        image_t = torch.from_numpy(np.array(image, order="C", copy=True))  # writable: torch warns otherwise
        image_t = image_t.unsqueeze(0) if image_t.ndim == 2 else image_t.permute(2, 0, 1)
        height, width = image_t.shape[-2:]
        inputs: dict[str, Any] = {"image": tv_tensors.Image(image_t)}
        if sample.mask is not None:
            mask = torch.as_tensor(np.asarray(sample.mask))
            inputs["mask"] = tv_tensors.Mask(mask if mask.ndim == 3 else mask.unsqueeze(0))
        if sample.boxes is not None:
            boxes = torch.as_tensor(np.asarray(sample.boxes), dtype=torch.float32).reshape(-1, 4)
            inputs["boxes"] = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
            classes = (
                sample.box_classes if sample.box_classes is not None else np.ones(len(boxes), dtype=np.int64)
            )
            inputs["labels"] = torch.as_tensor(np.asarray(classes), dtype=torch.long).reshape(-1)
        out = self.pipeline(inputs)
        if "boxes" in out:
            # Only boxes and their labels: given the whole dict, torchvision would also index a mask
            # whose first dimension happens to equal the number of boxes.
            out.update(self.sanitize({"boxes": out["boxes"], "labels": out["labels"]}))
        changes: dict[str, Any] = {"image": out["image"].as_subclass(Tensor)}
        if "mask" in out:
            mask_out = out["mask"].as_subclass(Tensor)
            changes["mask"] = mask_out if np.asarray(sample.mask).ndim == 3 else mask_out[0].long()
            if self.train and self.config.resized_crop_scale is not None:
                changes.update(_labels_from_mask(changes["mask"]))
        if "boxes" in out:
            changes["boxes"] = out["boxes"].as_subclass(Tensor).float()
            changes["box_classes"] = out["labels"]
        return sample.replace(**changes)


def _labels_from_mask(mask: Tensor) -> dict[str, Any]:
    """Image label and classes of what a random crop kept: a crop can cut a defect away."""
    if mask.ndim == 3:
        present = [k + 1 for k in range(mask.shape[0]) if bool(mask[k].any())]
    else:
        present = [int(c) for c in mask.unique().tolist() if c != 0]
    return {"label": int(bool(present)), "classes": present}


def build_transform(config: AugmentConfig | dict[str, Any], train: bool) -> SampleTransform:
    """The transform for training (random augmentation) or evaluation (resize/normalise only)."""
    return SampleTransform(config if isinstance(config, AugmentConfig) else AugmentConfig(**config), train)
