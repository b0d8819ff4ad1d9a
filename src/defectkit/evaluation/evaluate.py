"""Evaluate a saved model on a labelled dataset: metrics, plots, worst cases, per-image scores.

Two layers, so the benchmark protocols can reuse the core without the CLI or any files:

- :func:`score_dataset` runs an :class:`~defectkit.inference.inspector.Inspector` over index
  samples and keeps only what metrics need (score, label, per-image Dice); heat maps are folded
  into a :class:`~defectkit.metrics.SegmentationMeter` image by image and dropped, so a large test
  set never holds its heat maps in memory. Unreadable images are recorded and skipped.
- :func:`evaluate_scores` turns a :class:`ScoredSet` into DESIGN.md's metric names at a *given*
  decision threshold. Callers pass the threshold stored in the model card: nothing here chooses a
  threshold on the data it reports on (DESIGN.md, "Scores, thresholds, reproducibility").

:func:`evaluate_model` is what ``defectkit eval`` runs: read the dataset, pick the split, score,
and write ``metrics.json``, ``scores.csv``, ``pr_curve.png``, ``score_histogram.png`` and
``worst.png`` (each atomically) to the output folder.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from defectkit import __version__
from defectkit.data.formats import read_dataset
from defectkit.data.io import ImageReadError, error_reason, load_sample, with_box_masks
from defectkit.data.sample import Problem, Sample
from defectkit.evaluation.classifier import (
    classifier_metrics,
    classify_dataset,
    has_references,
    write_classifier_report,
)
from defectkit.evaluation.multilabel import multilabel_summary, per_image_dice, score_multilabel
from defectkit.evaluation.plots import (
    SheetSection,
    dice_iou_boxplot_png,
    heat_tile,
    pr_curve_png,
    score_histogram_png,
    sectioned_sheet,
)
from defectkit.evaluation.scoring import TimedScorer
from defectkit.files import OutputFolderError, report_folder, write_atomic
from defectkit.inference.inspector import Inspector, load_inspector
from defectkit.inference.saved_model import is_report_metrics, utc_timestamp
from defectkit.metrics import SegmentationMeter, dice_score, image_metrics

__all__ = [
    "SPLITS",
    "EvaluationReport",
    "ScoredSet",
    "evaluate_model",
    "evaluate_scores",
    "json_ready",
    "score_dataset",
    "select_split",
    "write_report",
]

SPLITS = ("test", "val", "train", "all")
# Names datasets use for the validation split; ``--split val`` accepts any of them.
_SPLIT_ALIASES = {"val": {"val", "valid", "validation"}}
WORST_PER_KIND = 8

Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------
# small IO helpers (shared with defectkit.bench.results)


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars made plain and NaN / inf made ``None``.

    ``json.dumps`` would write ``NaN``, which is not JSON: other tools (and browsers) reject it.
    An undefined metric (AUROC of a one-class split) is therefore ``null`` on disk.
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Path):
        return str(value)
    return value


def dump_json(value: Any) -> str:
    return json.dumps(json_ready(value), indent=2, allow_nan=False) + "\n"


# --------------------------------------------------------------------------------------------
# scoring


@dataclass
class ScoredSet:
    """What :func:`score_dataset` keeps per image: enough for every metric, no pixels.

    ``labels`` are -1 where the image label is unknown; ``dice`` is NaN where no ground-truth mask
    or no heat map exists. ``segmentation`` holds the accumulated Dice / IoU / pixel-AUROC state
    (``None`` when no image had both a mask and a heat map). ``samples`` are the index samples
    (paths and label references, no pixels) so worst cases can be re-loaded for pictures.
    """

    paths: list[str]
    labels: np.ndarray
    scores: np.ndarray
    dice: np.ndarray
    pixel_threshold: float
    segmentation: SegmentationMeter | None = None
    samples: list[Sample] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    infer_ms: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def infer_ms_per_image(self) -> float:
        """Mean ``Inspector.score`` time per image after one warm-up call (model load excluded)."""
        return float(np.mean(self.infer_ms)) if self.infer_ms else float("nan")


def _binary_truth(mask: np.ndarray | None) -> np.ndarray | None:
    """Any defect class -> True: the inspector's heat map is one "defect anywhere" channel."""
    if mask is None:
        return None
    array = np.asarray(mask)
    return np.asarray(array.any(axis=0) if array.ndim == 3 else array > 0)


