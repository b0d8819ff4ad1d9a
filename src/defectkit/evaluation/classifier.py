"""Evaluating a defect-type classifier (a saved model with a reference database, ``scl_arcface``).

Each image with exactly one known defect class is scored; its truth is the dataset's class name,
its call the best class of the model (whose names may include classes enrolled after training),
or ``unknown`` when even the best similarity is below the model's stored threshold. Metrics:
accuracy, per-class accuracy, macro F1 and confusion matrix over the model's classes (an
``unknown`` call counts as wrong), the share of ``unknown`` calls, and the accuracy among the
rest. ``worst.png`` shows the misclassified images and the correct calls made with the least
similarity, each beside its Grad-CAM map (why the model chose that class).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectkit.data.io import ImageReadError, error_reason, load_sample
from defectkit.data.sample import DatasetInfo, Problem, Sample
from defectkit.evaluation.plots import SheetSection, heat_tile, sectioned_sheet
from defectkit.evaluation.scoring import TimedScorer
from defectkit.files import write_atomic
from defectkit.inference.inspector import Inspector, TorchBackend
from defectkit.metrics.classification import classification_metrics

WORST_PER_KIND = 8


@dataclass
class ClassifiedSet:
    """Per image: the path, true class index, called class index, best similarity, verdict."""

    class_names: list[str]
    samples: list[Sample] = field(default_factory=list)
    truth: list[int] = field(default_factory=list)
    called: list[int] = field(default_factory=list)
    similarity: list[float] = field(default_factory=list)
    unknown: list[bool] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    infer_ms: list[float] = field(default_factory=list)


def classify_dataset(
    inspector: Inspector,
    samples: Sequence[Sample],
    info: DatasetInfo,
    progress: Callable[[int, int], None] | None = None,
) -> ClassifiedSet:
    """Score every single-class image; others (and unreadable ones) are recorded as skipped."""
    names = list(inspector.card.class_names)
    result = ClassifiedSet(class_names=names)
    scorer = TimedScorer(inspector, infer_ms=result.infer_ms)
    for index, sample in enumerate(samples):
        if progress is not None:
            progress(index, len(samples))
        if not sample.classes or len(sample.classes) != 1:
            result.skipped.append(Problem(sample.path, "not exactly one known defect class", "warning"))
            continue
        truth = info.safe_class_name(sample.classes[0])
        if truth not in names:
            result.skipped.append(
                Problem(sample.path, f"class {truth!r} is not one the model knows", "warning")
            )
            continue
        try:
            _, scored = scorer(sample)
            inspection, _ = inspector.judge(scored, sample.path)  # a NaN score is refused here
        except (ImageReadError, ValueError, OSError) as error:
            result.skipped.append(Problem(sample.path, error_reason(error, sample.path)))
            continue
        assert scored.class_scores is not None
        result.samples.append(sample)
        result.truth.append(names.index(truth))
        result.called.append(int(np.argmax(scored.class_scores)))
        result.similarity.append(float(scored.score))
        result.unknown.append(inspection.verdict == "unknown")
    if progress is not None:
        progress(len(samples), len(samples))
    return result


def classifier_metrics(classified: ClassifiedSet) -> dict[str, Any]:
    names = classified.class_names
    if not classified.truth:
        raise ValueError("no image with exactly one known class of the model could be scored")
    truth = np.asarray(classified.truth) + 1
    unknown = np.asarray(classified.unknown, dtype=bool)
    called = np.where(unknown, 0, np.asarray(classified.called) + 1)  # 0: unknown, never right
    metrics = classification_metrics(truth, called, len(names), class_names=names)
    metrics["unknown_share"] = float(unknown.mean())
    # The confusion matrix has the known classes as columns: unknown calls are counted here, so each
    # class's row plus its unknown count is its number of images.
    metrics["unknown_by_class"] = {
        name: int((unknown & (truth == k + 1)).sum()) for k, name in enumerate(names)
    }
    known = ~unknown
    metrics["accuracy_when_called"] = float(np.mean(truth[known] == called[known])) if known.any() else None
    metrics["infer_ms_per_image"] = float(np.mean(classified.infer_ms)) if classified.infer_ms else None
    return metrics


def _explainer(inspector: Inspector) -> Callable[[np.ndarray], np.ndarray | None]:
    """Grad-CAM of the called class, when the model runs in PyTorch here (not ONNX)."""
    if not isinstance(inspector.backend, TorchBackend):
        return lambda image: None
    from defectkit.inference.explain import explain_class

    model = inspector.backend.graph.model
    return lambda image: explain_class(model, inspector.card, image)


def worst_sections(classified: ClassifiedSet, inspector: Inspector) -> list[SheetSection]:
    """Misclassified images (least similar first) and the least similar correct calls."""
    names = classified.class_names
    similarity = np.asarray(classified.similarity)
    right = (np.asarray(classified.truth) == np.asarray(classified.called)) & ~np.asarray(classified.unknown)
    order = np.argsort(similarity, kind="stable")
    explain = _explainer(inspector)
    sections = []
    for title, picks in (
        ("misclassified or unknown (least similar first)", [i for i in order if not right[i]]),
        ("correct calls with the least similarity", [i for i in order if right[i]]),
    ):
        tiles: list[Sample] = []
        captions: list[str] = []
        for index in picks[:WORST_PER_KIND]:
            loaded = load_sample(classified.samples[index])
            image = np.asarray(loaded.image)
            call = "unknown" if classified.unknown[index] else names[classified.called[index]]
            tiles.append(loaded)
            captions.append(f"{names[classified.truth[index]]} -> {call} {similarity[index]:.2f}")
            heatmap = explain(image)
            if heatmap is not None:
                tiles.append(Sample(path=loaded.path, image=heat_tile(image, heatmap)))
                captions.append(f"Grad-CAM: {names[classified.called[index]]}")
        sections.append(SheetSection(title, tiles, captions))
    return sections


def write_classifier_report(classified: ClassifiedSet, inspector: Inspector, out: Path) -> dict[str, Path]:
    """scores.csv and worst.png (with Grad-CAM) of a classifier's evaluation."""
    names = classified.class_names
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "truth", "called", "similarity", "verdict"])
    for sample, truth, called, similarity, unknown in zip(
        classified.samples,
        classified.truth,
        classified.called,
        classified.similarity,
        classified.unknown,
        strict=True,
    ):
        verdict = "unknown" if unknown else "defect"
        writer.writerow([sample.path, names[truth], names[called], f"{similarity:.6f}", verdict])
    files = {"scores.csv": write_atomic(out / "scores.csv", buffer.getvalue())}
    picture = io.BytesIO()
    sectioned_sheet(worst_sections(classified, inspector)).save(picture, format="PNG")
    files["worst.png"] = write_atomic(out / "worst.png", picture.getvalue())
    return files


def has_references(model_dir: str | Path) -> bool:
    from defectkit.inference.saved_model import REFERENCES_NAME

    return (Path(model_dir) / REFERENCES_NAME).is_file()
