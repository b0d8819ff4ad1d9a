"""Defect-class classification metrics (single-label and multi-label).

Conventions (DESIGN.md, "Metrics"):

- Single-label: **accuracy**, **per-class accuracy** (= recall of each class:
  the fraction of its samples predicted as it; ``nan`` for a class without
  samples), **macro F1** (scikit-learn, unweighted mean over the classes in
  ``labels``; a class with no true and no predicted samples scores 0) and the
  **confusion matrix** (rows = true class, columns = predicted, in the order
  of ``labels``).
- Multi-label: **MLA** (paper 001) = mean over images of the fraction of the K
  labels predicted correctly, from binary predictions ``score >= threshold``;
  this is exactly ``1 - hamming_loss`` (scikit-learn). **Mean per-class AUROC**
  averages scikit-learn's AUROC over the classes whose ground truth has both
  values in the test set; classes with one value (AUROC undefined) are
  skipped, reported as ``nan`` in ``per_class_auroc`` and counted in
  ``n_auroc_skipped``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    recall_score,
    roc_auc_score,
)

from defectkit.metrics._utils import NAN, ArrayLike, nanmean, to_numpy

__all__ = ["classification_metrics", "multilabel_accuracy", "multilabel_metrics"]


def classification_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    num_classes: int | None = None,
    labels: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class accuracy, macro F1 and confusion matrix of class-id predictions.

    The class set is ``labels`` if given, else ``1..num_classes`` (defectkit's class ids; pass
    ``labels`` to include 0 = good), else the
    sorted union of ids in ``y_true`` and ``y_pred``. ``class_names`` (one per
    class, same order) keys ``per_class_accuracy``; otherwise the ids do, as strings.
    """
    yt = to_numpy(y_true).reshape(-1).astype(np.int64)
    yp = to_numpy(y_pred).reshape(-1).astype(np.int64)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred differ in length: {yt.size} vs {yp.size}")
    if yt.size == 0:
        raise ValueError("no samples to score")
    if labels is not None:
        classes = [int(c) for c in labels]
    elif num_classes is not None:
        classes = list(range(1, num_classes + 1))
    else:
        classes = sorted(set(yt.tolist()) | set(yp.tolist()))
    outside = sorted(set(yt.tolist()) - set(classes))
    if outside:
        raise ValueError(f"y_true holds class ids {outside[:5]} outside the class set {classes}")
    if class_names is not None and len(class_names) != len(classes):
        raise ValueError(f"{len(class_names)} class names for {len(classes)} classes")
    names = [str(n) for n in class_names] if class_names is not None else [str(c) for c in classes]
    per_class = recall_score(yt, yp, labels=classes, average=None, zero_division=np.nan)
    return {
        "accuracy": float(accuracy_score(yt, yp)),
        "per_class_accuracy": {n: float(v) for n, v in zip(names, per_class, strict=True)},
        "macro_f1": float(f1_score(yt, yp, labels=classes, average="macro", zero_division=0)),
        "confusion_matrix": confusion_matrix(yt, yp, labels=classes).tolist(),
        "labels": classes,
        "n": int(yt.size),
    }


def _multi_hot(y: ArrayLike) -> np.ndarray:
    a = to_numpy(y)
    if a.ndim != 2:
        raise ValueError(f"multi-label input must be NxK; got shape {tuple(a.shape)}")
    return a


def multilabel_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """MLA: mean over images of the fraction of labels predicted correctly (binary NxK inputs)."""
    yt = _multi_hot(y_true) > 0
    yp = _multi_hot(y_pred) > 0
    if yt.shape != yp.shape:
        raise ValueError(f"y_true {yt.shape} and y_pred {yp.shape} shapes differ")
    if yt.size == 0:
        return NAN
    # Every image has the same K labels, so the mean of per-image fractions is
    # the overall fraction of correct entries: 1 - Hamming loss.
    return float(1.0 - hamming_loss(yt, yp))


def multilabel_metrics(y_true: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> dict[str, Any]:
    """MLA at ``score >= threshold`` and mean per-class AUROC of NxK multi-hot / scores.

    Returns ``mla``, ``mean_auroc`` (``nan`` if every class is skipped),
    ``per_class_auroc`` (list, ``nan`` for skipped classes), ``n_auroc_skipped``,
    ``threshold``, ``n``.
    """
    yt = _multi_hot(y_true) > 0
    s = _multi_hot(scores).astype(np.float64)
    if yt.shape != s.shape:
        raise ValueError(f"y_true {yt.shape} and scores {s.shape} shapes differ")
    per_class: list[float] = []
    for k in range(yt.shape[1]):
        col = yt[:, k]
        per_class.append(float(roc_auc_score(col, s[:, k])) if 0 < col.sum() < col.size else NAN)
    return {
        "mla": multilabel_accuracy(yt, s >= threshold),
        "mean_auroc": nanmean(per_class),
        "per_class_auroc": per_class,
        "n_auroc_skipped": int(np.isnan(per_class).sum()),
        "threshold": float(threshold),
        "n": int(yt.shape[0]),
    }
