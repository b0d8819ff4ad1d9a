"""Anchors to boxes for Defect-Aux-Net's RetinaNet head: matching (training) and decoding (inference).

RetinaNet's conventions, which the paper inherits without stating them: an anchor is positive
for the ground-truth box it overlaps most when the IoU is >= ``positive_iou`` (0.5), negative
below ``negative_iou`` (0.4), ignored between; every ground-truth box also claims its best anchor
(low-quality matches), so a small defect is never without a positive anchor. Box offsets are
torchvision's ``BoxCoder`` encoding with weights (1, 1, 1, 1). At inference each class keeps the
anchors scoring >= ``score_threshold`` (the ``top_k`` best over all levels), the decoded boxes
(clipped to the image in the graph) go through per-class NMS at ``nms_iou``, and the
``max_detections`` best remain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder, Matcher
from torchvision.ops import batched_nms, box_iou

BOX_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


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
