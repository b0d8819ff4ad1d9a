"""Table II's single-task segmenters: other decoders on Defect-Aux-Net's attention encoder.

The paper's section F sets its multitask network beside FPN, U-Net, LinkNet and PSPNet segmenters
"with the same bottom-up backbone" (ResNet-50 with SE + SA attention). Those four are
segmentation_models_pytorch's original architectures, so the decoders here are smp's, at smp's
defaults, fed by :class:`~defectkit.models.aux_net.model.AttentionEncoder`:

* ``unet``: decoder channels 256-128-64-32-16, nearest upsampling, skips concatenated;
* ``linknet``: skips added, 32 pre-final channels;
* ``pspnet``: smp's encoder depth 3 (the stages past stride 8 are not built), the pyramid pooling
  module (bins 1, 2, 3, 6) on C3 to 512 channels, dropout 0.2, logits upsampled x8.

U-Net and LinkNet decode five levels back to the input's size, so they also read the encoder's
stride-2 features (C1, which gets no attention module: the paper's attention sits in the residual
stages). The input leads the feature list only because smp's encoders list it first: U-Net takes
its size as the last upsampling's target, and neither decodes it. Each decoder ends in smp's
segmentation head and initialisation, as its smp model has them (K logits from a 3x3 convolution;
1x1 for LinkNet); smp's fixed dropouts stand (PSPNet's 0.2), not AuxNet's ``dropout``. ``fpn`` is
not here: it is :class:`~defectkit.models.aux_net.model.SegmentationHead` on the FPN that the
detection head shares.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from segmentation_models_pytorch.base import SegmentationHead as SmpHead
from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
from segmentation_models_pytorch.decoders.linknet.decoder import LinknetDecoder
from segmentation_models_pytorch.decoders.pspnet.decoder import PSPDecoder
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import Tensor, nn

SEGMENTATION_DECODERS = ("fpn", "unet", "linknet", "pspnet")
# The encoder stages (timm's out_indices: 0 is stride 2 ... 4 is stride 32) each decoder reads.
DECODER_STAGES: dict[str, tuple[int, ...]] = {
    "fpn": (1, 2, 3, 4),
    "unet": (0, 1, 2, 3, 4),
    "linknet": (0, 1, 2, 3, 4),
    "pspnet": (2,),
}
UNET_CHANNELS = (256, 128, 64, 32, 16)
LINKNET_CHANNELS = 32
PSP_CHANNELS = 512
PSP_UPSAMPLING = 8


class SmpDecoderHead(nn.Module):
    """One of smp's U-Net, LinkNet or PSPNet decoders and its head: K mask logits at the input size
    from ``[input, *encoder features]`` (the features of :data:`DECODER_STAGES`)."""

    def __init__(self, decoder: str, encoder_channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        channels = list(encoder_channels)  # the input's first, as smp's encoders list them
        self.decoder: nn.Module
        if decoder == "unet":
            self.decoder = UnetDecoder(channels, UNET_CHANNELS, n_blocks=len(UNET_CHANNELS))
            out_channels, upsampling, kernel = UNET_CHANNELS[-1], 1, 3
        elif decoder == "linknet":
            self.decoder = LinknetDecoder(channels, prefinal_channels=LINKNET_CHANNELS, n_blocks=5)
            out_channels, upsampling, kernel = LINKNET_CHANNELS, 1, 1
        elif decoder == "pspnet":
            self.decoder = PSPDecoder(channels, out_channels=PSP_CHANNELS, dropout=0.2)
            out_channels, upsampling, kernel = PSP_CHANNELS, PSP_UPSAMPLING, 3
        else:
            raise ValueError(f"segmentation_decoder={decoder!r}: smp decoders are unet, linknet, pspnet")
        self.head = SmpHead(out_channels, num_classes, kernel_size=kernel, upsampling=upsampling)
        initialize_decoder(self.decoder)
        initialize_head(self.head)

    def forward(self, features: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        logits: Tensor = self.head(self.decoder(list(features)))
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits
