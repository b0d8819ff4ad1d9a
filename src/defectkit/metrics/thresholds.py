"""Decision thresholds for image-level scores (positive = defective).

Conventions (DESIGN.md, "Scores, thresholds"):

- A score is probability-like, higher = more defective; an image is called
  defective when ``score >= threshold``.
- The decision threshold is chosen on *validation* data by best F1, ties going
  to the higher threshold, and stored in the model; FP / FN on a test set are
  then counted at that stored threshold (`fp_fn_at_threshold`), never at a
  threshold re-chosen on the test set.
- A validation set without defective images cannot define a threshold: that is
  a `ValueError` naming the problem, never a silent threshold of 0.

scikit-learn has no "best-F1 threshold" selector, so `best_f1_threshold` is
written here by hand (a sort and two cumulative sums).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from defectkit.metrics._utils import ArrayLike, binary_labels_scores
from defectkit.metrics.image import verdict_metrics

__all__ = ["best_f1_threshold", "fp_fn_at_threshold", "rescaled_to_half"]


Placement = Literal["score", "midpoint"]


def best_f1_threshold(labels: ArrayLike, scores: ArrayLike, placement: Placement = "score") -> float:
    """Threshold with the best F1 on (validation) ``labels`` / ``scores``.

    Candidates are the distinct score values (``score >= t`` is defective). Among
    thresholds with equal F1 the higher one wins (fewer false alarms for the same
    F1). Every threshold in the gap between that score and the next lower distinct
    score makes the same calls on this data; ``placement`` picks one:

    - ``"score"``: the chosen score itself, the highest such threshold. On a small
      validation set that separates perfectly it sits exactly on the weakest
      validation defect, so a slightly weaker unseen defect is missed.
    - ``"midpoint"``: halfway across the gap (the largest margin to both sides,
      as a max-margin classifier would place it); the chosen score when no lower
      score exists.

    Raises:
        ValueError: empty input, or no defective images (label 1) in ``labels``.
    """
    if placement not in ("score", "midpoint"):
        raise ValueError(f"placement must be 'score' or 'midpoint', not {placement!r}")
    y, s = binary_labels_scores(labels, scores)
    if y.size == 0:
        raise ValueError("cannot choose a decision threshold: the validation set is empty")
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError(
            "cannot choose a decision threshold: the validation set has no defective images "
            "(no label 1); F1 is undefined without positives"
        )
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # Last index of each run of equal scores: thresholding at that score calls
    # every image up to and including the run defective.
    run_ends = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[run_ends]
    fp = (run_ends + 1) - tp
    fn = n_pos - tp
    # F1 = 2TP / (2TP + FP + FN) from integer counts: equal rationals give the
    # identical double, so ties are detected exactly (no epsilon needed).
    f1 = (2.0 * tp) / (2.0 * tp + fp + fn)
    best = f1.max()
    # Thresholds are in decreasing order: the first index reaching the best F1
    # is the highest threshold.
    idx = int(np.flatnonzero(f1 == best)[0])
    chosen = float(s_sorted[run_ends[idx]])
    if placement == "midpoint" and idx + 1 < run_ends.size:
        return (chosen + float(s_sorted[run_ends[idx + 1]])) / 2.0
    return chosen


def fp_fn_at_threshold(labels: ArrayLike, scores: ArrayLike, threshold: float) -> tuple[int, int]:
    """(false positives, false negatives) when ``score >= threshold`` is called defective."""
    y, s = binary_labels_scores(labels, scores)
    verdicts = verdict_metrics(y, s >= threshold)
    return verdicts["fp"], verdicts["fn"]


def rescaled_to_half(probabilities: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
    """``probabilities`` (... x K) mapped so that each class's threshold lands on 0.5.

    Piecewise linear and increasing in each class: [0, t] onto [0, 0.5], [t, 1] onto [0.5, 1].
    With one threshold per class a multi-label model's image score is then the largest rescaled
    probability, judged at 0.5: ``score >= 0.5`` exactly when some class reaches its own
    threshold, and a single threshold for every class leaves the order of the images unchanged
    (so AP / AUROC are those of the best raw probability). Thresholds are clipped into
    [1e-6, 1 - 1e-6] so neither piece is empty.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    t = np.clip(np.asarray(thresholds, dtype=np.float64), 1e-6, 1.0 - 1e-6)
    t = np.broadcast_to(t, p.shape)
    # p / t may round up to 1 just below t: the cap keeps "below threshold" below 0.5.
    below = np.minimum(0.5 * p / t, np.nextafter(0.5, 0.0))
    return np.where(p < t, below, 0.5 + 0.5 * (p - t) / (1.0 - t))
