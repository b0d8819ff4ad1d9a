"""The weakly supervised localisation + decision network (``weak_lnet``, paper 004)."""

from __future__ import annotations

from collections.abc import Sequence

from defectkit.models import register_model
from defectkit.models.components.layers import Norm, PaddingMode
from defectkit.models.weak_lnet.model import (
    STRIDE,
    DecisionNet,
    LocalisationNet,
    ResidualSpatialAttention,
    SharedLayers,
    WeakLNet,
    WeakLNetOutput,
)


@register_model("weak_lnet")
def weak_lnet(
    in_channels: int = 1,
    shared_widths: Sequence[int] = (32, 64, 128, 128),
    lnet_widths: Sequence[int] = (64, 64),
    lnet_volume: int = 512,
    lnet_kernel: int = 15,
    lnet_stride: int = 1,
    heat_norm: bool = False,
    dnet_widths: Sequence[int] = (64, 64, 64, 128, 256),
    fc_width: int = 266,
    pooling: str = "avg",
    lse_r: float = 5.0,
    padding_mode: PaddingMode = "reflect",
    norm: Norm = "batch",
) -> WeakLNet:
    return WeakLNet(
        in_channels,
        tuple(shared_widths),
        tuple(lnet_widths),
        lnet_volume,
        lnet_kernel,
        lnet_stride,
        heat_norm,
        tuple(dnet_widths),
        fc_width,
        pooling,
        lse_r,
        padding_mode,
        norm,
    )


__all__ = [
    "STRIDE",
    "DecisionNet",
    "LocalisationNet",
    "ResidualSpatialAttention",
    "SharedLayers",
    "WeakLNet",
    "WeakLNetOutput",
    "weak_lnet",
]
