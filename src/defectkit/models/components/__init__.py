"""Layers shared by model families."""

from defectkit.models.components.layers import FeatureNorm, GradientMultiply, conv_block, conv_norm_relu

__all__ = ["FeatureNorm", "GradientMultiply", "conv_block", "conv_norm_relu"]
