"""Defect-Aux-Net (paper 000): one network that classifies, segments and detects defects.

* Bottom-up path: a timm encoder (``features_only``, C2..C5 at strides 4..32) with channel and
  spatial attention in series (:class:`~defectkit.models.components.ChannelSpatialAttention`).
  timm's ResNet blocks take an attention layer, so for the ResNet family it sits inside every
  residual block, as in the paper (before the identity addition, where SE-ResNet puts SE); other
  encoders (EfficientNet-Lite, whose ImageNet weights are offline) have no such slot in their
  blocks, and get one attention module after each of the four stages instead.
* Top-down path: torchvision's FPN (lateral 1x1 convolutions, nearest upsampling, 3x3 output
  convolutions) on C2..C5 plus a max-pooled P6.
* Segmentation head (Seferbekov's FPN segmentation, as smp's FPN decoder): each of P2..P5 goes
  through 3x3 conv-GroupNorm-ReLU blocks with x2 bilinear upsampling until it is at 1/4 scale;
  the four are summed, a 1x1 convolution gives K mask logits, upsampled x4 to the input.
  ``segmentation_decoder`` (``unet``, ``linknet``, ``pspnet``; default ``fpn``) builds a segmenter
  alone on smp's decoder of that name instead, Table II's other baselines on the same encoder
  (:mod:`~defectkit.models.aux_net.decoders`). It takes ``tasks: [segmentation]``: the detection
  head reads the FPN, and a classifier beside another decoder is none of the paper's baselines.
* Classification head: global average pooling of C5 and a linear layer to K logits; it reads
  the bottom-up path only, so its loss trains only the encoder (the paper's gradient routing).
  ``class_activation`` turns the logits into probabilities: ``sigmoid`` (multi-label: an image
  may show several classes or none) or ``softmax`` (exactly one class per image, as NEU-DET's
  images are; the paper offers both). Boxes and masks stay per-class sigmoids either way.
* Image score (``image_score``): the paper judges an image by its classification head
  (``classifier``, the default). ``mask_peak`` judges each class by its highest mask probability
  instead, so the verdict is "some pixel reaches the threshold" and always agrees with the mask
  drawn. It suits small defects on large parts (KolektorSDD), which global pooling of C5 dilutes;
  BENCHMARKS.md's ``aux/ksdd`` rows with ``image_score`` compare the two on the same models.
  Training is the same either way: the choice only changes what :meth:`AuxNet.inspect` reports.
* Mask guidance (``mask_guidance``): the paper credits a "classification-guidance module" with
  avoiding over-segmentation, and never defines it. ``classifier`` reads it as gating at
  inference: each class's mask probability is capped at the classification head's probability for
  that class, so at any threshold no pixel passes where the image's class does not, and the mask
  of a class the classifier rejects is empty. ``none`` (the default, as every benchmark row was
  scored) leaves the mask as the segmentation head gives it. Training never reads it, nor does the
  logged validation Dice (ungated). It takes sigmoid classes judged by the classifier: softmax
  classes share one probability mass (the cap would empty the chosen class's mask too), and
  ``mask_peak`` would judge the image by the ungated mask.
* Detection head: torchvision's RetinaNet subnets (4 x 3x3 conv + GroupNorm, classification
  prior 0.01) shared over the detection levels (P3..P6 by default), with 9 anchors per location
  (3 sizes x 3 aspect ratios, RetinaNet's), anchor sizes from ``anchor_sizes``, aspect ratios
  (height / width) from ``aspect_ratios``; the aux_net recipe turns ``aspect_ratios: auto`` into
  ratios fitted to the training boxes (:func:`~defectkit.models.aux_net.detection.fit_aspect_ratios`).

The paper leaves widths, levels and anchors open; each is a constructor argument, as are the
attention's reduction ratio (``se_ratio``, 16 as the paper) and spatial kernel (``sa_kernel``, 7).
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork, clip_boxes_to_image
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from defectkit.models.aux_net.decoders import DECODER_STAGES, SEGMENTATION_DECODERS, SmpDecoderHead
from defectkit.models.aux_net.detection import anchor_boxes, anchor_generator, decode_boxes
from defectkit.models.components import Attention, ChannelSpatialAttention

STRIDE = 32
PYRAMID_LEVELS = ("p2", "p3", "p4", "p5", "p6")
TASKS = ("classification", "segmentation", "detection")
CLASS_ACTIVATIONS = ("sigmoid", "softmax")
IMAGE_SCORES = ("classifier", "mask_peak")
MASK_GUIDANCES = ("none", "classifier")
GUIDED_TASKS = frozenset({"classification", "segmentation"})  # what mask_guidance=classifier joins
IMAGE_JUDGES = ("classifier", "mask_peak", "best_anchor")
IN_BLOCK_FAMILY = re.compile(r"(resnet|resnext|wide_resnet)\d")  # timm ResNet blocks (not resnetv2_*)


def image_judge(tasks: Sequence[str], image_score: str = "classifier") -> str:
    """What gives a network's image class probabilities, one of :data:`IMAGE_JUDGES`.

    ``image_score=mask_peak`` chooses each class's best mask pixel whatever the heads. Otherwise
    the classification head judges where there is one; without it a detector judges by each
    class's best anchor (its scores are trained per object, where the mask's are per pixel), and a
    segmenter alone by its best mask pixel. Benchmark notes name the judge from this too, so they
    cannot drift from what :meth:`AuxNet.inspect` does.
    """
    if image_score == "mask_peak" or not {"classification", "detection"} & set(tasks):
        judge = "mask_peak"
    else:
        judge = "classifier" if "classification" in tasks else "best_anchor"
    assert judge in IMAGE_JUDGES
    return judge


@dataclass
class AuxNetOutput:
    class_logits: Tensor  # B x K
    mask_logits: Tensor  # B x K x H x W
    box_logits: Tensor  # B x A x K (A anchors over all detection levels)
    box_deltas: Tensor  # B x A x 4 (RetinaNet's encoding relative to the anchors)
    anchors: Tensor  # A x 4, xyxy in input pixels (the same for every image of one size)


class AttentionEncoder(nn.Module):
    """The ``stages`` features of a timm encoder with channel + spatial attention (see the module
    docstring): C2..C5 by default (timm's out_indices 1..4, strides 4..32). The stride-2 stem
    features (index 0, read by U-Net and LinkNet decoders) get no attention module, as the paper
    puts attention in the residual stages; stages past the deepest asked for are not built."""

    def __init__(
        self,
        backbone: str,
        in_channels: int = 3,
        attention: Attention = "se+sa",
        se_ratio: int = 16,
        sa_kernel: int = 7,
        stages: Sequence[int] = (1, 2, 3, 4),
    ) -> None:
        super().__init__()
        self.in_blocks = IN_BLOCK_FAMILY.match(backbone) is not None
        attend = functools.partial(
            ChannelSpatialAttention, attention=attention, rd_ratio=1.0 / se_ratio, kernel_size=sa_kernel
        )
        options: dict[str, Any] = {}
        if self.in_blocks and attention != "none":
            options["block_args"] = {"attn_layer": attend}
        self.body: nn.Module = timm.create_model(
            backbone, pretrained=False, features_only=True, out_indices=tuple(stages), in_chans=in_channels,
            **options,
        )  # fmt: skip
        drop_unused_blocks(self.body)
        self.channels: list[int] = list(self.body.feature_info.channels())  # type: ignore[operator,union-attr]
        stage_attention = attention != "none" and not self.in_blocks
        self.stage_attention = nn.ModuleList(
            attend(c) if stage_attention and stage > 0 else nn.Identity()
            for stage, c in zip(stages, self.channels, strict=True)
        )

    def forward(self, images: Tensor) -> list[Tensor]:
        features = self.body(images)
        return [attend(f) for attend, f in zip(self.stage_attention, features, strict=True)]


def drop_unused_blocks(body: nn.Module) -> None:
    """Cut a timm feature encoder's block list after the deepest block it returns. timm's ResNet
    feature wrapper stops there itself; EfficientNet's runs every block and drops the rest, which
    would cost time and count parameters a shallow decoder (PSPNet) never reads. The names kept are
    the classifier's, so ImageNet weights still load by name."""
    blocks = getattr(body, "blocks", None)
    names = body.feature_info.module_name()  # type: ignore[operator,union-attr]
    used = [int(name.split(".")[1]) for name in names if name.startswith("blocks.")]
    if isinstance(blocks, nn.Sequential) and used and max(used) + 1 < len(blocks):
        body.blocks = blocks[: max(used) + 1]


def groups_of(channels: int) -> int:
    """GroupNorm groups of 8 channels (RetinaNet's 32 groups of 256), or one group."""
    return channels // 8 if channels % 8 == 0 else 1


class SegmentationBlock(nn.Sequential):
    """3x3 conv -> GroupNorm -> ReLU, then x2 bilinear upsampling ``upsamples`` times."""

    def __init__(self, in_channels: int, out_channels: int, upsamples: int) -> None:
        layers: list[nn.Module] = []
        for index in range(max(upsamples, 1)):
            layers += [
                nn.Conv2d(
                    in_channels if index == 0 else out_channels, out_channels, 3, padding=1, bias=False
                ),
                nn.GroupNorm(groups_of(out_channels), out_channels),
                nn.ReLU(inplace=True),
            ]
            if upsamples:
                layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        super().__init__(*layers)


class SegmentationHead(nn.Module):
    """P2..P5 brought to 1/4 scale and summed, then K mask logits at the input size."""

    def __init__(
        self, pyramid_channels: int, segmentation_channels: int, num_classes: int, dropout: float
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SegmentationBlock(pyramid_channels, segmentation_channels, upsamples) for upsamples in range(4)
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(segmentation_channels, num_classes, 1)

    def forward(self, levels: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        merged = sum(block(level) for block, level in zip(self.blocks, levels, strict=True))
        logits = self.classifier(self.dropout(merged))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class ClassificationHead(nn.Module):
    """Global average pooling of C5 and a linear layer: K image-level logits."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, deepest: Tensor) -> Tensor:
        out: Tensor = self.linear(self.dropout(deepest.mean(dim=(2, 3))))
        return out


def level_stride(level: str) -> int:
    """The input pixels per cell of pyramid level ``level`` (p2: 4 ... p6: 64)."""
    return int(2 ** (2 + PYRAMID_LEVELS.index(level)))


def check_detection_levels(detection_levels: Sequence[str], anchor_sizes: Sequence[float]) -> None:
    unknown = sorted(set(detection_levels) - set(PYRAMID_LEVELS))
    if unknown or len(anchor_sizes) != len(detection_levels):
        raise ValueError(
            f"detection_levels {list(detection_levels)} (from {PYRAMID_LEVELS}) need one anchor "
            f"size each, got {list(anchor_sizes)}"
        )


def input_stride(detection_levels: Sequence[str], detects: bool) -> int:
    """What the input's sides must be multiples of: every pyramid level must tile the input
    exactly, or the anchors drift from their cells."""
    deepest = max(level_stride(level) for level in detection_levels)
    return max(STRIDE, deepest) if detects else STRIDE


def check_input_size(height: int, width: int, stride: int, detection_levels: Sequence[str]) -> None:
    if height % stride or width % stride:
        raise ValueError(
            f"aux_net input sides must be multiples of {stride} (detection levels "
            f"{list(detection_levels)}), got {height}x{width}"
        )


def detection_anchors(
    size: tuple[int, int],
    detection_levels: Sequence[str],
    anchor_sizes: Sequence[float],
    aspect_ratios: Sequence[float],
) -> Tensor:
    """The anchors (A x 4 xyxy) an :class:`AuxNet` with these options places on a ``size`` =
    (height, width) input, without building it; the same checks as the network's."""
    check_detection_levels(detection_levels, anchor_sizes)
    check_input_size(*size, input_stride(detection_levels, True), detection_levels)
    strides = [level_stride(level) for level in detection_levels]
    return anchor_boxes(size, strides, anchor_sizes, aspect_ratios)


class AuxNet(nn.Module):
    """Defect-Aux-Net: attention encoder, FPN, and classification, segmentation, detection heads."""

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        num_classes: int = 1,
        in_channels: int = 3,
        attention: Attention = "se+sa",
        se_ratio: int = 16,
        sa_kernel: int = 7,
        pyramid_channels: int = 128,
        segmentation_channels: int = 64,
        detection_levels: Sequence[str] = ("p3", "p4", "p5", "p6"),
        anchor_sizes: Sequence[float] = (32, 64, 128, 256),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        dropout: float = 0.2,
        tasks: Sequence[str] = ("classification", "segmentation", "detection"),
        class_activation: str = "sigmoid",
        image_score: str = "classifier",
        segmentation_decoder: str = "fpn",
        mask_guidance: str = "none",
    ) -> None:
        super().__init__()
        if segmentation_decoder not in SEGMENTATION_DECODERS:
            raise ValueError(
                f"segmentation_decoder={segmentation_decoder!r}: use one of {SEGMENTATION_DECODERS}"
            )
        if segmentation_decoder != "fpn" and tuple(tasks) != ("segmentation",):
            raise ValueError(
                f"segmentation_decoder={segmentation_decoder!r} builds Table II's single-task segmenter: "
                f"it needs tasks [segmentation], got {list(tasks)} (the detection head reads the FPN)"
            )
        self.segmentation_decoder = segmentation_decoder
        if class_activation not in CLASS_ACTIVATIONS:
            raise ValueError(f"class_activation={class_activation!r}: use one of {CLASS_ACTIVATIONS}")
        if image_score not in IMAGE_SCORES:
            raise ValueError(f"image_score={image_score!r}: use one of {IMAGE_SCORES}")
        if image_score == "mask_peak" and "segmentation" not in tasks:
            raise ValueError(f"image_score=mask_peak needs the segmentation task (tasks {list(tasks)})")
        self.image_score = image_score
        if mask_guidance not in MASK_GUIDANCES:
            raise ValueError(f"mask_guidance={mask_guidance!r}: use one of {MASK_GUIDANCES}")
        if mask_guidance == "classifier":
            if not set(tasks) >= GUIDED_TASKS:
                raise ValueError(
                    f"mask_guidance=classifier gates the mask by the classification head: it needs tasks "
                    f"classification and segmentation (tasks {list(tasks)})"
                )
            # Softmax classes share one probability mass, so its cap would empty even the chosen
            # class's mask; mask_peak judges the image by the ungated mask, against the gated one drawn.
            if class_activation == "softmax" or image_score == "mask_peak":
                raise ValueError(
                    "mask_guidance=classifier caps each mask at its class's own sigmoid probability: it "
                    f"takes class_activation=sigmoid and image_score=classifier (got {class_activation}, "
                    f"{image_score})"
                )
        self.mask_guidance = mask_guidance
        if class_activation == "softmax" and num_classes < 2:
            raise ValueError("class_activation=softmax needs at least 2 classes (one class: use sigmoid)")
        self.class_activation = class_activation
        check_detection_levels(detection_levels, anchor_sizes)
        if not tasks or set(tasks) - set(TASKS):
            raise ValueError(f"tasks {list(tasks)}: choose from {TASKS}")
        self.num_classes = num_classes
        self.tasks = tuple(tasks)
        self.detects = "detection" in self.tasks
        # A network without the detection head places no anchor, so their shapes are moot.
        if self.detects and isinstance(aspect_ratios, str):
            raise ValueError(
                f"aspect_ratios={aspect_ratios!r}: give numbers (height / width); 'auto' is fitted to "
                "the training boxes by the aux_net recipe before the network is built"
            )
        self.detection_levels = tuple(detection_levels)
        self.encoder = AttentionEncoder(
            backbone, in_channels, attention, se_ratio, sa_kernel, DECODER_STAGES[segmentation_decoder]
        )
        # Heads (and the FPN) exist only for the tasks asked: the single-task baselines are this
        # network with one head, so parameters and time compare like for like.
        # The segmenter needs P2..P5; a detector alone builds its pyramid from C3 (no P2), as RetinaNet.
        self.first_level = 0 if "segmentation" in tasks else 1
        self.fpn = (
            FeaturePyramidNetwork(
                self.encoder.channels[self.first_level :], pyramid_channels, extra_blocks=LastLevelMaxPool()
            )
            if {"segmentation", "detection"} & set(tasks) and segmentation_decoder == "fpn"
            else None
        )
        self.stride = input_stride(self.detection_levels, self.detects)
        self.segmentation_head: SegmentationHead | SmpDecoderHead | None = None
        if segmentation_decoder != "fpn":
            self.segmentation_head = SmpDecoderHead(
                segmentation_decoder, [in_channels, *self.encoder.channels], num_classes
            )
        elif "segmentation" in tasks:
            self.segmentation_head = SegmentationHead(
                pyramid_channels, segmentation_channels, num_classes, dropout
            )
        self.decision_head = (
            ClassificationHead(self.encoder.channels[-1], num_classes, dropout)
            if "classification" in tasks
            else None
        )
        self.anchor_generator = anchor_generator(anchor_sizes, aspect_ratios) if self.detects else None
        self.detection_head = (
            RetinaNetHead(
                pyramid_channels,
                self.anchor_generator.num_anchors_per_location()[0],
                num_classes,
                norm_layer=functools.partial(nn.GroupNorm, groups_of(pyramid_channels)),
            )
            if self.anchor_generator is not None
            else None
        )

    def pyramid(self, features: Sequence[Tensor]) -> dict[str, Tensor]:
        if self.fpn is None:
            return {}
        used = features[self.first_level :]
        levels = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(used)))
        return dict(zip(PYRAMID_LEVELS[self.first_level :], levels.values(), strict=True))

    def forward(self, images: Tensor) -> AuxNetOutput:
        height, width = images.shape[-2:]
        check_input_size(height, width, self.stride, self.detection_levels)
        batch, k = images.shape[0], self.num_classes
        features = self.encoder(images)
        levels = self.pyramid(features)
        # A head that is not built answers zeros (no boxes), so every output keeps its shape.
        class_logits = (
            self.decision_head(features[-1]) if self.decision_head is not None else images.new_zeros(batch, k)
        )
        mask_logits = self._mask_logits(images, features, levels)
        if self.detection_head is None or self.anchor_generator is None:
            empty = images.new_zeros(batch, 0, k), images.new_zeros(batch, 0, 4), images.new_zeros(0, 4)
            return AuxNetOutput(class_logits, mask_logits, *empty)
        detection = [levels[name] for name in self.detection_levels]
        head = self.detection_head(detection)
        # Anchors depend on the input size only: one image's set serves the batch (and keeps the
        # exported graph's batch axis free).
        image_list = ImageList(images[:1].float(), [(int(height), int(width))])
        anchors = self.anchor_generator(image_list, [level[:1].float() for level in detection])[0]
        return AuxNetOutput(class_logits, mask_logits, head["cls_logits"], head["bbox_regression"], anchors)

    def _mask_logits(self, images: Tensor, features: Sequence[Tensor], levels: dict[str, Tensor]) -> Tensor:
        height, width = images.shape[-2:]
        if isinstance(self.segmentation_head, SmpDecoderHead):
            return self.segmentation_head([images, *features], (height, width))
        if isinstance(self.segmentation_head, SegmentationHead):
            return self.segmentation_head([levels[name] for name in PYRAMID_LEVELS[:4]], (height, width))
        return images.new_zeros(images.shape[0], self.num_classes, height, width)

    def inspect(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """(class probabilities B x K, per-class mask probabilities B x K x H x W or None)."""
        output = self(images)
        return self._class_probabilities(output), self._mask_probabilities(output)

    def _class_probabilities(self, output: AuxNetOutput) -> Tensor:
        """The image's class probabilities, as :func:`image_judge` names their source."""
        judge = image_judge(self.tasks, self.image_score)
        if judge == "mask_peak":
            return torch.sigmoid(output.mask_logits).amax(dim=(2, 3))
        if judge == "classifier":
            return self.class_probabilities(output.class_logits)
        return torch.sigmoid(output.box_logits).amax(dim=1)

    def class_probabilities(self, class_logits: Tensor) -> Tensor:
        """B x K probabilities of the classification head's logits (``class_activation``)."""
        if self.class_activation == "softmax":
            return torch.softmax(class_logits, dim=1)
        return torch.sigmoid(class_logits)

    def _mask_probabilities(self, output: AuxNetOutput) -> Tensor | None:
        if self.segmentation_head is None:
            return None
        masks = torch.sigmoid(output.mask_logits)
        if self.mask_guidance == "classifier":
            gate = self.class_probabilities(output.class_logits)
            masks = torch.minimum(masks, gate[:, :, None, None])
        return masks

    def inspect_detections(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`inspect` plus every anchor's class probabilities (B x A x K) and decoded box
        (B x A x 4, input pixels). Exported graphs end here: thresholding, top-k and NMS run in
        Python (:func:`defectkit.models.aux_net.select_detections`)."""
        output = self(images)
        batch, anchors = output.box_deltas.shape[:2]
        anchor_boxes = decode_boxes(output.box_deltas.reshape(-1, 4), output.anchors.repeat(batch, 1))
        anchor_boxes = clip_boxes_to_image(anchor_boxes, (int(images.shape[-2]), int(images.shape[-1])))
        masks = self._mask_probabilities(output)
        return (
            self._class_probabilities(output),
            masks if masks is not None else images.new_zeros(batch, 1, 1, 1),
            torch.sigmoid(output.box_logits),
            anchor_boxes.reshape(batch, anchors, 4),
        )
