"""Evaluation metrics with defectkit's conventions (DESIGN.md, "Metrics").

Every function takes numpy arrays, torch tensors or sequences and returns plain
Python floats / ints / dicts / lists, ready for a results file. An undefined
value (AUROC of a one-class set, dice_pos without defects, ...) is
``float("nan")``, never an exception; bad input (shape mismatch, labels outside
{0, 1}, no positives when choosing a threshold) is a ``ValueError``.

- image level (positive = defective): `average_precision`, `auroc`,
  `fp_at_full_recall`, `image_metrics`, `verdict_metrics` (counts and rates of given verdicts);
  thresholds: `best_f1_threshold`, `fp_fn_at_threshold`, `rescaled_to_half` (one threshold per
  class as one at 0.5)
- segmentation: `dice_score`, `iou_score`, `SegmentationMeter`, `PixelAUROC`,
  `segmentation_metrics`
- detection: `detection_map` (COCO, faster-coco-eval)
- classification: `classification_metrics`, `multilabel_accuracy` (MLA),
  `multilabel_metrics`
- few-shot: `fewshot_summary`; zero-shot: `gzsl_metrics`, `harmonic_mean`,
  `unknown_alert_auroc`
"""

from defectkit.metrics.classification import classification_metrics, multilabel_accuracy, multilabel_metrics
from defectkit.metrics.detection import detection_map
from defectkit.metrics.fewshot import fewshot_summary
from defectkit.metrics.image import (
    auroc,
    average_precision,
    fp_at_full_recall,
    image_metrics,
    verdict_metrics,
)
from defectkit.metrics.segmentation import (
    PixelAUROC,
    SegmentationMeter,
    dice_score,
    iou_score,
    segmentation_metrics,
)
from defectkit.metrics.thresholds import best_f1_threshold, fp_fn_at_threshold, rescaled_to_half
from defectkit.metrics.zeroshot import gzsl_metrics, harmonic_mean, unknown_alert_auroc

__all__ = [
    "PixelAUROC",
    "SegmentationMeter",
    "auroc",
    "average_precision",
    "best_f1_threshold",
    "classification_metrics",
    "detection_map",
    "dice_score",
    "fewshot_summary",
    "fp_at_full_recall",
    "fp_fn_at_threshold",
    "gzsl_metrics",
    "harmonic_mean",
    "image_metrics",
    "iou_score",
    "multilabel_accuracy",
    "multilabel_metrics",
    "rescaled_to_half",
    "segmentation_metrics",
    "unknown_alert_auroc",
    "verdict_metrics",
]
