"""Zero-shot metrics: generalised zero-shot (GZSL) S / U / H and the unknown alert.

Conventions:

- Predictions range over seen and unseen classes together (GZSL).
- **S** (``seen_acc``) and **U** (``unseen_acc``) are per-class averaged
  accuracies, the standard GZSL protocol of Xian et al. (2018): for each class
  with test samples, the fraction of its samples predicted as it; averaged
  over the seen (resp. unseen) classes, taking the samples whose *true* class
  is seen (resp. unseen). Classes without test samples are left out; a side
  with no samples at all is ``nan``.
- **H** = 2SU / (S + U), 0.0 when S + U = 0, ``nan`` when S or U is ``nan``.
  Hand-written: no library ships the GZSL harmonic mean.
- **Unknown alert AUROC**: scikit-learn AUROC with unseen = positive and the
  alert score (higher = more likely unseen); ``nan`` if only one group is present.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn.metrics import recall_score

from defectkit.metrics._utils import NAN, ArrayLike, to_numpy
from defectkit.metrics.image import auroc

__all__ = ["gzsl_metrics", "harmonic_mean", "unknown_alert_auroc"]


def harmonic_mean(seen_acc: float, unseen_acc: float) -> float:
    """GZSL H = 2SU / (S + U); 0 when both are 0; ``nan`` if either is ``nan``."""
    if math.isnan(seen_acc) or math.isnan(unseen_acc):
        return NAN
    total = seen_acc + unseen_acc
    return 0.0 if total == 0 else 2.0 * seen_acc * unseen_acc / total


def _per_class_acc(yt: np.ndarray, yp: np.ndarray, classes: set[int]) -> tuple[float, int]:
    present = sorted(set(yt.tolist()) & classes)
    if not present:
        return NAN, 0
    mask = np.isin(yt, present)
    # Recall of class c only involves samples whose true class is c, so it is
    # that class's accuracy.
    recalls = recall_score(yt[mask], yp[mask], labels=present, average=None, zero_division=0)
    return float(np.mean(recalls)), int(mask.sum())


def gzsl_metrics(
    y_true: ArrayLike, y_pred: ArrayLike, seen_classes: Iterable[int], unseen_classes: Iterable[int]
) -> dict[str, Any]:
    """``{"seen_acc", "unseen_acc", "h", "n_seen", "n_unseen"}`` (S, U, H; sample counts)."""
    yt = to_numpy(y_true).reshape(-1).astype(np.int64)
    yp = to_numpy(y_pred).reshape(-1).astype(np.int64)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred differ in length: {yt.size} vs {yp.size}")
    seen = {int(c) for c in seen_classes}
    unseen = {int(c) for c in unseen_classes}
    if seen & unseen:
        raise ValueError(f"classes {sorted(seen & unseen)} are both seen and unseen")
    stray = sorted(set(yt.tolist()) - seen - unseen)
    if stray:
        raise ValueError(f"true classes {stray[:5]} are neither seen nor unseen")
    s, n_seen = _per_class_acc(yt, yp, seen)
    u, n_unseen = _per_class_acc(yt, yp, unseen)
    return {"seen_acc": s, "unseen_acc": u, "h": harmonic_mean(s, u), "n_seen": n_seen, "n_unseen": n_unseen}


def unknown_alert_auroc(is_unseen: ArrayLike, unknown_scores: ArrayLike) -> float:
    """AUROC of the "unknown" alert: unseen inputs (1) vs seen ones (0)."""
    return auroc(is_unseen, unknown_scores)
