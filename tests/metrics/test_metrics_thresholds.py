"""Decision threshold selection (best F1 on validation, ties -> higher threshold)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from defectkit.metrics import best_f1_threshold, fp_fn_at_threshold, rescaled_to_half


def test_best_f1_separable() -> None:
    assert best_f1_threshold([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.8]) == 0.7


def test_best_f1_tie_goes_to_higher_threshold() -> None:
    # t=0.8 -> TP1 FP0 FN1: F1 = 2/3. t=0.4 -> TP2 FP2 FN0: F1 = 4/6 = 2/3. Tie -> 0.8.
    y = [1, 0, 0, 1]
    s = [0.8, 0.6, 0.5, 0.4]
    assert best_f1_threshold(y, s) == 0.8
    # Same F1 at both candidates, checked with scikit-learn.
    assert f1_score(y, np.array(s) >= 0.8) == pytest.approx(f1_score(y, np.array(s) >= 0.4))


def test_best_f1_tied_scores_form_one_candidate() -> None:
    # Scores 0.5 tie: the threshold 0.5 calls both, never just one of them.
    y = [1, 0, 1]
    s = [0.5, 0.5, 0.2]
    assert best_f1_threshold(y, s) == 0.2  # F1(0.5) = 2/4 = 0.5; F1(0.2) = 4/5 = 0.8


def test_best_f1_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        y[0] = 1
        s = np.round(rng.random(40), 1)
        best = max(np.unique(s), key=lambda t: (f1_score(y, s >= t), t))
        assert best_f1_threshold(y, s) == pytest.approx(best)


def test_no_defective_validation_images_is_clear_error() -> None:
    with pytest.raises(ValueError, match="no defective images"):
        best_f1_threshold([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="empty"):
        best_f1_threshold([], [])


def test_fp_fn_at_threshold_uses_ge() -> None:
    y = [1, 0, 1, 0]
    s = [0.5, 0.5, 0.49, 0.2]
    assert fp_fn_at_threshold(y, s, 0.5) == (1, 1)
    assert fp_fn_at_threshold(torch.tensor(y), torch.tensor(s, dtype=torch.float64), 0.5) == (1, 1)
    assert fp_fn_at_threshold(y, s, 0.0) == (2, 0)


def test_midpoint_placement_keeps_the_calls_and_centres_the_gap() -> None:
    y, s = [0, 0, 1, 1], [0.1, 0.3, 0.7, 0.8]
    threshold = best_f1_threshold(y, s, placement="midpoint")
    assert threshold == pytest.approx(0.5)
    assert fp_fn_at_threshold(y, s, threshold) == fp_fn_at_threshold(y, s, best_f1_threshold(y, s))


def test_midpoint_placement_without_a_lower_score_is_the_score() -> None:
    assert best_f1_threshold([1, 1], [0.4, 0.9], placement="midpoint") == 0.4


def test_unknown_placement_is_an_error() -> None:
    with pytest.raises(ValueError, match="placement"):
        best_f1_threshold([0, 1], [0.1, 0.9], placement="middle")  # type: ignore[arg-type]


def test_rescaled_to_half_puts_each_class_threshold_at_half() -> None:
    thresholds = np.array([0.2, 0.5, 0.9])
    probabilities = np.array([[0.0, 0.5, 0.9], [0.2, 1.0, 0.45], [0.1, 0.75, 0.95]])
    rescaled = rescaled_to_half(probabilities, thresholds)
    assert rescaled[0].tolist() == [0.0, 0.5, 0.5] and rescaled[1].tolist() == [0.5, 1.0, 0.25]
    np.testing.assert_allclose(rescaled[2], [0.25, 0.75, 0.75])
    # "score >= 0.5" is exactly "some class at or above its threshold", to the last bit.
    just_below = np.nextafter(thresholds, 0.0)
    assert (rescaled_to_half(just_below, thresholds) < 0.5).all()
    assert (rescaled_to_half(thresholds, thresholds) >= 0.5).all()
    # One threshold for all classes keeps the order of the best probabilities (AP unchanged).
    many = np.random.default_rng(0).random((50, 3))
    same = rescaled_to_half(many, 0.3).max(axis=1)
    assert (np.argsort(same, kind="stable") == np.argsort(many.max(axis=1), kind="stable")).all()


def test_class_thresholds_of_a_model_without_class_names(tmp_path: Path) -> None:
    from conftest import tiny_model
    from defectkit import load_inspector
    from defectkit.inference.saved_model import Thresholds

    inspector = load_inspector(tiny_model(tmp_path / "m", "segdec", decision=0.3))
    inspector.card.class_names = []
    assert inspector.class_thresholds.tolist() == [0.3]  # one class, as score_multilabel names it
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        Thresholds(decision=0.5, per_class={"a": 1.0})
