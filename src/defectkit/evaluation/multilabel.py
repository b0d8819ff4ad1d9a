"""Scoring a multi-label segmentation model (``tlu_net``) on labelled images, as paper 001 does.

Per image: the K class probabilities, the class truth (multi-hot; one class: the image label),
and Dice / IoU of each class's map at the model's stored pixel threshold against that class's
mask (DESIGN.md: both empty -> 1). Aggregates: MLA at the stored class thresholds, mean
per-class AUROC, per-class Dice / IoU, ``dice_pos`` over image x class pairs with a defect, the
image-level AP / AUROC of the model's image score (the best class probability, rescaled where
classes have thresholds of their own; defective = any class present), the image verdict's FP,
FN, precision, recall and F1 (defective = any class called; where the data has good images or one
class), and, where every image has exactly one class (NEU-DET), the accuracy of the arg-max class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from defectkit.data.io import ImageReadError, error_reason
from defectkit.data.masks import mask_to_boxes
from defectkit.data.sample import Problem, Sample
from defectkit.evaluation.scoring import TimedScorer
from defectkit.inference.inspector import Inspector
from defectkit.metrics import SegmentationMeter, image_metrics, verdict_metrics
from defectkit.metrics._utils import nanmean
from defectkit.metrics.classification import multilabel_accuracy, multilabel_metrics
from defectkit.metrics.detection import detection_map
from defectkit.metrics.thresholds import rescaled_to_half


@dataclass
class MultilabelScores:
    """Everything measured on a test set, per image (rows in the order of ``paths``)."""

    class_names: list[str]
    paths: list[str] = field(default_factory=list)
    probabilities: list[list[float]] = field(default_factory=list)  # N x K
    truth: list[list[int]] = field(default_factory=list)  # N x K multi-hot
    dice: list[list[float]] = field(default_factory=list)  # N x K (NaN where no mask is known)
    iou: list[list[float]] = field(default_factory=list)
    infer_ms: list[float] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    # A detector's boxes and the true boxes, per image: {"boxes": N x 4, "scores": N, "labels": N}.
    detections: list[dict[str, list[Any]]] = field(default_factory=list)
    box_truth: list[dict[str, list[Any]]] = field(default_factory=list)


def class_truth(sample: Sample, num_classes: int) -> list[int] | None:
    """Multi-hot K class truth of a sample; with one class, its image label; None: not known."""
    if sample.classes is not None:
        return [int(k + 1 in sample.classes) for k in range(num_classes)]
    if num_classes == 1 and sample.label is not None:
        return [int(sample.label)]
    return None


def score_multilabel(
    inspector: Inspector,
    samples: Sequence[Sample],
    channels: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MultilabelScores:
    """Score ``samples``; unreadable images are recorded in ``skipped``, never raised."""
    names = list(inspector.card.class_names) or ["defect"]
    k = len(names)
    result = MultilabelScores(class_names=names)
    pixel = float(inspector.card.thresholds.pixel)
    scorer = TimedScorer(inspector, channels, infer_ms=result.infer_ms)
    for index, sample in enumerate(samples):
        truth = class_truth(sample, k)
        if truth is None:
            result.skipped.append(Problem(sample.path, "its defect classes are not known", "warning"))
            continue
        try:
            loaded, scored = scorer(sample)
        except (ImageReadError, ValueError, OSError) as error:
            result.skipped.append(Problem(sample.path, error_reason(error, sample.path)))
            continue
        probabilities = (
            np.asarray(scored.class_scores, dtype=np.float64)
            if scored.class_scores is not None
            else np.asarray([scored.score])
        )
        maps = inspector.display_heatmap(scored)
        dice = iou = [float("nan")] * k
        if maps is not None and loaded.mask is not None:
            meter = SegmentationMeter(k, pixel_threshold=pixel)
            stack = maps if maps.ndim == 3 else maps[None]
            meter.update([stack if k > 1 else stack[0]], [_truth_stack(np.asarray(loaded.mask), k)])
            per_dice, per_iou, _ = meter.per_image()
            dice, iou = per_dice[0].tolist(), per_iou[0].tolist()
        result.paths.append(sample.path)
        result.probabilities.append(probabilities.tolist())
        result.truth.append(truth)
        result.dice.append(dice)
        result.iou.append(iou)
        if scored.detections is not None:
            found = scored.detections
            result.detections.append(
                {
                    "boxes": found.boxes.tolist(),
                    "scores": found.scores.tolist(),
                    "labels": found.labels.tolist(),
                }
            )
            result.box_truth.append(true_boxes(loaded, k))
        if progress is not None:
            progress(index + 1, len(samples))
    return result


def true_boxes(sample: Sample, num_classes: int) -> dict[str, list[Any]]:
    """A loaded sample's boxes (annotated, else one per connected region of each class's mask)."""
    if sample.boxes is not None:
        given = np.asarray(sample.boxes, dtype=np.float64).reshape(-1, 4)
        ids = np.ones(len(given), np.int64) if sample.box_classes is None else np.asarray(sample.box_classes)
        return {"boxes": given.tolist(), "labels": ids.astype(np.int64).tolist()}
    if sample.mask is None:
        return {"boxes": [], "labels": []}
    stack = _truth_stack(np.asarray(sample.mask), num_classes)
    stack = stack[None] if stack.ndim == 2 and num_classes == 1 else stack
    boxes: list[list[float]] = []
    labels: list[int] = []
    for k in range(num_classes):
        layer = stack[k] if stack.ndim == 3 else stack == k + 1
        found, _ = mask_to_boxes(np.asarray(layer, dtype=np.uint8))
        boxes += found.reshape(-1, 4).tolist()
        labels += [k + 1] * len(found)
    return {"boxes": boxes, "labels": labels}


def _truth_stack(mask: np.ndarray, k: int) -> np.ndarray:
    """A class-id map or K' x H x W bool stack as what :class:`SegmentationMeter` takes for K."""
    if mask.ndim == 3:
        stack = np.zeros((k, *mask.shape[1:]), dtype=bool)
        stack[: min(k, mask.shape[0])] = mask[:k] > 0
        return stack if k > 1 else stack[0]
    return (mask > 0) if k == 1 else mask.astype(np.int64)