def score_dataset(
    inspector: Inspector, samples: Sequence[Sample], progress: Progress | None = None
) -> ScoredSet:
    """Score every sample with ``inspector``; bad images are recorded in ``skipped``, never raised.

    The predicted mask of an image is its full-size heat map ``>= card.thresholds.pixel`` (the
    stored pixel threshold), compared with the sample's ground-truth mask where one is known.
    ``progress(done, total)`` is called after each image.
    """
    pixel = float(inspector.card.thresholds.pixel)
    meter = SegmentationMeter(pixel_threshold=pixel)
    paths: list[str] = []
    labels: list[int] = []
    scores: list[float] = []
    dice: list[float] = []
    kept: list[Sample] = []
    skipped: list[Problem] = []
    scorer = TimedScorer(inspector)
    segmented = 0
    total = len(samples)
    for index, sample in enumerate(samples):
        try:
            loaded, scored = scorer(sample)
            heatmap = inspector.full_size_heatmap(scored)
        except (ImageReadError, ValueError, OSError) as error:
            skipped.append(Problem(sample.path, error_reason(error, sample.path)))
        else:
            truth = _binary_truth(None if loaded.mask is None else np.asarray(loaded.mask))
            value = float("nan")
            if heatmap is not None and truth is not None:
                meter.update([heatmap], [truth])
                value = dice_score(heatmap >= pixel, truth)
                segmented += 1
            paths.append(sample.path)
            labels.append(-1 if sample.label is None else int(sample.label))
            scores.append(scored.score)
            dice.append(value)
            kept.append(sample)
        if progress is not None:
            progress(index + 1, total)
    return ScoredSet(
        paths=paths,
        labels=np.asarray(labels, dtype=np.int64),
        scores=np.asarray(scores, dtype=np.float64),
        dice=np.asarray(dice, dtype=np.float64),
        pixel_threshold=pixel,
        segmentation=meter if segmented else None,
        samples=kept,
        skipped=skipped,
        infer_ms=scorer.infer_ms,
    )


def evaluate_scores(scored: ScoredSet, threshold: float) -> dict[str, Any]:
    """DESIGN.md's metrics for ``scored`` with FP / FN counted at ``threshold``.

    Pass the decision threshold stored in the model (``inspector.threshold``); this function never
    chooses one. Image-level metrics use the images whose label is known. Keys: ``ap``, ``auroc``,
    ``fp``, ``fn``, ``false_calls``, ``fp_at_full_recall``, ``threshold``, ``precision``,
    ``recall``, ``f1``, ``n_images``, ``n_pos``, ``n_neg``; with masks also ``dice``, ``dice_pos``,
    ``iou``, ``iou_pos``, ``pixel_auroc``, ``pixel_threshold``, ``n_masks``; then
    ``n_unlabelled``, ``n_skipped`` and ``infer_ms_per_image``. Undefined values are NaN.
    """
    if not math.isfinite(threshold):
        raise ValueError(f"decision threshold must be a finite number, got {threshold}")
    known = scored.labels >= 0
    image = image_metrics(scored.labels[known], scored.scores[known], threshold)
    out: dict[str, Any] = {
        key: image[key]
        for key in (
            "ap",
            "auroc",
            "fp",
            "fn",
            "false_calls",
            "fp_at_full_recall",
            "threshold",
            "precision",
            "recall",
            "f1",
            "n_images",
            "n_pos",
            "n_neg",
        )
    }
    if scored.segmentation is not None:
        seg = scored.segmentation.compute()
        out.update(
            {
                "dice": seg["dice"],
                "dice_pos": seg["dice_pos"],
                "iou": seg["iou"],
                "iou_pos": seg["iou_pos"],
                "pixel_auroc": seg.get("pixel_auroc", float("nan")),
                "pixel_threshold": scored.pixel_threshold,
                "n_masks": seg["n_images"],
            }
        )
    out["n_unlabelled"] = int((~known).sum())
    out["n_skipped"] = len(scored.skipped)
    out["infer_ms_per_image"] = scored.infer_ms_per_image
    return out


