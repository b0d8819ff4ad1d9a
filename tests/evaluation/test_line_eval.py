"""End-to-end line figures (defectkit.evaluation.line), shared by `line eval` and dagm-mix/line."""

from __future__ import annotations

import numpy as np
import pytest

from defectkit.evaluation.line import cascade_figures


def test_cascade_figures_count_each_verdict_once() -> None:
    rows = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])  # seen good x4, seen defective x3, unseen x2
    verdicts = ["ok", "ok", "defect", "unknown", "defect", "defect", "ok", "unknown", "defect"]
    routed = np.array([True, True, True, False, True, True, True, False, False])
    unseen = np.array([0.1, 0.2, 0.1, 0.9, 0.2, 0.1, 0.3, 0.8, 0.05])
    figures = cascade_figures(rows, verdicts, routed, unseen)
    assert figures["confusion"] == [[2, 1, 1], [1, 2, 0], [0, 1, 1]]
    assert figures["detection_rate"] == pytest.approx(2 / 3)
    assert figures["escape_rate"] == pytest.approx(1 / 3)
    assert figures["false_alarm_rate"] == pytest.approx(2 / 4)  # defect or unknown on a good part
    assert figures["false_defect_rate"] == pytest.approx(1 / 4)
    assert figures["unseen_alert_rate"] == pytest.approx(1 / 2)
    assert figures["routing_accuracy"] == pytest.approx(6 / 7)
    # Unseen 0.8 beats 6 of the 7 seen scores, 0.05 none: 6 of 14 pairs.
    assert figures["alert_auroc"] == pytest.approx(6 / 14)
    # Without unseen images there is no alert to score: NaN, written as null.
    seen_only = cascade_figures(rows[:7], verdicts[:7], routed[:7], unseen[:7])
    assert np.isnan(seen_only["alert_auroc"]) and np.isnan(seen_only["unseen_alert_rate"])