def multilabel_summary(scores: MultilabelScores, class_thresholds: float | np.ndarray) -> dict[str, Any]:
    """The aggregate metrics (see the module docstring); JSON-ready, NaN where undefined.

    ``class_thresholds`` broadcasts to N x K: one threshold, one per class (K: a model with
    per-class thresholds), or N x 1 / N x K rows (images pooled from models with thresholds of
    their own, e.g. cross-validation folds). The image score behind AP / AUROC is the model's:
    the best probability rescaled by :func:`rescaled_to_half` (the best raw probability's order
    when every class shares one threshold).
    """
    names = scores.class_names
    truth = np.asarray(scores.truth, dtype=np.int64).reshape(-1, len(names))
    probabilities = np.asarray(scores.probabilities, dtype=np.float64).reshape(-1, len(names))
    dice = np.asarray(scores.dice, dtype=np.float64).reshape(-1, len(names))
    iou = np.asarray(scores.iou, dtype=np.float64).reshape(-1, len(names))
    positive = truth > 0
    thresholds = np.broadcast_to(np.asarray(class_thresholds, dtype=np.float64), probabilities.shape)
    called = probabilities >= thresholds
    classification = multilabel_metrics(truth, probabilities)  # per-class AUROC: no threshold
    defective = np.any(positive, axis=1)
    called_defective = np.any(called, axis=1)
    image_scores = rescaled_to_half(probabilities, thresholds).max(axis=1)
    image = image_metrics(defective.astype(int), image_scores)
    verdicts = verdict_metrics(defective, called_defective)
    metrics: dict[str, Any] = {
        "mla": multilabel_accuracy(positive, called) if len(truth) else float("nan"),
        "mean_auroc": classification["mean_auroc"],
        "ap": image["ap"],
        "auroc": image["auroc"],
        "dice": nanmean(dice.ravel()),
        "dice_pos": nanmean(dice[positive]),
        "iou": nanmean(iou.ravel()),
        "iou_pos": nanmean(iou[positive]),
        "per_class": {
            name: {
                "auroc": classification["per_class_auroc"][c],
                "dice": nanmean(dice[:, c]),
                "dice_pos": nanmean(dice[positive[:, c], c]),
                "iou": nanmean(iou[:, c]),
                "iou_pos": nanmean(iou[positive[:, c], c]),
                "n_pos": int(positive[:, c].sum()),
            }
            for c, name in enumerate(names)
        },
    }
    if scores.detections:
        boxes = detection_map(scores.detections, scores.box_truth, names)
        metrics.update(
            {"map50": boxes["map50"], "map": boxes["map"], "per_class_ap50": boxes["per_class_ap50"]}
        )
    single = positive.sum(axis=1) == 1
    if len(names) > 1 and single.any():
        predicted = probabilities[single].argmax(axis=1)
        metrics["accuracy"] = float(np.mean(predicted == positive[single].argmax(axis=1)))
        metrics["accuracy_images"] = int(single.sum())
    if len(names) == 1 or image["n_neg"]:
        metrics.update({k: verdicts[k] for k in ("fp", "fn", "false_calls", "precision", "recall", "f1")})
    return metrics


def per_image_dice(scores: MultilabelScores) -> np.ndarray:
    """One Dice per image, for the paper's box plots and Dice-difference histogram: the mean over
    the classes the image has (a class absent from both truth and prediction would add a
    meaningless 1), over all K classes for an image without defects; NaN where no mask is known."""
    dice = np.asarray(scores.dice, dtype=np.float64).reshape(len(scores.paths), -1)
    present = np.asarray(scores.truth, dtype=bool).reshape(dice.shape)
    chosen = np.where(present.any(axis=1, keepdims=True), present, True)
    with np.errstate(invalid="ignore"):
        weights = chosen & ~np.isnan(dice)
        total = np.where(weights, dice, 0.0).sum(axis=1)
        counts = weights.sum(axis=1)
        return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
