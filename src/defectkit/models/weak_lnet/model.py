"""The weakly supervised localisation + decision network of Xu, Lv, Deng & Li (IEEE Access 2020,
paper 004): shared VGG-like layers, a localisation network (LNet) whose sigmoid output is a defect
heat map learnt from image labels only, and a decision network (DNet) that looks at the shared
features through that heat map.

Layers (paper Tables 1-3), every convolution followed by BatchNorm and ReLU:

* Shared (Table 1): 3x3 convs ``32, 32; pool; 64, 64; pool; 128, 128; pool; 128`` -> 1/8 resolution.
* LNet (Table 2): 5x5 convs ``64, 64``, a 15x15 conv to 512 channels, a 1x1 conv to one channel
  with BatchNorm and a sigmoid: the heat map.
* DNet (Table 3): a residual spatial attention module (RSAM: the shared features multiplied by the
  heat map plus the features themselves, then a 3x3 conv to 64), 3x3 convs ``64; pool; 64; pool;
  128; pool; 256``, global pooling of those 256 channels and of the heat map (257 numbers), a
  fully connected layer of 266 units with ReLU and one output unit: the image defect logit.

Where the paper is ambiguous (each a parameter):

* ``lnet_stride``: Table 2 gives the 15x15 layer stride 2, but the text says every LNet conv has
  stride 1 and the heat map is 1/8 of the input, which the RSAM needs to weight the 1/8-scale
  shared features. Default 1 (the text). With 2 the heat map is 1/16 and is upsampled
  (bilinear) for the RSAM only.
* ``pooling``: Table 3 lists an "LSE" layer, the text global *average* pooling. Default ``"avg"``
  (the text); ``"lse"`` is log-sum-exp pooling ``log(mean(exp(r x))) / r`` with ``lse_r``.
* ``fc_width``: the text and Table 3 both give the hidden layer 266 units (kept); the text's
  "266-dimensional" concatenation is 256 + 1 = 257 numbers, which is what this model builds.
* ``norm``: BatchNorm (default, the paper's) or per-image instance norm. Instance norm passes
  each image's own channel statistics to every pixel, and the weak loss exploits it: a stage-1
  LNet separated the images perfectly on a KolektorSDD hold-out (AP of ``Q`` 1.0) but lit the
  *background* of defective images, not the defect (pixel AUROC 0.04). Statistics shared by a
  positive and a negative image (the recipe's batches of one pair) carry no such signal; the
  same run then gave AP 0.92 and pixel AUROC 0.77, the heat map on the crack.
* ``heat_norm``: Table 2 puts a norm before the sigmoid of the 1x1 layer. With one image per
  batch that standardises each image's heat logits, leaving the mean heat value ``Q`` (all the
  weak loss sees) nearly the same for every image: on KolektorSDD stage 1 ended with ``Q`` =
  0.0073 on defective and 0.0071 on good images, nothing learnt. Default off (a 1x1 conv with
  bias, then the sigmoid); ``Q`` then reached about 0.5 on defective, 0.003 on good images.
* ``padding_mode``: mirror padding in the shared layers and the LNet (IV.C), zeros in the DNet
  (the paper names only the first two).
* ``widths`` etc. scale the network for CPU profiles; the defaults are the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectkit.models.components.layers import Norm, PaddingMode, conv_norm_relu

STRIDE = 8  # the shared layers' three 2x2 pools
MIN_SIDE = 64  # three more pools in the DNet must leave at least one cell (and two in all)


@dataclass
class WeakLNetOutput:
    decision_logit: Tensor  # B
    heat_logits: Tensor  # Bx1xhxw (h = H/8, or H/16 with lnet_stride 2)

    @property
    def heatmap(self) -> Tensor:
        return torch.sigmoid(self.heat_logits)


class SharedLayers(nn.Module):
    """Table 1: two 3x3 conv-norm-ReLU per scale, three 2x2 max-pools, one more conv at 1/8."""

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int] = (32, 64, 128, 128),
        padding_mode: PaddingMode = "reflect",
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        first, second, third, last = widths
        self.out_channels = last
        block = partial(conv_norm_relu, kernel_size=3, padding_mode=padding_mode, norm=norm)
        self.layers = nn.Sequential(
            block(in_channels, first),
            block(first, first),
            nn.MaxPool2d(2),
            block(first, second),
            block(second, second),
            nn.MaxPool2d(2),
            block(second, third),
            block(third, third),
            nn.MaxPool2d(2),
            block(third, last),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)


class LocalisationNet(nn.Module):
    """Table 2: the LNet. Returns heat-map *logits* (the sigmoid is applied by the caller)."""

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int] = (64, 64),
        volume_channels: int = 512,
        volume_kernel: int = 15,
        stride: int = 1,
        heat_norm: bool = False,
        padding_mode: PaddingMode = "reflect",
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        first, second = widths
        block = partial(conv_norm_relu, padding_mode=padding_mode, norm=norm)
        self.features = nn.Sequential(
            block(in_channels, first, 5),
            block(first, second, 5),
            block(second, volume_channels, volume_kernel, stride=stride),
        )
        self.heat = (
            conv_norm_relu(volume_channels, 1, 1, norm=norm, activation=False)
            if heat_norm
            else nn.Conv2d(volume_channels, 1, 1)
        )

    def forward(self, shared: Tensor) -> Tensor:
        return self.heat(self.features(shared))


class ResidualSpatialAttention(nn.Module):
    """RSAM (Fig. 2b): ``conv(features * heat + features)``; the residual keeps what the heat map
    would otherwise erase where it is near zero."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm = "batch") -> None:
        super().__init__()
        self.conv = conv_norm_relu(in_channels, out_channels, 3, norm=norm)

    def forward(self, features: Tensor, heatmap: Tensor) -> Tensor:
        if heatmap.shape[-2:] != features.shape[-2:]:
            heatmap = F.interpolate(heatmap, size=features.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(features * heatmap + features)


class DecisionNet(nn.Module):
    """Table 3: RSAM, conv/pool stages, global pooling of features and heat map, two FC layers."""

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int] = (64, 64, 64, 128, 256),
        fc_width: int = 266,
        pooling: str = "avg",
        lse_r: float = 5.0,
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        if pooling not in ("avg", "lse"):
            raise ValueError(f"pooling must be 'avg' or 'lse', got {pooling!r}")
        attention, a, b, c, d = widths
        self.attention = ResidualSpatialAttention(in_channels, attention, norm)
        block = partial(conv_norm_relu, kernel_size=3, norm=norm)
        self.features = nn.Sequential(
            block(attention, a),
            nn.MaxPool2d(2),
            block(a, b),
            nn.MaxPool2d(2),
            block(b, c),
            nn.MaxPool2d(2),
            block(c, d),
        )
        self.pooling, self.lse_r = pooling, lse_r
        self.classifier = nn.Sequential(
            nn.Linear(d + 1, fc_width), nn.ReLU(inplace=True), nn.Linear(fc_width, 1)
        )

    def pool(self, x: Tensor) -> Tensor:
        if self.pooling == "avg":
            return x.mean(dim=(2, 3))
        count = x.shape[-2] * x.shape[-1]
        flat = x.flatten(2) * self.lse_r
        return (torch.logsumexp(flat, dim=2) - torch.log(torch.tensor(float(count)))) / self.lse_r

    def forward(self, shared: Tensor, heatmap: Tensor) -> Tensor:
        features = self.features(self.attention(shared, heatmap))
        pooled = torch.cat([self.pool(features), self.pool(heatmap)], dim=1)
        return self.classifier(pooled).squeeze(1)


