"""The mixed-supervision segmentation-decision network (Bozic, Tabernik & Skocaj, Computers in
Industry 2021), used per surface as the SBDD of paper 002 (section 3.1.3).

Segmentation subnetwork: 5x5 conv blocks (conv, feature norm, ReLU) with three 2x2 max-pools,
``32; pool; 64 x3; pool; 64 x4; pool``, then a 15x15 conv block to ``volume_channels`` (1024 in the
paper) and a 1x1 conv to the mask logits at 1/8 resolution. Decision subnetwork: the volume and
the mask, concatenated, through three (pool, 5x5 conv block) stages to 8, 16 and 32 channels;
global max and average pooling of those 32 channels and of the mask give 66 numbers, and one
linear layer gives the image-level defect logit.

Choices where the paper leaves room (each a parameter):

* ``widths`` scales the segmentation trunk (paper: 32, 64, 64), ``volume_channels`` the 15x15 layer.
* ``mask_norm``: the reference code standardises the 1x1 mask logits per image (feature norm);
  kept by default because it produced the paper's numbers.
* ``mask_bias``: that feature norm's bias. The reference declares it "not included" but builds it
  as an ``nn.Parameter``, which trains (the flag it passes is overridden), so it has one in effect,
  and the shipped configs set ``mask_bias: true``. Without it a standardised map averages logit 0
  on every image, and a good image's mask loss cannot fall below ln 2. The default (false) is what
  models and benchmark cells made before the option existed computed, so a config or model card
  that does not name it means what it meant then. Weights without a bias loaded into a network
  with one get a zero bias, the same network.
* The gradient-flow adjustment multiplies by ``decision_gradient`` (0 = paper) the gradient that
  flows from the decision head into the volume and the pooled mask; the recipe sets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from defectkit.models.components import FeatureNorm, GradientMultiply, conv_block

STRIDE = 8
MIN_SIDE = 64


@dataclass
class SegDecOutput:
    decision_logit: Tensor  # B
    mask_logits: Tensor  # Bx1x(H/8)x(W/8)


class SegmentationNet(nn.Module):
    def __init__(
        self, in_channels: int, widths: tuple[int, int, int] = (32, 64, 64), volume_channels: int = 1024
    ) -> None:
        super().__init__()
        first, second, third = widths
        self.trunk = nn.Sequential(
            conv_block(in_channels, first, 5),
            nn.MaxPool2d(2),
            conv_block(first, second, 5),
            conv_block(second, second, 5),
            conv_block(second, second, 5),
            nn.MaxPool2d(2),
            conv_block(second, third, 5),
            conv_block(third, third, 5),
            conv_block(third, third, 5),
            conv_block(third, third, 5),
            nn.MaxPool2d(2),
            conv_block(third, volume_channels, 15),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.trunk(images)


class MaskHead(nn.Module):
    def __init__(self, volume_channels: int, normalise: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(volume_channels, 1, kernel_size=1, bias=not normalise)
        nn.init.xavier_normal_(self.conv.weight)
        self.norm = FeatureNorm(1, bias=bias) if normalise else nn.Identity()

    def forward(self, volume: Tensor) -> Tensor:
        return self.norm(self.conv(volume))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Weights saved without ``mask_bias`` carry the norm's scale but no bias: zero is what they
        # computed. A partial state dict (no scale either) leaves the bias as it is.
        key = f"{prefix}norm.bias"
        has_bias = isinstance(self.norm, FeatureNorm) and self.norm.bias is not None
        if has_bias and key not in state_dict and f"{prefix}norm.scale" in state_dict:
            state_dict[key] = torch.zeros_like(state_dict[f"{prefix}norm.scale"])
        super()._load_from_state_dict(state_dict, prefix, *args)


class DecisionNet(nn.Module):
    def __init__(self, volume_channels: int, widths: tuple[int, int, int] = (8, 16, 32)) -> None:
        super().__init__()
        a, b, c = widths
        self.features = nn.Sequential(
            nn.MaxPool2d(2),
            conv_block(volume_channels + 1, a, 5),
            nn.MaxPool2d(2),
            conv_block(a, b, 5),
            nn.MaxPool2d(2),
            conv_block(b, c, 5),
        )
        self.classifier = nn.Linear(2 * c + 2, 1)

    def forward(self, volume: Tensor, mask_logits: Tensor) -> Tensor:
        features = self.features(torch.cat([volume, mask_logits], dim=1))
        pooled = [
            features.amax(dim=(2, 3)),
            features.mean(dim=(2, 3)),
            mask_logits.amax(dim=(2, 3)),
            mask_logits.mean(dim=(2, 3)),
        ]
        return self.classifier(torch.cat(pooled, dim=1)).squeeze(1)


class SegDecNet(nn.Module):
    """Segmentation subnetwork + decision subnetwork. Input sides must be divisible by 8."""

    def __init__(
        self,
        in_channels: int = 1,
        widths: tuple[int, int, int] = (32, 64, 64),
        volume_channels: int = 1024,
        decision_widths: tuple[int, int, int] = (8, 16, 32),
        mask_norm: bool = True,
        mask_bias: bool = False,
    ) -> None:
        super().__init__()
        self.segmentation = SegmentationNet(in_channels, widths, volume_channels)
        self.mask_head = MaskHead(volume_channels, mask_norm, mask_bias)
        self.decision_head = DecisionNet(volume_channels, decision_widths)
        # Gradient-flow adjustment: how much decision-loss gradient reaches the segmentation net.
        self.decision_gradient = GradientMultiply(1.0)

    def forward(self, images: Tensor) -> SegDecOutput:
        height, width = images.shape[-2:]
        if height % STRIDE or width % STRIDE:
            raise ValueError(f"segdec input sides must be divisible by {STRIDE}, got {height}x{width}")
        if min(height, width) < MIN_SIDE:
            # Three pools in each subnetwork: a smaller side would pool away to nothing.
            raise ValueError(f"segdec input sides must be at least {MIN_SIDE} pixels, got {height}x{width}")
        volume = self.segmentation(images)
        mask_logits = self.mask_head(volume)
        decision = self.decision_head(self.decision_gradient(volume), self.decision_gradient(mask_logits))
        return SegDecOutput(decision, mask_logits)

    def inspect(self, images: Tensor) -> tuple[Tensor, Tensor]:
        output = self(images)
        return torch.sigmoid(output.decision_logit), torch.sigmoid(output.mask_logits)
