"""Dice / IoU per image (x class) and pixel AUROC."""

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from defectkit.metrics import PixelAUROC, SegmentationMeter, dice_score, iou_score, segmentation_metrics


def _mask(h: int, w: int, *boxes: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    for y0, x0, y1, x1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def test_dice_iou_hand_case() -> None:
    p = _mask(4, 4, (0, 0, 2, 2))  # 4 px
    g = _mask(4, 4, (0, 0, 2, 1))  # 2 px, both inside p
    assert dice_score(p, g) == pytest.approx(2 * 2 / 6)
    assert iou_score(p, g) == pytest.approx(2 / 4)


def test_empty_masks() -> None:
    empty = np.zeros((3, 3), dtype=bool)
    some = _mask(3, 3, (0, 0, 1, 1))
    assert dice_score(empty, empty) == 1.0
    assert iou_score(empty, empty) == 1.0
    assert dice_score(some, empty) == 0.0
    assert iou_score(some, empty) == 0.0
    assert dice_score(empty, some) == 0.0


def test_meter_binary_dice_pos_and_probability_maps() -> None:
    g = np.stack([_mask(4, 4, (0, 0, 2, 2)), np.zeros((4, 4), bool), np.zeros((4, 4), bool)])
    prob = np.zeros((3, 4, 4), dtype=np.float32)
    prob[0, 0:2, 0:1] = 0.9  # half the defect found: dice 2*2/(2+4)
    prob[1, 0, 0] = 0.7  # false pixel on a good image: dice 0
    prob[2] = 0.4  # below the pixel threshold: empty, dice 1
    m = segmentation_metrics(prob, g, pixel_threshold=0.5)
    d0 = 2 * 2 / 6
    assert m["dice"] == pytest.approx((d0 + 0 + 1) / 3)
    assert m["dice_pos"] == pytest.approx(d0)
    assert m["iou"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert m["iou_pos"] == pytest.approx(0.5)
    assert (m["n_images"], m["n_pos"]) == (3, 1)
    assert m["pixel_auroc"] == pytest.approx(roc_auc_score(g.ravel(), prob.ravel()), abs=1e-6)
    json.dumps(m)


def test_meter_masks_have_no_pixel_auroc_and_no_positives_gives_nan() -> None:
    z = np.zeros((2, 5, 5), dtype=np.uint8)
    m = segmentation_metrics(z, z)
    assert m["dice"] == 1.0
    assert math.isnan(m["dice_pos"])
    assert "pixel_auroc" not in m


def test_multiclass_id_map_and_stack_agree() -> None:
    g = np.zeros((2, 6, 6), dtype=np.int64)
    g[0, :2, :2] = 1
    g[0, 4:, 4:] = 3
    g[1, 2:4, 2:4] = 2
    p = g.copy()
    p[0, 4:, 4:] = 0  # class 3 missed on image 0
    p[1, 0, 0] = 1  # spurious class 1 on image 1
    m_ids = segmentation_metrics(p, g, num_classes=3, class_names=["a", "b", "c"])
    stack_p = np.stack([p == k for k in (1, 2, 3)], axis=1)
    stack_g = np.stack([g == k for k in (1, 2, 3)], axis=1)
    m_stack = segmentation_metrics(stack_p, stack_g, num_classes=3, class_names=["a", "b", "c"])
    assert m_ids == m_stack
    # Pairs (image, class): (0,1)=1, (0,2)=1 empty, (0,3)=0, (1,1)=0, (1,2)=1, (1,3)=1 empty.
    assert m_ids["dice"] == pytest.approx(4 / 6)
    assert m_ids["dice_pos"] == pytest.approx(2 / 3)  # positives: (0,1), (0,3), (1,2)
    assert m_ids["n_pos"] == 3
    assert m_ids["per_class"]["c"]["dice_pos"] == 0.0
    assert m_ids["per_class"]["a"]["dice"] == pytest.approx(0.5)


def test_multiclass_probability_stack_pixel_auroc_uses_max() -> None:
    rng = np.random.default_rng(0)
    g = rng.integers(0, 3, (2, 8, 8))
    probs = rng.random((2, 2, 8, 8)).astype(np.float32)
    m = segmentation_metrics(probs, g, num_classes=2, exact_auroc=True)
    assert m["pixel_auroc"] == pytest.approx(roc_auc_score((g > 0).ravel(), probs.max(axis=1).ravel()))


def test_per_image_list_of_different_sizes() -> None:
    preds = [_mask(3, 3, (0, 0, 1, 1)), _mask(5, 4)]
    targets = [_mask(3, 3, (0, 0, 1, 1)), _mask(5, 4, (1, 1, 2, 2))]
    meter = SegmentationMeter()
    meter.update(preds, targets)
    m = meter.compute()
    assert m["dice"] == pytest.approx(0.5)
    assert m["dice_pos"] == pytest.approx(0.5)


def test_streaming_equals_one_shot_and_torch_equals_numpy() -> None:
    rng = np.random.default_rng(1)
    g = rng.random((6, 1, 16, 16)) > 0.8
    prob = np.clip(rng.random((6, 1, 16, 16)) * 0.7 + 0.3 * g, 0, 1).astype(np.float32)
    meter = SegmentationMeter(exact_auroc=True)
    for i in range(0, 6, 2):
        meter.update(torch.from_numpy(prob[i : i + 2]), torch.from_numpy(g[i : i + 2]))
    assert meter.compute() == pytest.approx(segmentation_metrics(prob, g, exact_auroc=True))


def test_binned_pixel_auroc_close_to_exact() -> None:
    rng = np.random.default_rng(2)
    y = rng.random(200_000) > 0.97
    # Confident model: most background scores are tiny, where linear bins would fail.
    s = np.where(y, rng.beta(5, 2, y.size), rng.beta(0.3, 30, y.size)).astype(np.float32)
    binned, exact = PixelAUROC(), PixelAUROC(exact=True)
    for chunk in np.array_split(np.arange(y.size), 4):
        binned.update(s[chunk], y[chunk])
        exact.update(torch.from_numpy(s[chunk]), torch.from_numpy(y[chunk]))
    ref = roc_auc_score(y, s)
    assert exact.compute() == pytest.approx(ref, abs=1e-12)
    assert binned.compute() == pytest.approx(ref, abs=1e-4)


def test_binned_pixel_auroc_tells_scores_near_one_apart() -> None:
    # A confident model: defect pixels and its hardest false alarms both just below 1, apart by
    # 5e-5; linear bins, or log bins of the score itself (2**-13 wide there), lump them together.
    rng = np.random.default_rng(4)
    positives = rng.uniform(0.99996, 0.99999, 1000)
    negatives = np.concatenate([rng.uniform(0.99990, 0.99994, 1000), rng.uniform(0, 1e-3, 100_000)])
    scores = np.concatenate([positives, negatives]).astype(np.float32)
    truth = np.arange(scores.size) < positives.size
    meter = PixelAUROC()
    meter.update(scores, truth)
    assert roc_auc_score(truth, scores) == 1.0 and meter.compute() == pytest.approx(1.0, abs=1e-6)


def test_binned_pixel_auroc_exact_on_coarse_scores() -> None:
    # Scores on a coarse grid fall into distinct bins, so binned == exact (ties included).
    rng = np.random.default_rng(3)
    s = rng.integers(0, 9, 5000) / 8
    y = rng.random(5000) < s * 0.5
    p = PixelAUROC()
    p.update(s, y)
    assert p.compute() == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_pixel_auroc_corner_cases() -> None:
    p = PixelAUROC()
    assert math.isnan(p.compute())
    p.update(np.array([0.2, 0.3]), np.array([0, 0]))
    assert math.isnan(p.compute())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        p.update(np.array([1.5]), np.array([1]))


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="shapes"):
        dice_score(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="class ids"):
        segmentation_metrics(np.full((1, 2, 2), 5), np.zeros((1, 2, 2), dtype=int), num_classes=2)
    with pytest.raises(ValueError, match="integer class-id map"):
        segmentation_metrics(np.zeros((1, 2, 2)), np.zeros((1, 2, 2), dtype=int), num_classes=2)


def test_pixel_auroc_accepts_negative_zero() -> None:
    meter = PixelAUROC()
    meter.update(np.array([-0.0, 0.2, 0.9, 0.1], dtype=np.float32), np.array([0, 0, 1, 1]))
    assert meter.compute() == pytest.approx(roc_auc_score([0, 0, 1, 1], [0.0, 0.2, 0.9, 0.1]))
