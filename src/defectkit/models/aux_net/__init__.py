"""Defect-Aux-Net (``aux_net``, paper 000): classification, segmentation and detection in one network."""

from __future__ import annotations

from defectkit.models import register_model
from defectkit.models.aux_net.detection import (
    DecodeConfig,
    Detections,
    MatchConfig,
    anchor_boxes,
    anchor_coverage,
    decode_boxes,
    encode_boxes,
    fit_aspect_ratios,
    match_anchors,
    select_detections,
)
from defectkit.models.aux_net.model import (
    IMAGE_JUDGES,
    STRIDE,
    AttentionEncoder,
    AuxNet,
    AuxNetOutput,
    detection_anchors,
    image_judge,
    level_stride,
)

# The constructor is the builder: its keyword arguments are the config's ``model`` section.
aux_net = register_model("aux_net")(AuxNet)

__all__ = [
    "IMAGE_JUDGES",
    "STRIDE",
    "AttentionEncoder",
    "AuxNet",
    "AuxNetOutput",
    "DecodeConfig",
    "Detections",
    "MatchConfig",
    "anchor_boxes",
    "anchor_coverage",
    "aux_net",
    "decode_boxes",
    "detection_anchors",
    "encode_boxes",
    "fit_aspect_ratios",
    "image_judge",
    "level_stride",
    "match_anchors",
    "select_detections",
]
