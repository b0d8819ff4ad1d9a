"""Few-shot summaries, GZSL S / U / H and the unknown-alert AUROC."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from defectkit.metrics import fewshot_summary, gzsl_metrics, harmonic_mean, unknown_alert_auroc


def test_fewshot_summary_sample_std() -> None:
    m = fewshot_summary([0.8, 0.9, 1.0])
    assert m == {"acc_mean": pytest.approx(0.9), "acc_std": pytest.approx(0.1), "n": 3}
    assert fewshot_summary(torch.tensor([0.7]))["acc_std"] == 0.0
    with pytest.raises(ValueError, match="zero repeats"):
        fewshot_summary([])


def test_harmonic_mean() -> None:
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert harmonic_mean(0.8, 0.2) == pytest.approx(2 * 0.16 / 1.0)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(harmonic_mean(float("nan"), 0.5))


def test_gzsl_per_class_averaged() -> None:
    # Seen classes 0, 1 (class 0 has 4 samples, class 1 has 1); unseen class 2.
    y = [0, 0, 0, 0, 1, 2, 2]
    p = [0, 0, 0, 0, 0, 2, 1]
    m = gzsl_metrics(y, p, seen_classes=[0, 1], unseen_classes=[2])
    assert m["seen_acc"] == pytest.approx((1.0 + 0.0) / 2)  # per class, not 4/5 per sample
    assert m["unseen_acc"] == pytest.approx(0.5)
    assert m["h"] == pytest.approx(0.5)
    assert (m["n_seen"], m["n_unseen"]) == (5, 2)
    assert gzsl_metrics(np.array(y), torch.tensor(p), [0, 1], [2]) == m


def test_gzsl_zero_and_errors() -> None:
    m = gzsl_metrics([0, 1], [1, 0], seen_classes=[0], unseen_classes=[1])
    assert m["h"] == 0.0
    with pytest.raises(ValueError, match="both seen and unseen"):
        gzsl_metrics([0], [0], [0], [0])
    with pytest.raises(ValueError, match="neither"):
        gzsl_metrics([3], [3], [0], [1])


def test_unknown_alert_auroc() -> None:
    u = [1, 0, 1, 0, 0]
    s = [0.9, 0.2, 0.4, 0.5, 0.1]
    assert unknown_alert_auroc(u, s) == pytest.approx(roc_auc_score(u, s))
    assert math.isnan(unknown_alert_auroc([0, 0], [0.1, 0.2]))
