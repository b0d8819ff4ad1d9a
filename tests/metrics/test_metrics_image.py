"""Image-level metrics against scikit-learn and hand-computed cases."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from defectkit.metrics import auroc, average_precision, fp_at_full_recall, image_metrics, verdict_metrics


@st.composite
def labelled_scores(draw: st.DrawFn) -> tuple[list[int], list[float]]:
    n = draw(st.integers(2, 60))
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < len(y)))
    # Few distinct values so that tied scores are common.
    scores = draw(st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.9, 1.0]), min_size=n, max_size=n))
    return labels, scores


@settings(max_examples=150, deadline=None)
@given(labelled_scores())
def test_ap_auroc_match_sklearn_with_ties(data: tuple[list[int], list[float]]) -> None:
    y, s = data
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-6)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-6)


def test_ap_auroc_match_sklearn_random() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.random(500) * 0.5 + 0.3 * y
    assert abs(average_precision(y, s) - average_precision_score(y, s)) < 1e-6
    assert abs(auroc(y, s) - roc_auc_score(y, s)) < 1e-6


@pytest.mark.parametrize("y", [[0, 0, 0], [1, 1, 1], []])
def test_one_class_gives_nan(y: list[int]) -> None:
    s = [0.2, 0.5, 0.9][: len(y)]
    assert math.isnan(average_precision(y, s))
    assert math.isnan(auroc(y, s))


def test_fp_at_full_recall_hand_case() -> None:
    y = [1, 0, 1, 0, 0, 0]
    s = [0.9, 0.8, 0.4, 0.4, 0.3, 0.95]
    # Lowest defective score 0.4: negatives at 0.8, 0.4 (tie counts) and 0.95.
    assert fp_at_full_recall(y, s) == 3
    assert fp_at_full_recall([0, 0], [0.1, 0.9]) == 0  # no defects: documented 0
    assert fp_at_full_recall([1, 1], [0.1, 0.9]) == 0


def test_image_metrics_with_threshold() -> None:
    y = [1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.6]
    m = image_metrics(y, s, threshold=0.6)
    # Called defective: 0.9(1), 0.6(1), 0.7(0), 0.6(0) -> TP 2, FP 2, FN 1, TN 2.
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 2, 1, 2)
    assert m["false_calls"] == 3
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["ap"] == pytest.approx(average_precision_score(y, s))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert m["fp_at_full_recall"] == 3  # negatives 0.7, 0.3, 0.6 >= lowest defect 0.2
    json.dumps(m)  # plain Python types only
    assert all(type(v) in (int, float) for v in m.values())


def test_verdict_metrics_count_given_verdicts() -> None:
    m = verdict_metrics([1, 1, 0, 0, 0], [True, False, True, False, False])
    assert (m["tp"], m["fn"], m["fp"], m["tn"], m["false_calls"]) == (1, 1, 1, 2, 2)
    assert m["precision"] == m["recall"] == m["f1"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(3 / 5)
    nothing_called = verdict_metrics([1, 0], [0, 0])
    assert nothing_called["precision"] == nothing_called["f1"] == 0.0  # zero_division=0
    assert math.isnan(verdict_metrics([], [])["accuracy"])
    with pytest.raises(ValueError, match="differ in length"):
        verdict_metrics([1, 0], [1])
    with pytest.raises(ValueError, match="not scores"):
        verdict_metrics([1, 0], [0.7, 0.2])
    with pytest.raises(ValueError, match="labels must be 0"):
        verdict_metrics([-1, 0], [1, 0])  # evaluate's "unknown" label is not a defect
    assert verdict_metrics(torch.tensor([1, 0]), torch.tensor([True, True]))["fp"] == 1


def test_image_metrics_without_threshold_has_no_threshold_entries() -> None:
    m = image_metrics([0, 1], [0.2, 0.8])
    assert {"fp", "fn", "false_calls", "precision", "recall", "f1", "accuracy"}.isdisjoint(m)
    assert m["ap"] == 1.0


def test_image_metrics_no_positives_no_crash() -> None:
    m = image_metrics([0, 0, 0], [0.1, 0.6, 0.3], threshold=0.5)
    assert math.isnan(m["ap"])
    assert math.isnan(m["auroc"])
    assert m["fp"] == 1
    assert m["recall"] == 0.0


def test_torch_and_numpy_inputs_agree() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 100)
    s = rng.random(100).astype(np.float32)
    a = image_metrics(y, s, threshold=0.5)
    b = image_metrics(torch.from_numpy(y), torch.from_numpy(s), threshold=0.5)
    c = image_metrics(y.tolist(), s.tolist(), threshold=0.5)
    assert a == b == c


def test_bad_input_is_value_error() -> None:
    with pytest.raises(ValueError, match="length"):
        auroc([0, 1], [0.5])
    with pytest.raises(ValueError, match="0 \\(good\\) or 1"):
        auroc([0, 2], [0.5, 0.4])
    with pytest.raises(ValueError, match="NaN"):
        auroc([0, 1], [0.5, float("nan")])
