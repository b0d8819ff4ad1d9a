"""The two data contracts every part of defectkit speaks: :class:`Sample` and :class:`Batch`.

Label conventions (see DESIGN.md, "Contracts"):

* ``None`` always means "this label level is not known for this image", never "no defect".
* Defect class ids are ``1..K`` everywhere (``classes``, ``box_classes``, mask values); ``0`` is
  background / good. ``DatasetInfo.class_names[k - 1]`` is the name of class ``k``; the multi-hot
  ``Batch.classes`` puts class ``k`` in column ``k - 1``.
* Readers return *index* samples: ``image`` (and usually ``mask``) are ``None`` until
  :func:`defectkit.data.io.load_sample` reads the pixels. A mask that is known but not yet read is
  referenced by ``meta["mask_path"]`` (a file), ``meta["mask_rle"]`` (run-length strings) or
  ``meta["mask_empty"]`` (known to be all background, e.g. a good MVTec image), so
  :attr:`Sample.has_mask` is true before loading. This keeps a 12k-image Severstal index in a few
  MB instead of 15 GB.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

ArrayLike = np.ndarray | Tensor

# Meta keys that stand for a known mask not yet read (see the module docstring) ...
MASK_REFERENCE_KEYS = ("mask_path", "mask_rle", "mask_empty", "mask_from_boxes")
# ... and every meta key that describes how to read a mask; dropping them all forgets the mask.
MASK_KEYS = (*MASK_REFERENCE_KEYS, "mask_depth", "mask_class", "mask_binary")


@dataclass
class Sample:
    """One image and everything known about it."""

    path: str
    image: ArrayLike | None = None
    label: int | None = None
    classes: list[int] | None = None
    mask: ArrayLike | None = None
    boxes: ArrayLike | None = None
    box_classes: ArrayLike | None = None
    surface: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_mask(self) -> bool:
        """True when the pixel mask is known (loaded or referenced)."""
        return self.mask is not None or any(k in self.meta for k in MASK_REFERENCE_KEYS)

    @property
    def has_boxes(self) -> bool:
        return self.boxes is not None

    @property
    def part(self) -> str | None:
        part = self.meta.get("part")
        return None if part is None else str(part)

    def replace(self, **changes: Any) -> Sample:
        """A shallow copy with ``changes`` applied; ``meta`` is copied so edits never leak back."""
        changes.setdefault("meta", dict(self.meta))
        return replace(self, **changes)


@dataclass
class DatasetInfo:
    """What a dataset is, beside its samples: names live here, ids live in samples."""

    name: str
    format: str
    root: str
    class_names: list[str] = field(default_factory=list)
    surface_names: list[str] = field(default_factory=list)
    multilabel_masks: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def safe_class_name(self, class_id: int) -> str:
        """:meth:`class_name`, or a readable placeholder for an id the dataset does not define."""
        try:
            return self.class_name(class_id)
        except KeyError:
            return f"<undefined class {class_id}>"

    def class_name(self, class_id: int) -> str:
        if class_id == 0:
            return "good"
        if not 1 <= class_id <= len(self.class_names):
            raise KeyError(f"class id {class_id} outside 1..{len(self.class_names)} for dataset {self.name}")
        return self.class_names[class_id - 1]

    def class_id(self, name: str) -> int:
        try:
            return self.class_names.index(name) + 1
        except ValueError:
            raise KeyError(
                f"unknown class {name!r} for dataset {self.name}; known: {self.class_names}"
            ) from None


@dataclass
class Dataset:
    """A reader's result: the samples, the dataset description and any problems met on the way."""

    samples: list[Sample]
    info: DatasetInfo
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: which file and why. ``severity`` is "error" or "warning"."""

    path: str
    reason: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.reason}"


@dataclass
class Batch:
    """Stacked samples. Absent labels are zero-filled and flagged by the ``has_*`` masks."""

    images: Tensor  # BxCxHxW float
    label: Tensor  # B long, -1 where unknown
    has_label: Tensor  # B bool
    mask: Tensor  # Bx1xHxW long class-id map, or BxKxHxW bool for multi-label masks
    has_mask: Tensor  # B bool
    boxes: list[Tensor]  # per image Nx4 float xyxy (empty where unknown)
    box_classes: list[Tensor]  # per image N long
    has_boxes: Tensor  # B bool
    classes: Tensor  # BxK float multi-hot
    has_classes: Tensor  # B bool
    surface: Tensor  # B long, -1 where unknown
    has_surface: Tensor  # B bool
    paths: list[str]
    meta: list[dict[str, Any]]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        moved: dict[str, Any] = {k: v.to(device) for k, v in self.__dict__.items() if isinstance(v, Tensor)}
        moved["boxes"] = [b.to(device) for b in self.boxes]
        moved["box_classes"] = [c.to(device) for c in self.box_classes]
        return replace(self, **moved)


def _as_tensor(value: ArrayLike) -> Tensor:
    return value if isinstance(value, Tensor) else torch.from_numpy(np.ascontiguousarray(value))


def _image_tensor(image: ArrayLike | None, path: str) -> Tensor:
    if image is None:
        raise ValueError(f"{path}: sample has no pixels; load it (defectkit.data.io.load_sample) first")
    tensor = _as_tensor(image)
    if tensor.dtype == torch.uint8:
        # Raw reader output (HxW or HxWxC): collate still works, scaled to [0, 1] CxHxW.
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        tensor = tensor.float() / 255.0
    if tensor.ndim != 3:
        raise ValueError(f"{path}: image must be CxHxW after transforms, got shape {tuple(tensor.shape)}")
    return tensor.float()


def collate(samples: list[Sample], num_classes: int = 0, surface_names: list[str] | None = None) -> Batch:
    """Stack any mix of samples: some with masks, some with boxes, some with nothing but a path.

    ``num_classes`` sets the width of the multi-hot ``classes`` tensor (0: the largest id seen).
    ``surface_names`` maps ``Sample.surface`` to ids; unknown or missing surfaces become -1.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    images = [_image_tensor(s.image, s.path) for s in samples]
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) != 1:
        raise ValueError(f"images in one batch must share a shape (resize them); got {sorted(shapes)}")
    stacked = torch.stack(images)
    batch_size, _, height, width = stacked.shape

    masks = [None if s.mask is None else _as_tensor(s.mask) for s in samples]
    multilabel = any(m is not None and m.ndim == 3 for m in masks)
    if multilabel:
        depth = max(int(m.shape[0]) for m in masks if m is not None and m.ndim == 3)
        mask = torch.zeros(batch_size, depth, height, width, dtype=torch.bool)
    else:
        mask = torch.zeros(batch_size, 1, height, width, dtype=torch.long)
    for i, m in enumerate(masks):
        if m is None:
            continue
        if tuple(m.shape[-2:]) != (height, width):
            raise ValueError(
                f"{samples[i].path}: mask {tuple(m.shape)} does not match image {(height, width)}"
            )
        if multilabel and m.ndim == 2:
            raise ValueError(f"{samples[i].path}: cannot mix class-id masks with multi-label KxHxW masks")
        mask[i] = m.bool() if multilabel else m.long().unsqueeze(0)

    ids_seen = [c for s in samples for c in (s.classes or [])]
    width_k = max([num_classes, *ids_seen]) if ids_seen or num_classes else 0
    for s in samples:
        bad = [c for c in s.classes or [] if not 1 <= c <= width_k]
        if bad:
            raise ValueError(f"{s.path}: class ids {bad} outside 1..{width_k} (0 is background, not a class)")
    classes = torch.zeros(batch_size, width_k)
    for i, s in enumerate(samples):
        for c in s.classes or []:
            classes[i, c - 1] = 1.0

    surface_ids = {name: i for i, name in enumerate(surface_names or [])}
    surface = torch.tensor([surface_ids.get(s.surface, -1) if s.surface else -1 for s in samples])

    return Batch(
        images=stacked,
        label=torch.tensor([-1 if s.label is None else int(s.label) for s in samples], dtype=torch.long),
        has_label=torch.tensor([s.label is not None for s in samples]),
        mask=mask,
        has_mask=torch.tensor([m is not None for m in masks]),
        boxes=[
            _as_tensor(s.boxes).float().reshape(-1, 4) if s.boxes is not None else torch.zeros(0, 4)
            for s in samples
        ],
        box_classes=[
            _as_tensor(s.box_classes).long().reshape(-1)
            if s.box_classes is not None
            else torch.zeros(0, dtype=torch.long)
            for s in samples
        ],
        has_boxes=torch.tensor([s.boxes is not None for s in samples]),
        classes=classes,
        has_classes=torch.tensor([s.classes is not None for s in samples]),
        surface=surface,
        has_surface=surface >= 0,
        paths=[s.path for s in samples],
        meta=[dict(s.meta) for s in samples],
    )
