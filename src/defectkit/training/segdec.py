"""Training recipe for ``segdec`` (Bozic, Tabernik & Skocaj 2021; paper 002's SBDD).

Losses: BCE-with-logits on the 1/8-resolution mask (truth dilated, then max-pooled by 8, positive
pixels weighted by their distance to the nearest background pixel) and on the image label.
Dynamic balancing weighs them ``1 - e/E`` and ``delta * e/E`` at epoch ``e`` of ``E``; the
gradient-flow adjustment stops the decision loss from training the segmentation subnetwork.
Images without a known mask (weak supervision) contribute only the decision loss.

Options (``method_options`` in the config; defaults are the paper's KolektorSDD settings):
``delta`` 0.01 (decision-loss weight), ``dyn_balance`` true, ``gradient_adjustment`` true,
``dilate`` 7 (mask dilation kernel in input pixels; 1 = none), ``seg_weight_p`` 2 and
``seg_weight_max`` 1 (positive-pixel weight ``max * (d / d_max) ** p``; ``weighted_seg_loss``
false for plain BCE), ``frequency_sampling`` true (see ``FrequencyNegativeSampler``; false draws
each epoch's negatives at random, still as many as the positives).
The distance transform is computed at the 1/8 training resolution (the reference code computes
it at full resolution and then downsamples); at 1/8 scale thin defects are 1-2 px wide.
"""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor
from torch.utils.data import Sampler

from defectkit.config import RunConfig
from defectkit.data.sample import Batch
from defectkit.data.samplers import FrequencyNegativeSampler
from defectkit.models.segdec import STRIDE, SegDecNet
from defectkit.registry import MethodSpec, method_options, register_method
from defectkit.training.recipe import DecisionRecipe

DEFAULT_OPTIONS: dict[str, Any] = {
    "delta": 0.01,
    "dyn_balance": True,
    "gradient_adjustment": True,
    "dilate": 7,
    "weighted_seg_loss": True,
    "seg_weight_p": 2.0,
    "seg_weight_max": 1.0,
    "frequency_sampling": True,
}


def segmentation_targets(mask: Tensor, dilate: int) -> Tensor:
    """Bx1xHxW class ids -> Bx1x(H/8)x(W/8) float {0, 1}: dilated, then max-pooled by the stride."""
    binary = (mask > 0).float() if mask.dtype != torch.bool else mask.float()
    if binary.shape[1] > 1:
        binary = binary.amax(dim=1, keepdim=True)
    if dilate > 1:
        binary = F.max_pool2d(binary, kernel_size=dilate, stride=1, padding=dilate // 2)
        binary = binary[..., : mask.shape[-2], : mask.shape[-1]]
    return F.max_pool2d(binary, kernel_size=STRIDE)


def distance_weights(target: Tensor, p: float, max_weight: float) -> Tensor:
    """Per-pixel loss weights: 1 on background, ``max * (d / d_max) ** p`` inside defects."""
    weights = torch.ones_like(target)
    for index in range(target.shape[0]):
        positive = target[index, 0].cpu().numpy() > 0
        if not positive.any():
            continue
        distance = ndimage.distance_transform_edt(positive)
        scaled = max_weight * (distance / distance.max()) ** p
        weights[index, 0] = torch.from_numpy(np.where(positive, scaled, 1.0).astype(np.float32))
    return weights


class SegDecRecipe(DecisionRecipe):
    """LightningModule wrapping a :class:`SegDecNet` with the paper's losses and schedule."""

    def __init__(
        self, model: SegDecNet, lr: float, momentum: float, weight_decay: float, options: dict[str, Any]
    ):
        super().__init__()
        self.model = model
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.options = method_options("segdec", options, DEFAULT_OPTIONS)
        self.model.decision_gradient.factor = 0.0 if self.options["gradient_adjustment"] else 1.0

    def loss_weights(self) -> tuple[float, float]:
        delta = float(self.options["delta"])
        if not self.options["dyn_balance"]:
            return 1.0, delta
        total = max(int(self.trainer.max_epochs or 1), 1)
        progress = self.current_epoch / total
        return 1.0 - progress, delta * progress

    def losses(self, batch: Batch) -> tuple[Tensor, Tensor]:
        output = self.model(batch.images)
        segmented = batch.has_mask
        seg_loss = output.mask_logits.sum() * 0.0  # keeps the graph when no image has a mask
        if bool(segmented.any()):
            target = segmentation_targets(batch.mask[segmented], int(self.options["dilate"]))
            logits = output.mask_logits[segmented]
            weights = (
                distance_weights(
                    target, float(self.options["seg_weight_p"]), float(self.options["seg_weight_max"])
                )
                if self.options["weighted_seg_loss"]
                else None
            )
            seg_loss = F.binary_cross_entropy_with_logits(logits, target, weight=weights)
        labelled = batch.has_label
        dec_loss = F.binary_cross_entropy_with_logits(
            output.decision_logit[labelled], batch.label[labelled].float()
        )
        return seg_loss, dec_loss

    def training_step(self, batch: Batch, batch_index: int) -> Tensor:
        seg_loss, dec_loss = self.losses(batch)
        seg_weight, dec_weight = self.loss_weights()
        loss = seg_weight * seg_loss + dec_weight * dec_loss
        size = len(batch)
        self.log("train/seg_loss", seg_loss, batch_size=size)
        self.log("train/dec_loss", dec_loss, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def decision_logits(self, images: Tensor) -> Tensor:
        return cast(Tensor, self.model(images).decision_logit)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            self.model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )


@register_method(
    "segdec", supervision=("weak", "mixed", "full"), tasks=("decision", "segmentation"), paper="002"
)
class SegDec(MethodSpec):
    """Mixed-supervision segmentation-decision network (paper 002's SBDD)."""

    default_config = "configs/segdec/kolektorsdd.yaml"
    model_name = "segdec"

    @classmethod
    def train_sampler(cls, labels: list[int | None], config: RunConfig) -> Sampler[int] | None:
        options = method_options("segdec", config.method_options, DEFAULT_OPTIONS)
        # Off, the epoch is still balanced (as in the reference); only the negatives' choice changes.
        return FrequencyNegativeSampler(labels, seed=config.seed, by_frequency=options["frequency_sampling"])

    @classmethod
    def build_recipe(cls, model: Any, config: dict[str, Any]) -> L.LightningModule:
        trainer = config["trainer"]
        return SegDecRecipe(
            model,
            trainer["lr"],
            trainer["momentum"],
            trainer["weight_decay"],
            config.get("method_options", {}),
        )
