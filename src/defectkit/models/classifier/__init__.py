"""Image-level classifiers on timm backbones (``classifier``): the ImageNet baseline of paper 004."""

from __future__ import annotations

from defectkit.models import register_model
from defectkit.models.classifier.model import ImageClassifier


@register_model("classifier")
def classifier(
    backbone: str = "tf_efficientnet_lite0", in_channels: int = 3, drop_rate: float = 0.2
) -> ImageClassifier:
    return ImageClassifier(backbone, in_channels, drop_rate)


__all__ = ["ImageClassifier", "classifier"]