class WeakLNet(nn.Module):
    """Shared layers -> LNet heat map -> DNet decision. Input sides: multiples of 8, at least 64,
    one of them at least 128."""

    def __init__(
        self,
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
    ) -> None:
        super().__init__()
        self.shared = SharedLayers(in_channels, shared_widths, padding_mode, norm)
        self.lnet = LocalisationNet(
            self.shared.out_channels,
            lnet_widths,
            lnet_volume,
            lnet_kernel,
            lnet_stride,
            heat_norm,
            padding_mode,
            norm,
        )
        self.dnet = DecisionNet(self.shared.out_channels, dnet_widths, fc_width, pooling, lse_r, norm)

    def forward(self, images: Tensor) -> WeakLNetOutput:
        height, width = images.shape[-2:]
        if height % STRIDE or width % STRIDE:
            raise ValueError(f"weak_lnet input sides must be divisible by {STRIDE}, got {height}x{width}")
        if min(height, width) < MIN_SIDE:
            raise ValueError(
                f"weak_lnet input sides must be at least {MIN_SIDE} pixels, got {height}x{width}"
            )
        if (height // (8 * STRIDE)) * (width // (8 * STRIDE)) < 2:
            # Per-image normalisation after the DNet's pools needs more than one value per channel.
            raise ValueError(
                f"weak_lnet needs at least two cells at 1/64 scale (e.g. 128x64), got {height}x{width}"
            )
        shared = self.shared(images)
        heat_logits = self.lnet(shared)
        decision = self.dnet(shared, torch.sigmoid(heat_logits))
        return WeakLNetOutput(decision, heat_logits)

    def reset_localisation(self) -> None:
        """Fresh random weights (and BatchNorm statistics) for the shared layers and the LNet, drawn
        as at construction: a new stage-1 attempt (``defectkit.training.weak_lnet``)."""
        for part in (self.shared, self.lnet):
            for module in part.modules():
                reset = getattr(module, "reset_parameters", None) if module is not part else None
                if callable(reset):
                    reset()

    def localise(self, images: Tensor) -> Tensor:
        """Heat-map logits only (shared layers + LNet): all that LNet training needs."""
        return self.lnet(self.shared(images))

    def inspect(self, images: Tensor) -> tuple[Tensor, Tensor]:
        output = self(images)
        return torch.sigmoid(output.decision_logit), output.heatmap
