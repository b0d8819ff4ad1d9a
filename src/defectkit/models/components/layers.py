"""Small layers used by several model families."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


class FeatureNorm(nn.Module):
    """Per-sample, per-channel normalisation over the spatial dimensions, with learnt scale/bias.

    The "feature normalisation" of Bozic et al. (2021). Their reference implementation divides
    the centred features by ``sqrt(std + eps)`` rather than ``sqrt(var + eps)``; the result keeps
    some of the input's spread (output std = sqrt(input std)), which lets the 1-channel mask head
    reach confident logits. ``divisor="sqrt_std"`` (default) follows the reference, which produced
    the paper's figures; ``divisor="std"`` is plain standardisation (instance norm).
    """

    def __init__(
        self, num_features: int, eps: float = 1e-3, bias: bool = True, divisor: str = "sqrt_std"
    ) -> None:
        super().__init__()
        if divisor not in ("sqrt_std", "std"):
            raise ValueError(f"divisor must be 'sqrt_std' or 'std', got {divisor!r}")
        self.scale = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_features, 1, 1)) if bias else None
        self.eps = eps
        self.divisor = divisor

    def forward(self, features: Tensor) -> Tensor:
        mean = features.mean(dim=(2, 3), keepdim=True)
        if self.divisor == "sqrt_std":
            # Population std (the reference uses the sample std): defined for a 1x1 map too.
            spread = torch.sqrt(features.std(dim=(2, 3), keepdim=True, correction=0) + self.eps)
        else:
            spread = torch.sqrt(features.var(dim=(2, 3), keepdim=True, unbiased=False) + self.eps)
        normalised = self.scale * (features - mean) / spread
        return normalised if self.bias is None else normalised + self.bias


class _GradientMultiplyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, inputs: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output * ctx.factor, None


class GradientMultiply(nn.Module):
    """Identity forward; multiplies the gradient by ``factor`` backward (0 stops it entirely).

    Used for Bozic et al.'s gradient-flow adjustment: the decision loss must not train the
    segmentation subnetwork. ``factor`` is a plain attribute so the recipe can change it.
    """

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, inputs: Tensor) -> Tensor:
        if self.factor == 1.0 or not torch.is_grad_enabled():
            return inputs
        return _GradientMultiplyFunction.apply(inputs, self.factor)


def conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Convolution ("same" padding, no bias: the norm has one) -> FeatureNorm -> ReLU."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    nn.init.xavier_normal_(conv.weight)
    return nn.Sequential(conv, FeatureNorm(out_channels), nn.ReLU(inplace=True))


Norm = Literal["batch", "instance"]


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    """BatchNorm, or InstanceNorm with a learnt scale and shift.

    With batch size 1, training-mode BatchNorm *is* instance normalisation (statistics over one
    image's pixels) but switches to running averages at inference; ``"instance"`` keeps the
    per-image statistics at inference too.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
    raise ValueError(f"norm must be 'batch' or 'instance', got {kind!r}")


def conv_norm_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding_mode: PaddingMode = "zeros",
    norm: Norm = "batch",
    activation: bool = True,
) -> nn.Sequential:
    """Convolution ("same" padding for stride 1, no bias: the norm has one) -> norm -> ReLU.

    ``padding_mode="reflect"`` mirrors the border instead of padding zeros, so a network trained
    without pixel labels has no artificial edge to mistake for an anomaly (paper 004, IV.C).
    """
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        padding_mode=padding_mode,
        bias=False,
    )
    layers: list[nn.Module] = [conv, norm_layer(norm, out_channels)]
    if activation:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)
