"""Segmentation metrics: Dice, IoU and pixel AUROC.

Conventions (DESIGN.md, "Metrics"):

- **Dice** = 2|P ∩ G| / (|P| + |G|) and **IoU** = |P ∩ G| / |P ∪ G|, computed per
  image (per image x class for multi-class). Both masks empty -> 1.0; a
  non-empty prediction on an empty ground truth -> 0.0.
- ``dice`` / ``iou`` are the mean over all image (x class) pairs;
  ``dice_pos`` / ``iou_pos`` the mean over the pairs whose ground truth has
  defect pixels (``nan`` when there are none).
- **Pixel AUROC** is over all pixels of the test set pooled together (not a
  mean of per-image AUROCs); ``nan`` when the pooled pixels hold one class.
  For multi-class input a pixel is positive when any class is present and its
  score is the maximum of the per-class scores.
- A probability map is turned into a mask with ``prob >= pixel_threshold``
  (the ``pixel`` threshold stored in the model), the same ``>=`` rule as the
  image-level decision. Multi-class probability stacks are thresholded per
  class (sigmoid outputs, classes may overlap as in Severstal); a softmax
  model should pass its argmax class-id map instead.

Input shapes, in `SegmentationMeter.update` (a batch, or a list of images of
possibly different sizes):

- binary (``num_classes`` None or 1): ``BxHxW`` or ``Bx1xHxW`` masks (bool/int,
  > 0 = defect, so a class-id map counts any class as defect) or float
  probability maps; per image ``HxW`` or ``1xHxW``.
- multi-class (``num_classes = K >= 2``): ``BxHxW`` integer class-id maps with
  values 0..K (0 = background) or ``BxKxHxW`` stacks (bool masks or float
  probabilities; channel k-1 is class k); per image ``HxW`` or ``KxHxW``.

Why pixel AUROC is hand-written: the test set of a real benchmark holds
hundreds of millions of pixels. torchmetrics' exact ``BinaryAUROC`` keeps every
pixel, and its binned mode uses linearly spaced thresholds, which lumps the
many near-zero background scores of a confident model into one bin. The
default here is an exact ROC over scores rounded on a *logarithmic* grid, fine
at both ends: the float32 bit pattern of a score is monotone in its value, so
dropping its low mantissa bits gives bins of constant relative width (2**-12 ≈
2.4e-4 with the default 12 mantissa bits). Scores below 0.5 are binned by their
own bits, scores from 0.5 up by the bits of ``1 - score`` (exact in float32
there), mirrored: a confident model's defect pixels just below 1 are told apart
as finely as its background just above 0 (about a million bins, 16 MB). Pixels
in one bin count as tied (half credit, as scikit-learn does for equal scores),
so the result equals the exact AUROC of the rounded scores. ``exact=True`` keeps
every pixel and calls scikit-learn; use it for small test sets and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from defectkit.metrics._utils import NAN, ArrayLike, nanmean, to_numpy

__all__ = [
    "PixelAUROC",
    "SegmentationMeter",
    "dice_score",
    "iou_score",
    "segmentation_metrics",
]

_HALF_F32_BITS = 0x3F000000  # bit pattern of float32 0.5


def _binary_mask(x: ArrayLike) -> np.ndarray:
    a = to_numpy(x)
    return a if a.dtype == np.bool_ else a > 0


def dice_score(pred: ArrayLike, true: ArrayLike) -> float:
    """Dice of one pair of binary masks (any shape, > 0 = defect); both empty -> 1.0."""
    p, g = _binary_mask(pred), _binary_mask(true)
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: pred {p.shape} vs true {g.shape}")
    denom = int(p.sum()) + int(g.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.count_nonzero(p & g)) / denom


def iou_score(pred: ArrayLike, true: ArrayLike) -> float:
    """IoU (Jaccard) of one pair of binary masks; both empty -> 1.0."""
    p, g = _binary_mask(pred), _binary_mask(true)
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: pred {p.shape} vs true {g.shape}")
    union = int(np.count_nonzero(p | g))
    return 1.0 if union == 0 else int(np.count_nonzero(p & g)) / union


class PixelAUROC:
    """Streaming pixel AUROC: ``update(scores, targets)`` per batch, ``compute()`` at the end.

    Args:
        exact: keep every pixel and use scikit-learn (memory grows with the data).
        mantissa_bits: binned mode resolution; bins have relative width
            ``2**-mantissa_bits`` of the score below 0.5, of ``1 - score`` above.
            Scores must lie in [0, 1] in binned mode.
    """

    def __init__(self, exact: bool = False, mantissa_bits: int = 12) -> None:
        if not 1 <= mantissa_bits <= 16:
            raise ValueError("mantissa_bits must be in 1..16 (more would need > 100 MB of bins)")
        self.exact = exact
        self._shift = 23 - mantissa_bits
        self._half_bin = _HALF_F32_BITS >> self._shift
        self._n_bins = 2 * self._half_bin + 1
        self.reset()

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []
        # Row 0: negatives, row 1: positives, per bin.
        self._hist = np.zeros((2, self._n_bins), dtype=np.int64) if not self.exact else None

    def update(self, scores: ArrayLike, targets: ArrayLike) -> None:
        s = to_numpy(scores).reshape(-1)
        t = _binary_mask(targets).reshape(-1)
        if s.shape != t.shape:
            raise ValueError(f"score map and mask differ in size: {s.size} vs {t.size} pixels")
        if self.exact:
            self._scores.append(s.astype(np.float64))
            self._targets.append(t.copy())
            return
        # + 0.0 turns -0.0 into +0.0, whose bit pattern is the bottom bin.
        s32 = s.astype(np.float32) + np.float32(0.0)
        if not ((s32 >= 0) & (s32 <= 1)).all():
            raise ValueError("pixel scores must lie in [0, 1] (NaN is not allowed) for binned pixel AUROC")
        low = s32 < 0.5
        mirrored = np.where(low, s32, np.float32(1.0) - s32)  # exact for s32 in [0.5, 1]
        bits = (mirrored.view(np.uint32) >> self._shift).astype(np.int64)
        # Below 0.5 bins count up from 0; from 0.5 they count down from the top (score 1.0).
        bins = np.where(low, bits, 2 * self._half_bin - bits)
        assert self._hist is not None
        self._hist += np.bincount(bins * 2 + t, minlength=2 * self._n_bins).reshape(-1, 2).T

    def compute(self) -> float:
        if self.exact:
            if not self._scores:
                return NAN
            t = np.concatenate(self._targets)
            if t.all() or not t.any():
                return NAN
            return float(roc_auc_score(t, np.concatenate(self._scores)))
        assert self._hist is not None
        neg = self._hist[0].astype(np.float64)
        pos = self._hist[1].astype(np.float64)
        n_neg, n_pos = neg.sum(), pos.sum()
        if n_neg == 0 or n_pos == 0:
            return NAN
        # P(score_pos > score_neg) + 0.5 P(tie), bins taken as tied scores.
        neg_below = np.cumsum(neg) - neg
        return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


def _is_per_image_list(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], (np.ndarray, torch.Tensor))


class SegmentationMeter:
    """Accumulates Dice / IoU per image (x class) and pixel AUROC over batches.

    Args:
        num_classes: None or 1 for binary masks; K >= 2 for K defect classes.
        pixel_threshold: probability maps are masks where ``prob >= pixel_threshold``.
        exact_auroc: see `PixelAUROC`.
        class_names: names of classes 1..K for the ``per_class`` entry.

    ``compute()`` gives ``dice``, ``dice_pos``, ``iou``, ``iou_pos``, ``n_images``,
    ``n_pos`` (image x class pairs with defects), ``pixel_auroc`` (only when every
    update passed probability maps rather than masks), and for K >= 2 a
    ``per_class`` dict of the same means per class.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        pixel_threshold: float = 0.5,
        exact_auroc: bool = False,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if num_classes is not None and num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.num_classes = num_classes or 1
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        self.class_names = (
            list(class_names) if class_names else [str(k) for k in range(1, self.num_classes + 1)]
        )
        self.pixel_threshold = pixel_threshold
        self._auroc = PixelAUROC(exact=exact_auroc)
        self.reset()

    def reset(self) -> None:
        self._dice: list[np.ndarray] = []
        self._iou: list[np.ndarray] = []
        self._pos: list[np.ndarray] = []
        self._n_images = 0
        self._all_scores = True
        self._auroc.reset()

    def _stack(self, x: ArrayLike, is_pred: bool, batched: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """To a ``BxKxHxW`` bool stack, plus the ``BxKxHxW`` float scores for predictions."""
        a = to_numpy(x)
        if not batched:
            a = a[None]
        k = self.num_classes
        what = "prediction" if is_pred else "target"
        if a.ndim == 3:
            if k == 1:
                a = a[:, None]
            elif np.issubdtype(a.dtype, np.floating):
                raise ValueError(
                    f"multi-class {what} without a class axis must be an integer class-id map; "
                    f"pass float probabilities as {'BxKxHxW' if batched else 'KxHxW'}"
                )
            else:
                if a.size and (a.min() < 0 or a.max() > k):
                    raise ValueError(f"{what} class ids must be in 0..{k}; got {a.min()}..{a.max()}")
                a = a[:, None] == np.arange(1, k + 1).reshape(1, k, 1, 1)
        if a.ndim != 4 or a.shape[1] != k:
            shape = "BxHxW or BxKxHxW" if batched else "HxW or KxHxW"
            raise ValueError(f"{what} of shape {tuple(a.shape)} does not match {shape} with K={k}")
        if is_pred and np.issubdtype(a.dtype, np.floating):
            return a >= self.pixel_threshold, a
        return (a if a.dtype == np.bool_ else a > 0), None

    def update(
        self, preds: ArrayLike | Sequence[ArrayLike], targets: ArrayLike | Sequence[ArrayLike]
    ) -> None:
        """Add a batch (array / tensor) or a list of single images (see module docstring)."""
        if _is_per_image_list(preds):
            if not isinstance(preds, (list, tuple)) or not isinstance(targets, (list, tuple)):
                raise ValueError("a list of per-image predictions needs a list of per-image targets")
            if len(preds) != len(targets):
                raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
            for p, t in zip(preds, targets, strict=True):
                self._update(p, t, batched=False)
        else:
            self._update(preds, targets, batched=True)

    def _update(self, preds: ArrayLike, targets: ArrayLike, batched: bool) -> None:
        p, scores = self._stack(preds, is_pred=True, batched=batched)
        g, _ = self._stack(targets, is_pred=False, batched=batched)
        if p.shape != g.shape:
            raise ValueError(f"prediction {p.shape} and target {g.shape} shapes differ (BxKxHxW)")
        inter = np.count_nonzero(p & g, axis=(2, 3)).astype(np.float64)
        p_sum = np.count_nonzero(p, axis=(2, 3)).astype(np.float64)
        g_sum = np.count_nonzero(g, axis=(2, 3)).astype(np.float64)
        union = p_sum + g_sum - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            self._dice.append(np.where(p_sum + g_sum == 0, 1.0, 2.0 * inter / (p_sum + g_sum)))
            self._iou.append(np.where(union == 0, 1.0, inter / union))
        self._pos.append(g_sum > 0)
        self._n_images += p.shape[0]
        if scores is None:
            self._all_scores = False
        elif self._all_scores:
            self._auroc.update(scores.max(axis=1), np.asarray(g.any(axis=1)))

    def per_image(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Dice, IoU, truth-has-defect) per image x class, each N x K, in update order."""
        k = self.num_classes
        dice = np.concatenate(self._dice) if self._dice else np.zeros((0, k))
        iou = np.concatenate(self._iou) if self._iou else np.zeros((0, k))
        pos = np.concatenate(self._pos) if self._pos else np.zeros((0, k), dtype=bool)
        return dice, iou, pos

    def compute(self) -> dict[str, Any]:
        k = self.num_classes
        dice, iou, pos = self.per_image()
        out: dict[str, Any] = {
            "dice": nanmean(dice.ravel()),
            "dice_pos": nanmean(dice[pos]),
            "iou": nanmean(iou.ravel()),
            "iou_pos": nanmean(iou[pos]),
            "n_images": self._n_images,
            "n_pos": int(pos.sum()),
        }
        if self._all_scores and self._n_images:
            out["pixel_auroc"] = self._auroc.compute()
        if k > 1:
            out["per_class"] = {
                name: {
                    "dice": nanmean(dice[:, c]),
                    "dice_pos": nanmean(dice[pos[:, c], c]),
                    "iou": nanmean(iou[:, c]),
                    "iou_pos": nanmean(iou[pos[:, c], c]),
                    "n_pos": int(pos[:, c].sum()),
                }
                for c, name in enumerate(self.class_names)
            }
        return out


def segmentation_metrics(
    preds: ArrayLike | Sequence[ArrayLike],
    targets: ArrayLike | Sequence[ArrayLike],
    num_classes: int | None = None,
    pixel_threshold: float = 0.5,
    exact_auroc: bool = False,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One-shot `SegmentationMeter`: same inputs as its ``update``, same dict as ``compute``."""
    meter = SegmentationMeter(num_classes, pixel_threshold, exact_auroc, class_names)
    meter.update(preds, targets)
    return meter.compute()
