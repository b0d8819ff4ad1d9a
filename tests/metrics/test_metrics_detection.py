"""COCO mAP via faster-coco-eval, hand cases cross-checked with torchmetrics."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.detection import MeanAveragePrecision

from defectkit.metrics import detection_map

TARGETS = [
    {"boxes": np.array([[10, 10, 50, 50], [60, 60, 90, 90]], dtype=float), "labels": np.array([1, 1])},
    {"boxes": np.array([[5, 5, 40, 30]], dtype=float), "labels": np.array([2])},
]


def _perfect() -> list[dict[str, np.ndarray]]:
    return [{**t, "scores": np.linspace(0.9, 0.5, len(t["labels"]))} for t in TARGETS]


def test_perfect_predictions() -> None:
    m = detection_map(_perfect(), TARGETS, class_names=["scratch", "dent"])
    assert m["map"] == pytest.approx(1.0)
    assert m["map50"] == pytest.approx(1.0)
    assert m["per_class_ap50"] == {"scratch": pytest.approx(1.0), "dent": pytest.approx(1.0)}


def test_one_of_two_missed_is_51_of_101() -> None:
    # One class, two boxes, one found: precision 1 up to recall 0.5, so 51 of
    # COCO's 101 recall points score 1.
    preds = [{"boxes": TARGETS[0]["boxes"][:1], "labels": np.array([1]), "scores": np.array([0.9])}]
    m = detection_map(preds, TARGETS[:1])
    assert m["map50"] == pytest.approx(51 / 101)
    assert m["map"] == pytest.approx(51 / 101)
    assert m["per_class_ap50"] == {"1": pytest.approx(51 / 101)}


def test_agrees_with_torchmetrics() -> None:
    rng = np.random.default_rng(0)
    preds = []
    for t in TARGETS:
        jitter = rng.normal(0, 4, t["boxes"].shape)
        boxes = np.vstack([t["boxes"] + jitter, [[0, 0, 20, 20]]])
        preds.append({"boxes": boxes, "labels": np.r_[t["labels"], 2], "scores": rng.random(len(boxes))})
    ours = detection_map(preds, TARGETS)
    tm = MeanAveragePrecision(backend="faster_coco_eval", iou_type="bbox")
    tm.update(
        [
            {
                k: torch.as_tensor(v, dtype=torch.float32 if k != "labels" else torch.int64)
                for k, v in p.items()
            }
            for p in preds
        ],
        [
            {
                k: torch.as_tensor(v, dtype=torch.float32 if k != "labels" else torch.int64)
                for k, v in t.items()
            }
            for t in TARGETS
        ],
    )
    ref = tm.compute()
    assert ours["map"] == pytest.approx(float(ref["map"]), abs=1e-4)
    assert ours["map50"] == pytest.approx(float(ref["map_50"]), abs=1e-4)


def test_no_predictions_and_no_ground_truth() -> None:
    no_preds = [
        {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int), "scores": np.zeros(0)} for _ in TARGETS
    ]
    assert detection_map(no_preds, TARGETS)["map"] == 0.0
    empty_t = [{"boxes": np.zeros((0, 4)), "box_classes": np.zeros(0, int)}]
    m = detection_map(no_preds[:1], empty_t, class_names=["a"])
    assert math.isnan(m["map"])
    assert math.isnan(m["per_class_ap50"]["a"])


def test_class_without_ground_truth_is_nan_and_excluded() -> None:
    preds = _perfect()
    preds[0] = {**preds[0], "boxes": np.vstack([preds[0]["boxes"], [[0, 0, 5, 5]]])}
    preds[0]["labels"] = np.r_[TARGETS[0]["labels"], 3]
    preds[0]["scores"] = np.r_[preds[0]["scores"], 0.99]
    m = detection_map(preds, TARGETS, class_names=["a", "b", "c"])
    assert math.isnan(m["per_class_ap50"]["c"])
    assert m["map50"] == pytest.approx(1.0)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        detection_map(_perfect(), TARGETS, class_names=["only_one"])
    with pytest.raises(ValueError, match="scores"):
        detection_map(TARGETS, TARGETS)


def test_map_at_other_iou_thresholds_tells_extent_from_misses() -> None:
    # The box is in the right place but 16 of 40 wide: IoU 0.4, found at 0.3 and missed at 0.7.
    truth = [{"boxes": np.array([[0, 0, 40, 40]], dtype=float), "labels": np.array([1])}]
    narrow = [
        {"boxes": np.array([[0, 0, 16, 40]], dtype=float), "labels": np.array([1]), "scores": np.ones(1)}
    ]
    m = detection_map(narrow, truth, iou_thresholds=[0.7, 0.3])  # IoU 0.4
    assert m["map_at_iou"] == {0.3: pytest.approx(1.0), 0.7: pytest.approx(0.0)}
    assert m["map"] == pytest.approx(0.5)
    assert math.isnan(m["map50"]) and math.isnan(m["per_class_ap50"]["1"])
    default = detection_map(narrow, truth)
    assert len(default["map_at_iou"]) == 10 and default["map_at_iou"][0.5] == default["map50"] == 0.0
    with pytest.raises(ValueError, match="iou_thresholds"):
        detection_map(narrow, truth, iou_thresholds=[1.5])
