"""A timm backbone with one defect logit: image-level OK/NG from image labels, no heat map.

Paper 004's Table 6 baseline is an ImageNet-initialised ResNet with its last layer replaced for
the two classes; no ResNet weights are available offline here, so the default backbone is the
EfficientNet-Lite0 whose ImageNet weights install from pip (``defectkit.models.pretrained``).
Any timm architecture name works (``resnet18`` with a user's own weights file).
"""

from __future__ import annotations

import timm
import torch
from torch import Tensor, nn


class ImageClassifier(nn.Module):
    def __init__(
        self, backbone: str = "tf_efficientnet_lite0", in_channels: int = 3, drop_rate: float = 0.2
    ) -> None:
        super().__init__()
        # One logit; pretrained ImageNet weights load into everything but the head
        # (``defectkit.models.pretrained.load_by_position`` with ``skip_last=2``).
        self.backbone: nn.Module = timm.create_model(
            backbone, pretrained=False, in_chans=in_channels, drop_rate=drop_rate, num_classes=1
        )

    def forward(self, images: Tensor) -> Tensor:
        logits: Tensor = self.backbone(images)
        return logits.squeeze(1)

    def inspect(self, images: Tensor) -> tuple[Tensor, None]:
        return torch.sigmoid(self(images)), None
