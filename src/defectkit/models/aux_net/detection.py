"""Anchors for Defect-Aux-Net's RetinaNet head: their shapes, matching (training), decoding (inference).

RetinaNet's conventions, which the paper inherits without stating them: an anchor is positive
for the ground-truth box it overlaps most when the IoU is >= ``positive_iou`` (0.5), negative
below ``negative_iou`` (0.4), ignored between; every ground-truth box also claims its best anchor
(low-quality matches), so a small defect is never without a positive anchor. Box offsets are
torchvision's ``BoxCoder`` encoding with weights (1, 1, 1, 1). At inference each class keeps the
anchors scoring >= ``score_threshold`` (the ``top_k`` best over all levels), the decoded boxes
(clipped to the image in the graph) go through per-class NMS at ``nms_iou``, and the
``max_detections`` best remain.

Anchor shapes: RetinaNet's three sizes per level (base x 2^0, 2^(1/3), 2^(2/3)) times the
``aspect_ratios`` (height / width, torchvision's convention; RetinaNet's 0.5, 1, 2).
:func:`fit_aspect_ratios` derives ratios from training boxes instead, for defects whose shapes
RetinaNet's ratios miss (KolektorSDD's cracks are about 6 times wider than high), and
:func:`anchor_coverage` measures how many boxes any anchor can be positive for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder, Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import batched_nms, box_iou

BOX_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


def retinanet_anchor_sizes(base_sizes: Sequence[float]) -> tuple[tuple[float, ...], ...]:
    """RetinaNet's three sizes per level: base x 2^0, 2^(1/3), 2^(2/3)."""
    return tuple(tuple(float(base) * 2.0 ** (i / 3.0) for i in range(3)) for base in base_sizes)


def anchor_generator(base_sizes: Sequence[float], aspect_ratios: Sequence[float]) -> AnchorGenerator:
    """One level per base size, each with RetinaNet's three sizes times ``aspect_ratios``."""
    sizes = retinanet_anchor_sizes(base_sizes)
    return AnchorGenerator(sizes, (tuple(float(r) for r in aspect_ratios),) * len(sizes))


def anchor_boxes(
    size: tuple[int, int], strides: Sequence[int], base_sizes: Sequence[float], aspect_ratios: Sequence[float]
) -> Tensor:
    """Every anchor (A x 4 xyxy) of a ``size`` = (height, width) input whose detection levels
    have ``strides``: the anchors the network places, without running it."""
    height, width = size
    levels = [torch.zeros(1, 1, height // stride, width // stride) for stride in strides]
    images = ImageList(torch.zeros(1, 1, height, width), [(height, width)])
    anchors: Tensor = anchor_generator(base_sizes, aspect_ratios)(images, levels)[0]
    return anchors


def fit_aspect_ratios(boxes: np.ndarray, count: int = 3) -> tuple[float, ...]:
    """``count`` aspect ratios (height / width) for boxes (N x 4 xyxy): the centres of ``count``
    equal shares of the boxes' log ratios (their (i + 0.5) / count quantiles), so each anchor
    shape stands for as many boxes as the others. Rounded to 3 significant digits."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    sized = (width > 0) & (height > 0)
    if not sized.any():
        raise ValueError("cannot fit anchor aspect ratios: no box with a positive width and height")
    log_ratios = np.log(height[sized] / width[sized])
    centres = np.exp(np.quantile(log_ratios, (np.arange(count) + 0.5) / count))
    return tuple(float(f"{ratio:.3g}") for ratio in centres)


def anchor_coverage(boxes: Tensor, anchors: Tensor, iou: float = 0.5) -> float:
    """The share of ``boxes`` (N x 4) that some anchor overlaps at IoU >= ``iou``: the boxes that
    get a positive anchor without falling back on low-quality matches."""
    if boxes.numel() == 0:
        return float("nan")
    return float((box_iou(boxes, anchors).amax(dim=1) >= iou).float().mean())


@dataclass(frozen=True)
class MatchConfig:
    positive_iou: float = 0.5
    negative_iou: float = 0.4


@dataclass(frozen=True)
class DecodeConfig:
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    top_k: int = 1000
    max_detections: int = 100


@dataclass
class Detections:
    """One image's boxes (N x 4 xyxy pixels), scores (N) and class ids (N, 1..K)."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor


def match_anchors(anchors: Tensor, boxes: Tensor, config: MatchConfig = MatchConfig()) -> Tensor:
    """For each anchor: the index of its ground-truth box, -1 (background) or -2 (ignored)."""
    if boxes.numel() == 0:
        return torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    matcher = Matcher(config.positive_iou, config.negative_iou, allow_low_quality_matches=True)
    return matcher(box_iou(boxes, anchors))


def encode_boxes(matched_boxes: Tensor, anchors: Tensor) -> Tensor:
    """Regression targets of ``anchors`` towards ``matched_boxes`` (both A x 4 xyxy)."""
    return BOX_CODER.encode_single(matched_boxes, anchors)


def decode_boxes(deltas: Tensor, anchors: Tensor) -> Tensor:
    return BOX_CODER.decode_single(deltas, anchors)


def select_detections(
    anchor_scores: Tensor, anchor_boxes: Tensor, config: DecodeConfig = DecodeConfig()
) -> Detections:
    """One image's detections from per-anchor class probabilities (A x K) and decoded boxes
    (A x 4): score threshold, the ``top_k`` best, per-class NMS, ``max_detections``."""
    num_classes = anchor_scores.shape[-1]
    scores = anchor_scores.flatten()
    candidates = torch.nonzero(scores >= config.score_threshold).squeeze(1)
    chosen = candidates[scores[candidates].topk(min(config.top_k, candidates.numel())).indices]
    boxes = anchor_boxes[torch.div(chosen, num_classes, rounding_mode="floor")]
    labels = chosen % num_classes + 1
    keep = batched_nms(boxes, scores[chosen], labels, config.nms_iou)[: config.max_detections]
    return Detections(boxes[keep], scores[chosen][keep], labels[keep])
