"""Loss targets every multi-task recipe builds the same way from a :class:`Batch`.

Classes: the multi-hot ``classes`` where known (with one defect class, the image label stands in).
Masks: K channels in {0, 1} from a class-id map or a K x H x W stack. Boxes: the annotated ones,
or, where only a mask is known, one box per connected region of each class (after augmentation,
so they follow every flip and crop).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from defectkit.data.masks import mask_to_boxes
from defectkit.data.sample import Batch


def class_targets(batch: Batch, num_classes: int) -> tuple[Tensor, Tensor]:
    """(B x K multi-hot float, B bool: known), image by image: the known ``classes``; else, with
    one class, the image label; else a good image (label 0) has no class at all."""
    device = batch.images.device
    targets = torch.zeros(len(batch), num_classes, device=device)
    known = torch.zeros(len(batch), dtype=torch.bool, device=device)
    if batch.classes.shape[1] == num_classes:
        targets[batch.has_classes] = batch.classes[batch.has_classes].float().to(device)
        known |= batch.has_classes.to(device)
    labelled = batch.has_label.to(device) & ~known
    if num_classes == 1:
        targets[labelled, 0] = batch.label[labelled].clamp(min=0).float().to(device)
        known |= labelled
    else:
        good = labelled & (batch.label.to(device) == 0)
        known |= good  # all-zero targets: a good image shows none of the K classes
    return targets, known


def mask_targets(mask: Tensor, num_classes: int) -> Tensor:
    """B x 1 x H x W class ids, or B x K' x H x W bool -> B x K x H x W float {0, 1}."""
    if mask.dtype == torch.bool or mask.shape[1] > 1:
        stack = mask.float()
        if stack.shape[1] < num_classes:
            stack = F.pad(stack, (0, 0, 0, 0, 0, num_classes - stack.shape[1]))
        return stack[:, :num_classes]
    ids = torch.arange(1, num_classes + 1, device=mask.device).view(1, -1, 1, 1)
    if num_classes == 1:
        return (mask > 0).float()
    return (mask == ids).float()


def boxes_from_mask(mask: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """One box per connected region of each class in a 1 x H x W id map or K x H x W stack:
    (N x 4 float xyxy pixel edges, N class ids 1..K)."""
    stack = mask_targets(mask[None], num_classes)[0].cpu().numpy() > 0
    boxes, labels = [], []
    for k in range(num_classes):
        found, _ = mask_to_boxes(stack[k].astype(np.uint8))
        boxes.append(found.reshape(-1, 4))
        labels.append(np.full(len(found), k + 1, dtype=np.int64))
    return (
        torch.from_numpy(np.concatenate(boxes).astype(np.float32)).to(mask.device),
        torch.from_numpy(np.concatenate(labels)).to(mask.device),
    )
