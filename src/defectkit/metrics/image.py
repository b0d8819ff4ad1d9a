"""Image-level (OK / NG) metrics; positive = defective (label 1).

Conventions (DESIGN.md, "Metrics"):

- **AP** is scikit-learn's `average_precision_score` (step-wise, no
  interpolation); **AUROC** is scikit-learn's `roc_auc_score`.
- A test set with only one class (no defective or no good images) has no
  ranking to measure: AP and AUROC are then ``nan`` (a float, no exception).
  This holds for AP with no negatives too, although scikit-learn would call it
  1.0, so that a one-class split never shows a perfect-looking AP.
- **FP / FN** are counted at a *given* threshold (``score >= threshold`` is
  defective), the one stored in the model; **false calls** = FP + FN.
- **FP at 100 % recall** = good images scoring >= the lowest defective score
  (the false alarms left when the threshold is lowered just enough to catch
  every defect). With no defective images every threshold has 100 % recall,
  including one above all scores, so it is 0. Hand-written: scikit-learn has
  no such metric.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from defectkit.metrics._utils import NAN, ArrayLike, binary_labels_scores

__all__ = ["auroc", "average_precision", "fp_at_full_recall", "image_metrics", "verdict_metrics"]


def _one_class(y: np.ndarray) -> bool:
    n_pos = int(y.sum())
    return n_pos == 0 or n_pos == y.size


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """scikit-learn AP; ``nan`` when the labels hold only one class (or none)."""
    y, s = binary_labels_scores(labels, scores)
    if _one_class(y):
        return NAN
    return float(average_precision_score(y, s))


def auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """scikit-learn ROC AUC; ``nan`` when the labels hold only one class (or none)."""
    y, s = binary_labels_scores(labels, scores)
    if _one_class(y):
        return NAN
    return float(roc_auc_score(y, s))


def fp_at_full_recall(labels: ArrayLike, scores: ArrayLike) -> int:
    """Number of good images scoring >= the lowest defective score (0 without defects)."""
    y, s = binary_labels_scores(labels, scores)
    if not y.any():
        return 0
    lowest_pos = s[y == 1].min()
    return int(np.count_nonzero((y == 0) & (s >= lowest_pos)))


def image_metrics(labels: ArrayLike, scores: ArrayLike, threshold: float | None = None) -> dict[str, Any]:
    """All image-level metrics as a JSON-ready dict.

    Always: ``ap``, ``auroc``, ``fp_at_full_recall``, ``n_images``, ``n_pos``, ``n_neg``.
    With ``threshold`` (the one stored in the model; never chosen on this data)
    also: ``threshold``, ``tp``, ``tn``, ``fp``, ``fn``, ``false_calls``,
    ``precision``, ``recall``, ``f1``, ``accuracy``. Precision / recall / F1 whose
    denominator is zero are 0.0 (scikit-learn's ``zero_division=0``).
    """
    y, s = binary_labels_scores(labels, scores)
    n_pos = int(y.sum())
    out: dict[str, Any] = {
        "ap": average_precision(y, s),
        "auroc": auroc(y, s),
        "fp_at_full_recall": fp_at_full_recall(y, s),
        "n_images": int(y.size),
        "n_pos": n_pos,
        "n_neg": int(y.size - n_pos),
    }
    if threshold is None:
        return out
    return {**out, "threshold": float(threshold), **verdict_metrics(y, s >= threshold)}


def verdict_metrics(labels: ArrayLike, called: ArrayLike) -> dict[str, Any]:
    """The image verdicts' counts and rates: ``tp``, ``tn``, ``fp``, ``fn``, ``false_calls``,
    ``precision``, ``recall``, ``f1``, ``accuracy``, from the truth (1 defective) and the images
    called defective. Precision / recall / F1 whose denominator is zero are 0.0 (scikit-learn's
    ``zero_division=0``); accuracy of no image is ``nan``. Verdicts are bool or 0 / 1: scores
    must meet a threshold first."""
    truth, verdicts = binary_labels_scores(labels, called)
    if verdicts.size and not np.isin(verdicts, (0.0, 1.0)).all():
        raise ValueError("verdicts must be bool or 0 / 1 (1 = called defective), not scores")
    y, pred = truth.astype(bool), verdicts.astype(bool)
    tp, fp = int(np.count_nonzero(pred & y)), int(np.count_nonzero(pred & ~y))
    fn, tn = int(np.count_nonzero(~pred & y)), int(np.count_nonzero(~pred & ~y))
    return {
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "false_calls": fp + fn,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "accuracy": (tp + tn) / y.size if y.size else NAN,
    }
