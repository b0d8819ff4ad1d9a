"""End-to-end evaluation of an inspection line (router, then each surface's detector).

Paper 002 reports its router and its detectors apart, never the line a part actually goes
through. Here every labelled test image is put through the whole line and sorted into one of
three rows by what it truly is, ``seen_good`` / ``seen_defective`` (a surface the router was
trained on, OK or NG) or ``unseen`` (any other surface), and one of three columns by the line's
verdict, ``ok`` / ``defect`` / ``unknown``. From that confusion matrix:

* ``routing_accuracy``: seen images the router names as their own surface (not flagged unseen;
  a seen surface without a detector in the line is still routed right, then judged unknown);
* ``detection_rate``: seen defective images called defect; ``escape_rate``: called ok;
* ``false_alarm_rate``: seen good images not called ok (defect or unknown: a person looks at
  them either way); ``false_defect_rate``: called defect;
* ``unseen_alert_rate``: unseen images called unknown; ``alert_auroc``: the router's unseen score
  separating unseen from seen images (NaN when one of them is absent).

``defectkit line eval`` and the ``dagm-mix/line`` benchmark share :func:`cascade_figures`; the
benchmark's unseen row is every image of its unseen surfaces, ``line eval --split test`` only
their test images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from defectkit import __version__
from defectkit.data.io import ImageReadError, error_reason, read_image
from defectkit.data.sample import Sample
from defectkit.files import write_atomic
from defectkit.metrics import auroc

if TYPE_CHECKING:
    from defectkit.inference.line import Line

VERDICTS = ("ok", "defect", "unknown")
ROWS = ("seen_good", "seen_defective", "unseen")


def cascade_figures(rows: np.ndarray, verdicts: Sequence[str], routed_right: np.ndarray,
                    unseen_scores: np.ndarray) -> dict[str, Any]:  # fmt: skip
    """The end-to-end figures from each test image's row (0 seen good, 1 seen defective, 2 unseen)
    and verdict."""
    verdict = np.asarray(verdicts)
    confusion = [[int(((rows == r) & (verdict == v)).sum()) for v in VERDICTS] for r in range(3)]

    def share(row: int, *wanted: str) -> float:
        members = rows == row
        return float(np.isin(verdict[members], wanted).mean()) if members.any() else float("nan")

    seen = rows < 2
    unseen = (rows == 2).astype(int)
    return {
        "routing_accuracy": float(routed_right[seen].mean()) if seen.any() else float("nan"),
        "detection_rate": share(1, "defect"),
        "escape_rate": share(1, "ok"),
        "false_alarm_rate": share(0, "defect", "unknown"),
        "false_defect_rate": share(0, "defect"),
        "unseen_alert_rate": share(2, "unknown"),
        "alert_auroc": auroc(unseen, unseen_scores),  # NaN without both seen and unseen images
        "confusion": confusion,
    }


@dataclass
class LineEvaluation:
    """:func:`cascade_figures` of the images the line judged, and the files it could not."""

    metrics: dict[str, Any]
    n_images: int
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def evaluate_line(
    line: Line,
    samples: Sequence[Sample],
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> LineEvaluation:
    """Put every sample through ``line`` and score the verdicts against what each image is.

    A sample needs its ``surface``; one of a seen surface also needs its OK/NG ``label`` (an
    unseen one is an alert whatever its label). A sample without them is an error naming it;
    a file that cannot be read is recorded in ``failures`` and the rest go on.
    """
    seen = set(line.router.seen)
    for sample in samples:
        if sample.surface is None:
            raise ValueError(f"{sample.path}: no surface; line eval needs each image's surface")
        if sample.surface in seen and sample.label is None:
            raise ValueError(f"{sample.path}: no OK/NG label on seen surface {sample.surface}")
    given = sorted({str(s.surface) for s in samples})
    folded = {name.casefold() for name in seen}
    if given and not seen.intersection(given) and any(name.casefold() in folded for name in given):
        # Every image would count as unseen, and the report would read as alerts missed. (Data of
        # unseen surfaces alone is a fair test of the alert; names that differ in case are not.)
        shown = ", ".join(given[:10]) + (", ..." if len(given) > 10 else "")
        raise ValueError(
            f"none of the images' surfaces ({shown}) is one the router was trained on "
            f"({', '.join(sorted(seen))}); names are compared exactly, letter case included"
        )
    rows: list[int] = []
    verdicts: list[str] = []
    routed_right: list[bool] = []
    unseen_scores: list[float] = []
    failures: list[tuple[str, str]] = []
    if progress is not None:
        progress(0, len(samples))
    for start in range(0, len(samples), batch_size):
        chunk: list[tuple[Sample, np.ndarray]] = []
        for sample in samples[start : start + batch_size]:
            try:
                chunk.append((sample, read_image(sample.path)))
            except (ImageReadError, ValueError) as error:
                failures.append((sample.path, error_reason(error, sample.path)))
        judged = line.inspect_batch([image for _, image in chunk], [s.path for s, _ in chunk])
        for (sample, _), (inspection, _) in zip(chunk, judged, strict=True):
            unseen = sample.surface not in seen
            rows.append(2 if unseen else int(bool(sample.label)))
            verdicts.append(inspection.verdict)
            routed_right.append(not unseen and inspection.surface == sample.surface)
            score = inspection.unseen_score
            unseen_scores.append(float("nan") if score is None else float(score))
        if progress is not None:
            progress(min(start + batch_size, len(samples)), len(samples))
    if not rows:
        raise ValueError("no image could be read; nothing to evaluate")
    figures = cascade_figures(np.asarray(rows), verdicts, np.asarray(routed_right), np.asarray(unseen_scores))
    return LineEvaluation(figures, len(rows), failures)


def write_line_report(report: LineEvaluation, folder: Path, title: str, **context: Any) -> list[Path]:
    """``metrics.json`` (the figures, the confusion matrix with its row and column names, the
    failures and ``context``; NaN as null) and ``confusion.png`` under ``folder``."""
    from defectkit.evaluation.evaluate import dump_json
    from defectkit.evaluation.plots import confusion_png

    folder.mkdir(parents=True, exist_ok=True)
    counts = report.metrics["confusion"]
    payload = {
        **report.metrics,
        "confusion": {"rows": list(ROWS), "columns": list(VERDICTS), "counts": counts},
        "n_images": report.n_images,
        **context,
        "failures": [{"image": path, "reason": reason} for path, reason in report.failures],
        "defectkit_version": __version__,
    }
    return [
        write_atomic(folder / "metrics.json", dump_json(payload)),
        write_atomic(folder / "confusion.png", confusion_png(counts, ROWS, VERDICTS, title)),
    ]
