"""Detection metrics: COCO mAP@[.5:.95] and mAP@.5 with faster-coco-eval.

Conventions:

- Inputs are per image, in the order of the images: predictions
  ``{"boxes": Nx4 xyxy pixels, "scores": N, "labels": N}`` and targets
  ``{"boxes": Mx4, "labels": M}`` (torchmetrics' layout; ``box_classes`` is
  accepted for ``labels`` as in `defectkit.data.sample.Sample`). Class ids are
  1..K (0 is never a defect class).
- The numbers are COCO's own (faster-coco-eval, a drop-in for pycocotools):
  101-point interpolated precision, area range "all", at most
  ``max_detections`` (COCO: 100) detections per image, IoU thresholds
  .50:.05:.95 unless ``iou_thresholds`` names others. ``map`` averages over IoU
  thresholds and over classes that have ground truth; ``map50`` is the same at
  IoU .5 (what NEU-DET papers quote; ``nan`` if .5 is not among the thresholds);
  ``map_at_iou`` gives the class mean at each threshold, which tells boxes in the
  right place but of the wrong extent (AP high at .3, low at .5) from misses.
- A class without ground-truth boxes has no AP: ``nan`` in ``per_class_ap50``
  and left out of the means (as COCO does). No ground truth at all -> ``nan``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from defectkit.metrics._utils import NAN, to_numpy

__all__ = ["detection_map"]

_log = logging.getLogger(__name__)


def _get(d: Mapping[str, Any], *keys: str) -> np.ndarray | None:
    for k in keys:
        if k in d and d[k] is not None:
            return to_numpy(d[k])
    return None


def _boxes_labels(d: Mapping[str, Any], i: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    boxes = _get(d, "boxes")
    labels = _get(d, "labels", "box_classes")
    if boxes is None or labels is None:
        raise ValueError(f"{what} {i}: needs 'boxes' and 'labels' (or 'box_classes')")
    boxes = boxes.astype(np.float64).reshape(-1, 4)
    labels = labels.astype(np.int64).reshape(-1)
    if boxes.shape[0] != labels.shape[0]:
        raise ValueError(f"{what} {i}: {boxes.shape[0]} boxes but {labels.shape[0]} labels")
    if labels.size and labels.min() < 1:
        raise ValueError(f"{what} {i}: class ids must be >= 1 (0 is background)")
    return boxes, labels


def _xywh(b: np.ndarray) -> list[float]:
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def detection_map(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    class_names: Sequence[str] | None = None,
    max_detections: int = 100,
    iou_thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """COCO box mAP. Returns ``{"map", "map50", "map_at_iou", "per_class_ap50", "per_class_ap"}``.

    ``per_class_*`` are keyed by ``class_names[k - 1]`` for class id k when names
    are given (ids then range over 1..len(class_names)), else by ``str(k)`` for
    every id seen in targets or predictions.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} prediction entries for {len(targets)} images")
    images: list[dict[str, Any]] = []
    gt_anns: list[dict[str, Any]] = []
    dt_anns: list[dict[str, Any]] = []
    seen_ids: set[int] = set()
    for i, (pred, tgt) in enumerate(zip(predictions, targets, strict=True)):
        image_id = i + 1
        images.append({"id": image_id, "width": 0, "height": 0})
        t_boxes, t_labels = _boxes_labels(tgt, i, "target")
        for b, c in zip(t_boxes, t_labels, strict=True):
            xywh = _xywh(b)
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": image_id,
                    "category_id": int(c),
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": 0,
                }
            )
        p_boxes, p_labels = _boxes_labels(pred, i, "prediction")
        p_scores = _get(pred, "scores")
        if p_scores is None:
            raise ValueError(f"prediction {i}: needs 'scores'")
        p_scores = p_scores.astype(np.float64).reshape(-1)
        if p_scores.shape[0] != p_boxes.shape[0]:
            raise ValueError(f"prediction {i}: {p_boxes.shape[0]} boxes but {p_scores.shape[0]} scores")
        for b, c, s in zip(p_boxes, p_labels, p_scores, strict=True):
            dt_anns.append({"image_id": image_id, "category_id": int(c), "bbox": _xywh(b), "score": float(s)})
        seen_ids.update(int(c) for c in t_labels)
        seen_ids.update(int(c) for c in p_labels)

    if class_names is not None:
        cat_ids = list(range(1, len(class_names) + 1))
        unknown = sorted(seen_ids - set(cat_ids))
        if unknown:
            raise ValueError(f"class ids {unknown} are outside 1..{len(class_names)} (class_names)")
        names = [str(n) for n in class_names]
    else:
        cat_ids = sorted(seen_ids)
        names = [str(c) for c in cat_ids]

    if not gt_anns:
        nans = dict.fromkeys(names, NAN)
        return {"map": NAN, "map50": NAN, "per_class_ap50": nans, "per_class_ap": dict(nans)}

    gt = COCO(
        {
            "images": images,
            "annotations": gt_anns,
            "categories": [{"id": c, "name": n} for c, n in zip(cat_ids, names, strict=True)],
        },
        print_function=_log.debug,
    )
    dt = gt.loadRes(dt_anns)
    ev = COCOeval_faster(gt, dt, iouType="bbox", print_function=_log.debug)
    ev.params.maxDets = [1, 10, max_detections]
    if iou_thresholds is not None:
        if not iou_thresholds or any(not 0.0 < t < 1.0 for t in iou_thresholds):
            raise ValueError(f"iou_thresholds={list(iou_thresholds)}: give one or more values in (0, 1)")
        ev.params.iouThrs = np.sort(np.asarray(iou_thresholds, dtype=np.float64))
    ev.evaluate()
    ev.accumulate()
    # precision: [IoU thresholds T, recall points R, classes K, area ranges A, maxDets M];
    # -1 marks "no ground truth" (COCO's convention), excluded from every mean.
    precision = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]
    eval_cat_ids = list(ev.params.catIds)

    def mean_valid(p: np.ndarray) -> float:
        v = p[p > -1]
        return float(v.mean()) if v.size else NAN

    thresholds = [float(t) for t in ev.params.iouThrs]
    at_half = next((i for i, t in enumerate(thresholds) if np.isclose(t, 0.5)), None)
    per_class_ap50: dict[str, float] = {}
    per_class_ap: dict[str, float] = {}
    for c, name in zip(cat_ids, names, strict=True):
        k = eval_cat_ids.index(c)
        per_class_ap50[name] = NAN if at_half is None else mean_valid(precision[at_half, :, k])
        per_class_ap[name] = mean_valid(precision[:, :, k])
    return {
        "map": mean_valid(precision),
        "map50": NAN if at_half is None else mean_valid(precision[at_half]),
        "map_at_iou": {round(t, 2): mean_valid(precision[i]) for i, t in enumerate(thresholds)},
        "per_class_ap50": per_class_ap50,
        "per_class_ap": per_class_ap,
    }