# --------------------------------------------------------------------------------------------
# splits and reports


def select_split(samples: Sequence[Sample], split: str) -> tuple[list[Sample], str]:
    """The samples of ``split`` and a sentence saying how they were chosen.

    Formats with a published train / test split (DAGM, MVTec, the synthetic generator) put it in
    ``meta["split"]``; ``split`` picks those. A dataset without splits (KolektorSDD, NEU, a user's
    folder) is evaluated whole: its benchmark protocols use cross-validation folds, which
    :mod:`defectkit.bench` handles itself. ``"all"`` always takes every image.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if split == "all":
        return list(samples), f"all {len(samples)} images"
    present = sorted({str(s.meta["split"]) for s in samples if "split" in s.meta})
    if not present:
        return list(samples), f"the dataset defines no splits: all {len(samples)} images evaluated"
    names = _SPLIT_ALIASES.get(split, {split})
    chosen = [s for s in samples if str(s.meta.get("split", "")).lower() in names]
    if not chosen:
        raise ValueError(f"no images in split {split!r}; the dataset's splits are: {', '.join(present)}")
    return chosen, f"split {split!r}: {len(chosen)} of {len(samples)} images"


def _worst_sections(scored: ScoredSet, inspector: Inspector, threshold: float) -> list[SheetSection]:
    """Worst false positives (good, highest scores) and false negatives (defective, lowest)."""
    good = np.flatnonzero(scored.labels == 0)
    bad = np.flatnonzero(scored.labels == 1)
    # Stable sorts on (score, path order): the same data always picks the same images.
    worst_fp = good[np.argsort(-scored.scores[good], kind="stable")][:WORST_PER_KIND]
    worst_fn = bad[np.argsort(scored.scores[bad], kind="stable")][:WORST_PER_KIND]
    sections = []
    for title, picks in (
        (f"good images with the highest scores (false positive when >= {threshold:.3g})", worst_fp),
        (f"defective images with the lowest scores (false negative when < {threshold:.3g})", worst_fn),
    ):
        tiles: list[Sample] = []
        captions: list[str] = []
        for index in picks:
            try:
                loaded = load_sample(scored.samples[int(index)])
            except (ImageReadError, ValueError, OSError):
                continue  # readable a moment ago; a file changing under us is not worth a crash
            image = np.asarray(loaded.image)
            # Only these few heat maps are recomputed; the scoring pass kept none.
            heatmap = inspector.full_size_heatmap(inspector.score(image))
            # Stems repeat across parts and surfaces (KolektorSDD's Part0.jpg in every kosNN, DAGM's
            # 0001.PNG in every class): name the part, else the surface, too.
            stem = Path(loaded.path).stem
            group = loaded.part or loaded.surface
            name = f"{group}/{stem}" if group else stem
            tiles.append(loaded)
            captions.append(f"{scored.scores[index]:.3f} {name}")
            if heatmap is not None:
                tiles.append(Sample(path=loaded.path, image=heat_tile(image, heatmap)))
                captions.append("heat map")
        sections.append(SheetSection(title, tiles, captions))
    return sections


def _scores_csv(scored: ScoredSet, threshold: float) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "score", "verdict", "dice"])
    for path, label, score, dice in zip(scored.paths, scored.labels, scored.scores, scored.dice, strict=True):
        writer.writerow(
            [
                path,
                "" if label < 0 else int(label),
                f"{score:.6f}",
                "defect" if score >= threshold else "ok",
                "" if math.isnan(dice) else f"{dice:.4f}",
            ]
        )
    return buffer.getvalue()


def write_report(
    scored: ScoredSet,
    metrics: dict[str, Any],
    inspector: Inspector,
    out: str | Path,
    context: dict[str, Any] | None = None,
    written: dict[str, Path] | None = None,
    skipped: Sequence[Problem] | None = None,
) -> dict[str, Path]:
    """Write metrics.json, scores.csv, pr_curve.png, score_histogram.png and worst.png to ``out``.

    ``context`` (model, data, split, ...) goes into metrics.json beside the metrics, with the files
    ``written`` to ``out`` before and the ``skipped`` images (default: ``scored.skipped``). Returns
    the written files by name.
    """
    out = Path(out)
    threshold = float(metrics["threshold"])
    known = scored.labels >= 0
    labels, scores = scored.labels[known], scored.scores[known]
    title = inspector.name
    files = {
        **(written or {}),
        "scores.csv": write_atomic(out / "scores.csv", _scores_csv(scored, threshold)),
        "pr_curve.png": write_atomic(out / "pr_curve.png", pr_curve_png(labels, scores, threshold, title)),
        "score_histogram.png": write_atomic(
            out / "score_histogram.png", score_histogram_png(labels, scores, threshold, title)
        ),
    }
    sheet = sectioned_sheet(_worst_sections(scored, inspector, threshold))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    files["worst.png"] = write_atomic(out / "worst.png", buffer.getvalue())
    return write_metrics_json(
        out, metrics, inspector, files, scored.skipped if skipped is None else skipped, context
    )


# Every file an ``eval`` or ``line eval`` report may write.
REPORT_FILES = (
    "metrics.json",
    "scores.csv",
    "pr_curve.png",
    "score_histogram.png",
    "worst.png",
    "dice_iou_box.png",
    "confusion.png",
)


@contextlib.contextmanager
def report_output(folder: Path) -> Iterator[Path]:
    """:func:`~defectkit.files.report_folder` for an ``eval`` or ``line eval`` report, refusing
    (:class:`OutputFolderError`) a folder where the report would replace files that no report
    wrote: a user's own ``metrics.json`` or ``confusion.png``. A folder with an earlier report (its
    ``metrics.json`` says so) is written over, as a rerun expects."""
    if folder.is_dir() and not is_report_metrics(folder / "metrics.json"):
        clashes = [name for name in REPORT_FILES if (folder / name).exists()]
        if clashes:
            raise OutputFolderError(
                f"{folder}: the report would replace {', '.join(clashes)}, which no defectkit report "
                "wrote; write the report to another folder (--out), or move those files"
            )
    with report_folder(folder) as target:
        yield target


def default_report_folder(base: Path, data: str | Path, split: str) -> Path:
    """``BASE/eval-DATA-SPLIT``: a model judged on two datasets keeps both reports. DATA is the
    dataset folder's name as given (links not followed), or for a manifest file its folder's
    name and its stem (``synth-manifest``)."""
    given = Path(os.path.abspath(Path(data).expanduser()))
    name = f"{given.parent.name}-{given.stem}" if given.is_file() else given.name
    safe = re.sub(r"[^\w.-]+", "_", name) or "data"
    return base / f"eval-{safe}-{split}"


def write_metrics_json(
    out: Path,
    metrics: dict[str, Any],
    inspector: Inspector,
    files: dict[str, Path],
    skipped: Sequence[Problem],
    context: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """``metrics.json``: the metrics, the stored thresholds, skipped images and the other files."""
    payload = {
        **(context or {}),
        "model": (context or {}).get("model", inspector.name),
        "thresholds": inspector.card.thresholds.model_dump(mode="json"),
        "metrics": metrics,
        "skipped": [{"path": p.path, "reason": p.reason, "severity": p.severity} for p in skipped],
        "files": sorted([*files, "metrics.json"]),
        "defectkit_version": __version__,
        "created": utc_timestamp(),
    }
    return {**files, "metrics.json": write_atomic(out / "metrics.json", dump_json(payload))}


@dataclass
class EvaluationReport:
    """Result of :func:`evaluate_model`: the metrics, written files, the reader's problems (the
    whole dataset's) and ``skipped``: the evaluated images left out, in part or whole."""

    metrics: dict[str, Any]
    files: dict[str, Path]
    reader_problems: list[Problem]
    split_note: str
    out: Path
    skipped: list[Problem] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        """Every problem met: the reader's, then the skipped images."""
        return [*self.reader_problems, *self.skipped]

    @property
    def unusable(self) -> int:
        """Evaluated images that could not be used at all (unreadable): bad data."""
        return sum(problem.severity == "error" for problem in self.skipped)


