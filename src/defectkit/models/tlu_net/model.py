"""TLU-Net (paper 001): a depth-5 U-Net on a transferable encoder with a multi-label defect head.

Built with segmentation_models_pytorch, as in the paper: ``smp.Unet`` with ``encoder_depth=5``,
K mask channels at input resolution and ``aux_params`` for the classifier, which is exactly the
paper's head (global average pooling of the encoder's deepest features, a linear layer; the
sigmoid is applied in :meth:`TluNet.inspect` and inside the loss, never twice).

``classifier_pooling`` chooses that pooling: ``avg`` (the paper's, the default) or ``max``. A
defect that covers a cell or two of the bottleneck (KolektorSDD's thin cracks: 12 x 5 cells at
384 x 160) is averaged with every clean cell; the maximum keeps it whole. The head stays one
pooling and one linear layer, so the image score is still the classification head's alone.

Encoders are named as the user knows them (``resnet18``, ``resnet34``, ``densenet121``,
``tf_efficientnet_lite0/1/2``, or any smp encoder name); :data:`ENCODER_ALIASES` maps the timm
EfficientNet-Lite names onto smp's timm-universal encoders (``tu-...``), whose ImageNet weights
exist offline (``defectkit.models.pretrained``). The weights themselves are loaded apart from
the architecture, by :func:`defectkit.models.pretrained.load_encoder_weights`.

Input sides must be multiples of 32 (five stride-2 stages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn

STRIDE = 32
POOLINGS = ("avg", "max")  # smp's ClassificationHead poolings

# timm names the user knows -> smp encoder names (timm-universal wrappers of the same networks).
ENCODER_ALIASES: dict[str, str] = {
    "tf_efficientnet_lite0": "tu-tf_efficientnet_lite0",
    "tf_efficientnet_lite1": "tu-tf_efficientnet_lite1",
    "tf_efficientnet_lite2": "tu-tf_efficientnet_lite2",
}


def smp_encoder_name(encoder: str) -> str:
    return ENCODER_ALIASES.get(encoder, encoder)


@dataclass
class TluNetOutput:
    mask_logits: Tensor  # B x K x H x W
    class_logits: Tensor  # B x K


class TluNet(nn.Module):
    """U-Net (smp) + multi-label classifier on the encoder bottleneck; K defect classes."""

    def __init__(
        self,
        encoder: str = "tf_efficientnet_lite0",
        num_classes: int = 1,
        in_channels: int = 3,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        classifier_dropout: float | None = None,
        classifier_pooling: str = "avg",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"tlu_net needs at least one defect class, got num_classes={num_classes}")
        if classifier_pooling not in POOLINGS:
            raise ValueError(f"tlu_net classifier_pooling: one of {POOLINGS}, got {classifier_pooling!r}")
        self.encoder_name = encoder
        self.unet = smp.Unet(
            encoder_name=smp_encoder_name(encoder),
            encoder_depth=5,
            encoder_weights=None,  # ImageNet weights load offline, apart from the architecture
            in_channels=in_channels,
            decoder_channels=tuple(decoder_channels),
            classes=num_classes,
            activation=None,
            aux_params={"classes": num_classes, "pooling": classifier_pooling, "dropout": classifier_dropout},
        )

    @property
    def num_classes(self) -> int:
        return int(self.unet.segmentation_head[0].out_channels)

    @property
    def encoder(self) -> nn.Module:
        return self.unet.encoder

    @property
    def decision_head(self) -> nn.Module:
        """The multi-label classifier (pooling + linear) on the encoder's deepest features."""
        return self.unet.classification_head

    def forward(self, images: Tensor) -> TluNetOutput:
        height, width = images.shape[-2:]
        if height % STRIDE or width % STRIDE:
            raise ValueError(f"tlu_net input sides must be multiples of {STRIDE}, got {height}x{width}")
        mask_logits, class_logits = self.unet(images)
        return TluNetOutput(mask_logits, class_logits)

    def inspect(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(class probabilities B x K, per-class mask probabilities B x K x H x W)."""
        output = self(images)
        return torch.sigmoid(output.class_logits), torch.sigmoid(output.mask_logits)
