"""Layers shared by model families."""

from defectkit.models.components.attention import ATTENTIONS, Attention, ChannelSpatialAttention
from defectkit.models.components.layers import FeatureNorm, GradientMultiply, conv_block, conv_norm_relu

__all__ = [
    "ATTENTIONS",
    "Attention",
    "ChannelSpatialAttention",
    "FeatureNorm",
    "GradientMultiply",
    "conv_block",
    "conv_norm_relu",
]
