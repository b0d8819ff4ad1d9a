"""Single- and multi-label classification metrics."""

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

from defectkit.metrics import classification_metrics, multilabel_accuracy, multilabel_metrics


def test_classification_hand_case() -> None:
    y = [1, 1, 2, 2, 3, 3]  # defect class ids are 1..K
    p = [1, 2, 2, 2, 3, 1]
    m = classification_metrics(y, p, num_classes=3, class_names=["crazing", "inclusion", "patches"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class_accuracy"] == {"crazing": 0.5, "inclusion": 1.0, "patches": 0.5}
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    json.dumps(m)


def test_classification_torch_equals_numpy_and_missing_class() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(1, 4, 50)
    p = rng.integers(1, 5, 50)  # class 4 never true
    a = classification_metrics(y, p, num_classes=4)
    b = classification_metrics(torch.from_numpy(y), torch.from_numpy(p), num_classes=4)
    assert a.keys() == b.keys()
    assert (
        a["confusion_matrix"] == b["confusion_matrix"] == confusion_matrix(y, p, labels=[1, 2, 3, 4]).tolist()
    )
    assert math.isnan(a["per_class_accuracy"]["4"])
    assert math.isnan(b["per_class_accuracy"]["4"])
    assert a["macro_f1"] == b["macro_f1"]


def test_classification_bad_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([1, 5], [1, 2], num_classes=2)
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 1], [0, 1], num_classes=2)  # 0 is "good", not a defect class
    with pytest.raises(ValueError, match="length"):
        classification_metrics([0, 1], [0], num_classes=2)


def test_mla_hand_case() -> None:
    y = np.array([[1, 0, 0, 1], [0, 0, 0, 0]])
    p = np.array([[1, 1, 0, 1], [0, 0, 0, 0]])
    # Image 0: 3/4 right, image 1: 4/4 right.
    assert multilabel_accuracy(y, p) == pytest.approx((0.75 + 1.0) / 2)


def test_multilabel_metrics_skips_single_value_classes() -> None:
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    s = np.array([[0.9, 0.2, 0.8], [0.3, 0.6, 0.7], [0.4, 0.1, 0.9], [0.5, 0.3, 0.6]])
    m = multilabel_metrics(y, s, threshold=0.5)
    ref0 = roc_auc_score(y[:, 0], s[:, 0])
    assert m["per_class_auroc"][0] == pytest.approx(ref0)
    assert math.isnan(m["per_class_auroc"][1])
    assert math.isnan(m["per_class_auroc"][2])
    assert m["mean_auroc"] == pytest.approx(ref0)
    assert m["n_auroc_skipped"] == 2
    assert m["mla"] == pytest.approx(multilabel_accuracy(y, s >= 0.5))
    t = multilabel_metrics(torch.from_numpy(y), torch.from_numpy(s), threshold=0.5)
    assert (t["mla"], t["mean_auroc"], t["n_auroc_skipped"]) == (m["mla"], m["mean_auroc"], 2)
    json.dumps(m)
