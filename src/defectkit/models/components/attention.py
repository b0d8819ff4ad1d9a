"""Channel and spatial attention in series (paper 000, Defect-Aux-Net, Figs. 3-5).

Squeeze-and-excitation (global average pool, a bottleneck MLP of reduction ``1 / rd_ratio``,
sigmoid, channel-wise scale; timm's ``SEModule``) followed by spatial attention (average and max
over channels, a ``kernel_size`` convolution, sigmoid, pixel-wise scale; timm's CBAM
``SpatialAttn``). The paper gives neither the reduction nor the kernel: 16 matches its Table IV
parameter count for ResNet-50, 7 is CBAM's. Either part can be switched off (Table IV's
ablation: none, SE, SA, SE+SA).
"""

from __future__ import annotations

from typing import Any, Literal

from timm.layers import SEModule
from timm.layers.cbam import SpatialAttn
from torch import Tensor, nn

Attention = Literal["none", "se", "sa", "se+sa"]
ATTENTIONS: tuple[str, ...] = ("none", "se", "sa", "se+sa")


class ChannelSpatialAttention(nn.Module):
    """SE then spatial attention on a C-channel feature map (either may be off)."""

    def __init__(
        self,
        channels: int,
        attention: Attention = "se+sa",
        rd_ratio: float = 1.0 / 16.0,
        kernel_size: int = 7,
        **factory: Any,  # device / dtype, as timm passes them to the attention layers it builds
    ) -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention={attention!r}: use one of {ATTENTIONS}")
        use_se, use_sa = "se" in attention, "sa" in attention
        self.channel: nn.Module = (
            SEModule(channels, rd_ratio=rd_ratio, **factory) if use_se else nn.Identity()
        )
        self.spatial: nn.Module = SpatialAttn(kernel_size, **factory) if use_sa else nn.Identity()

    def forward(self, features: Tensor) -> Tensor:
        out: Tensor = self.spatial(self.channel(features))
        return out