def evaluate_model(
    model_dir: str | Path,
    data: str | Path,
    format: str | None = None,
    split: str = "test",
    out: str | Path | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    surface: str | None = None,
) -> EvaluationReport:
    """``defectkit eval``: score the ``split`` of the dataset at ``data`` and write the report.

    The model is loaded first so a wrong model path fails before the dataset is indexed. Reader
    problems and unreadable images are returned in ``problems`` (and listed in metrics.json);
    the run fails only when no image at all could be scored. ``out`` defaults to
    ``MODEL_DIR/eval-<data folder name>-<split>`` (:func:`default_report_folder`). ``surface``
    keeps only that surface's images (a per-surface detector is judged on its own surface, as in
    paper 002's two-stage line).
    """
    model_dir = Path(model_dir)
    inspector = load_inspector(model_dir, device=device)
    dataset = read_dataset(data, format)
    samples, note = select_split(dataset.samples, split)
    if surface is not None:
        samples = [s for s in samples if s.surface == surface]
        note += f", surface {surface}"
    if not samples:
        raise ValueError(f"{data}: no images to evaluate")
    if inspector.card.config.get("data", {}).get("masks_from_boxes"):
        samples = with_box_masks(samples)  # judged on the coarse masks it was trained on
    folder = Path(out) if out is not None else default_report_folder(model_dir, data, split)
    with report_output(folder) as target:
        context = {
            "model": str(model_dir),
            "data": str(data),
            "dataset": dataset.info.name,
            "format": dataset.info.format,
            "split": split,
            "split_note": note,
            "surface": surface,
            "reader_problems": [str(p) for p in dataset.problems],
        }
        if has_references(model_dir):
            # A defect-type classifier: accuracy, confusion, unknown calls, Grad-CAM of the worst.
            classified = classify_dataset(inspector, samples, dataset.info, progress)
            metrics = classifier_metrics(classified)
            files = write_classifier_report(classified, inspector, target)
            files = write_metrics_json(target, metrics, inspector, files, classified.skipped, context)
            return EvaluationReport(metrics, files, dataset.problems, note, target, list(classified.skipped))
        scored = score_dataset(inspector, samples, progress)
        skipped = list(scored.skipped)
        if not len(scored):
            first = [*dataset.problems, *skipped][0]
            raise ValueError(f"{data}: none of the {len(samples)} images could be read (first: {first})")
        metrics = evaluate_scores(scored, inspector.threshold)
        written: dict[str, Path] = {}
        if inspector.card.multilabel:
            # Per-class figures of a multi-label model (paper 001): MLA, per-class AUROC, Dice, IoU.
            per_class = score_multilabel(inspector, samples, inspector.card.input.channels)
            metrics["multilabel"] = multilabel_summary(per_class, inspector.class_thresholds)
            dice = {inspector.name: per_image_dice(per_class)}
            iou = {inspector.name: per_image_dice(replace(per_class, dice=per_class.iou))}
            written["dice_iou_box.png"] = write_atomic(
                target / "dice_iou_box.png", dice_iou_boxplot_png(dice, iou, inspector.name)
            )
            # Left out of the per-class figures alone (their defect classes are unknown): say so too.
            unreadable = {p.path for p in scored.skipped}
            skipped += [
                Problem(p.path, f"left out of the per-class figures: {p.reason}", p.severity)
                for p in per_class.skipped
                if p.path not in unreadable
            ]
        files = write_report(scored, metrics, inspector, target, context, written, skipped)
        return EvaluationReport(metrics, files, dataset.problems, note, target, skipped)
