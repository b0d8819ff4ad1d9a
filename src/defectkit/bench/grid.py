"""What the training-grid protocols share (``tlu/...``, ``aux/...``): one cell trains a model on a
fold's training part and scores its test images with :func:`score_multilabel`; cells pool into
one summary, each image judged at its own fold's thresholds.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from defectkit.bench.protocols import BenchRequest
from defectkit.bench.results import CellCache
from defectkit.config import RunConfig, config_fingerprint
from defectkit.data.sample import DatasetInfo, Sample
from defectkit.evaluation.multilabel import MultilabelScores, multilabel_summary, score_multilabel
from defectkit.inference.inspector import inference_device, load_inspector
from defectkit.training.data import PreparedData, limit_fraction, prepare_data
from defectkit.training.engine import logged_rows, train

Split = tuple[list[int], list[int] | None, list[int]]  # train, validation (None: a hold-out), test
# Trains (or re-scores) one fold's cell: (its prepared data, its test samples, its work folder).
FoldRun = Callable[[PreparedData, list[Sample], Path], dict[str, Any]]


@dataclass(frozen=True)
class GridDataset:
    name: str
    config: str
    samples: list[Sample]
    info: DatasetInfo


def validation_curve(train_dir: Path) -> list[dict[str, float]]:
    """Per-epoch validation Dice, MLA and loss from the training run's CSV log (Fig. 8)."""
    rows = logged_rows(train_dir, "val/dice", ("epoch", "val/dice", "val/mla", "val/loss"))
    return [{key.removeprefix("val/"): value for key, value in row.items()} for row in rows]


def train_and_score(config: RunConfig, request: BenchRequest, data: PreparedData, test: Sequence[Sample],
          work: Path) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    model_dir = train(config, work, progress=request.progress, data=data)
    assert model_dir is not None
    return score_cell(model_dir, config, request, data, test, work, started, time.perf_counter() - started)


def score_cell(
    model_dir: Path,
    config: RunConfig,
    request: BenchRequest,
    data: PreparedData,
    test: Sequence[Sample],
    train_dir: Path,
    started: float,
    train_s: float,
) -> dict[str, Any]:
    """One cell's record: ``model_dir`` (trained in ``train_dir``, whose log gives the validation
    curve) scored on ``test``; ``started`` is when the cell's work began (``time.perf_counter``)."""
    inspector = load_inspector(model_dir, device=inference_device(config.trainer.accelerator))
    scores = score_multilabel(inspector, test, config.input.channels)
    return {
        "wall_s": time.perf_counter() - started,
        "train_s": train_s,
        "train_images": len(data.train),
        "val_images": len(data.val),
        "threshold": inspector.threshold,
        "class_thresholds": inspector.class_thresholds.tolist(),
        "pixel_threshold": inspector.card.thresholds.pixel,
        "class_names": scores.class_names,
        "paths": scores.paths,
        "probabilities": scores.probabilities,
        "truth": scores.truth,
        "dice": scores.dice,
        "iou": scores.iou,
        "infer_ms": float(np.mean(scores.infer_ms)) if scores.infer_ms else None,
        "skipped": [str(p) for p in scores.skipped],
        "curve": validation_curve(train_dir),
        "mean": list(inspector.card.input.mean),
        "std": list(inspector.card.input.std),
        # A detector's boxes (empty lists for models without a detection head).
        "detections": [compact_detections(found) for found in scores.detections],
        "box_truth": scores.box_truth,
    }


