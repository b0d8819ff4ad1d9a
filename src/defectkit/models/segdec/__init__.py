"""The segmentation-decision network (``segdec``): paper 002's per-surface detector (SBDD)."""

from __future__ import annotations

from collections.abc import Sequence

from defectkit.models import register_model
from defectkit.models.segdec.model import STRIDE, DecisionNet, SegDecNet, SegDecOutput, SegmentationNet


@register_model("segdec")
def segdec(
    in_channels: int = 1,
    widths: Sequence[int] = (32, 64, 64),
    volume_channels: int = 1024,
    decision_widths: Sequence[int] = (8, 16, 32),
    mask_norm: bool = True,
    mask_bias: bool = False,
) -> SegDecNet:
    a, b, c = widths
    d, e, f = decision_widths
    return SegDecNet(in_channels, (a, b, c), volume_channels, (d, e, f), mask_norm, mask_bias)


__all__ = ["STRIDE", "DecisionNet", "SegDecNet", "SegDecOutput", "SegmentationNet", "segdec"]