def compact_detections(found: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    """One image's detections for a committed cell: boxes to 0.1 px, scores to 1e-4 (up to 100
    boxes an image at full float precision made a NEU-DET cell 4 MiB; mAP moves by about 1e-3)."""
    return {
        "boxes": [[round(float(v), 1) for v in box] for box in found["boxes"]],
        "scores": [round(float(v), 4) for v in found["scores"]],
        "labels": [int(v) for v in found["labels"]],
    }


def pooled_scores(cells: Sequence[Mapping[str, Any]]) -> MultilabelScores:
    pooled = MultilabelScores(class_names=list(cells[0]["class_names"]))
    for cell in cells:
        pooled.paths += cell["paths"]
        pooled.probabilities += cell["probabilities"]
        pooled.truth += cell["truth"]
        pooled.dice += cell["dice"]
        pooled.iou += cell["iou"]
        pooled.detections += cell.get("detections", [])
        pooled.box_truth += cell.get("box_truth", [])
    return pooled


def prepared_data(
    dataset: GridDataset, config: RunConfig, train: list[int], val: list[int] | None
) -> PreparedData:
    samples = dataset.samples
    if val is None:
        return replace(prepare_data(config, [samples[i] for i in train]), info=dataset.info)
    kept = limit_fraction([samples[i] for i in train], config)
    return PreparedData(dataset.info, kept, [samples[i] for i in val])


def fold_cells(
    cache: CellCache,
    dataset: GridDataset,
    config: RunConfig,
    splits: Sequence[Split],
    prefix: str,
    work_stem: Path,
    run: FoldRun,
) -> list[dict[str, Any]]:
    """One cell per fold: the cached one, else ``run``'s in ``<work_stem>-fold<k>``, cached as soon
    as it is scored.

    A cell's key is ``prefix``, the fold, the fingerprints of the resolved config and of the fold's
    image names (:func:`split_fingerprint`): a changed config or another copy of the data runs
    afresh.
    """
    cells = []
    fingerprint = config_fingerprint(config)
    for fold, split in enumerate(splits):
        key = f"{prefix}fold{fold}/config-{fingerprint}-data-{split_fingerprint(dataset, split)}"
        work = work_stem.with_name(f"{work_stem.name}-fold{fold}")
        cells.append(cache.get_or_compute(key, partial(_fold_run, run, dataset, config, split, work)))
    return cells


def _fold_run(
    run: FoldRun, dataset: GridDataset, config: RunConfig, split: Split, work: Path
) -> dict[str, Any]:
    train_idx, val_idx, test_idx = split
    data = prepared_data(dataset, config, train_idx, val_idx)
    return run(data, [dataset.samples[i] for i in test_idx], work)


def split_fingerprint(dataset: GridDataset, split: tuple[list[int], list[int] | None, list[int]]) -> str:
    """A short hash of which images (by folder and file name) train, validate and test a fold:
    a cell from another copy or subset of the data never stands in for this one."""
    names = [
        sorted(
            f"{Path(dataset.samples[i].path).parent.name}/{Path(dataset.samples[i].path).name}" for i in part
        )
        for part in split
        if part is not None
    ]
    return hashlib.sha1(json.dumps(names).encode("utf-8")).hexdigest()[:10]


def cell_thresholds(cell: Mapping[str, Any]) -> np.ndarray:
    """The class thresholds each of a cell's images was judged at (N x K; cells from before
    per-class thresholds carry one decision threshold)."""
    shape = (len(cell["paths"]), len(cell["class_names"]))
    thresholds = np.asarray(cell.get("class_thresholds", cell["threshold"]), dtype=np.float64)
    return np.broadcast_to(thresholds, shape)


def summarise(cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-image figures pooled over the folds, each image judged at its own fold's thresholds;
    each fold's own summary in ``per_fold``."""
    scores = pooled_scores(cells)
    thresholds = np.concatenate([cell_thresholds(c) for c in cells])
    per_fold = [
        {
            "fold": fold,
            "train_images": cell["train_images"],
            "train_s": cell["train_s"],
            "threshold": cell["threshold"],
            "metrics": {
                k: v
                for k, v in multilabel_summary(pooled_scores([cell]), cell_thresholds(cell)).items()
                if not isinstance(v, dict)
            },
        }
        for fold, cell in enumerate(cells)
    ]
    return {
        "metrics": multilabel_summary(scores, thresholds),
        "scores": scores,
        "cells": list(cells),
        "per_fold": per_fold,
    }


def fold_splits(dataset: GridDataset, fractions: Sequence[float], seed: int) -> list[Split]:
    """KolektorSDD: its 3 folds by commutator (validation a hold-out of each training fold).
    Other data: one grouped split by ``fractions``, (train, test) or (train, validation, test)."""
    from defectkit.bench.ksdd import FOLD_SEED, FOLDS
    from defectkit.data.splits import kfold, split_fractions

    if dataset.name == "ksdd":
        return [(train, None, test) for train, test in kfold(dataset.samples, FOLDS, seed=FOLD_SEED)]
    parts = split_fractions(dataset.samples, fractions, seed=seed)
    return [(parts[0], parts[1], parts[2])] if len(parts) == 3 else [(parts[0], None, parts[1])]
