"""``data check``: index a dataset, decode every file, and report counts and every problem found.

The check never stops at the first bad file: each problem is one line naming the file and the
reason, and the report says whether any was an error (``data check`` then exits with status 1).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from defectkit.data.formats import read_dataset
from defectkit.data.io import ImageReadError, load_sample
from defectkit.data.masks import array_hash, content_hash
from defectkit.data.sample import DatasetInfo, Problem, Sample

# Boxes may touch the far edge (pixel-edge coordinates); allow half a pixel for rounding.
BOX_TOLERANCE_PX = 0.5


@dataclass
class SampleReport:
    size: tuple[int, int] | None = None  # width, height
    sha1: str | None = None
    mask_sha1: str | None = None
    problems: list[Problem] = field(default_factory=list)


@dataclass
class CheckReport:
    info: DatasetInfo
    n_images: int
    labels: Counter[str]
    classes: Counter[str]
    surfaces: Counter[str]
    boxes: Counter[str]
    parts: int
    sizes: Counter[tuple[int, int]]
    label_levels: dict[str, int]
    duplicates: list[list[str]]
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def check_sample(sample: Sample, num_classes: int = 0) -> SampleReport:
    """Decode the image and mask of ``sample`` and check its annotations against the pixels."""
    report = SampleReport()
    try:
        report.sha1 = content_hash(sample.path)
        loaded = load_sample(sample)
    except OSError as error:
        report.problems.append(Problem(sample.path, f"unreadable file ({error.strerror or error})"))
        return report
    except ImageReadError as error:
        report.problems.append(Problem(error.path, error.reason))
        return report
    except ValueError as error:  # an annotation that does not fit its image (an RLE run past its end)
        report.problems.append(Problem(sample.path, str(error)))
        return report
    assert loaded.image is not None
    height, width = np.asarray(loaded.image).shape[:2]
    report.size = (width, height)
    if sample.boxes is not None:
        for box in np.asarray(sample.boxes).reshape(-1, 4):
            x0, y0, x1, y1 = (float(v) for v in box)
            inside = -BOX_TOLERANCE_PX <= x0 < x1 <= width + BOX_TOLERANCE_PX
            inside &= -BOX_TOLERANCE_PX <= y0 < y1 <= height + BOX_TOLERANCE_PX
            if not inside:
                report.problems.append(
                    Problem(
                        sample.path,
                        f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) outside the {width}x{height} image",
                    )
                )
    if loaded.mask is not None:
        report.mask_sha1 = array_hash(np.asarray(loaded.mask))
    if loaded.mask is not None and sample.label == 0 and np.any(loaded.mask):
        report.problems.append(Problem(sample.path, "labelled good but its mask marks defect pixels"))
    if num_classes and loaded.mask is not None and np.asarray(loaded.mask).ndim == 2:
        top = int(np.asarray(loaded.mask).max())
        if top > num_classes:
            report.problems.append(
                Problem(sample.path, f"mask holds class id {top}, dataset has {num_classes}")
            )
    return report


def _class_key(sample: Sample, info: DatasetInfo) -> str:
    if sample.label == 0:
        return "good"
    if sample.classes:
        return "+".join(info.safe_class_name(c) for c in sample.classes)
    return "defect (type unknown)" if sample.label == 1 else "unlabelled"


def check_dataset(
    root: str | Path,
    format: str | None = None,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Index ``root`` (format auto-detected unless given), decode everything, collect problems."""
    dataset = read_dataset(root, format)
    samples, info = dataset.samples, dataset.info
    problems: list[Problem] = list(dataset.problems)
    for sample in samples:
        ids = [
            *(sample.classes or []),
            *np.asarray(sample.box_classes if sample.box_classes is not None else []),
        ]
        undefined = sorted({int(c) for c in ids if not 1 <= int(c) <= info.num_classes})
        if undefined:
            problems.append(Problem(sample.path, f"class ids {undefined} not defined by the dataset"))

    reports: list[SampleReport] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checks = pool.map(lambda s: check_sample(s, info.num_classes), samples)
        for done, report in enumerate(checks, start=1):
            reports.append(report)
            if progress is not None:
                progress(done, len(samples))
    for report in reports:
        problems.extend(report.problems)

    by_hash: dict[str, list[tuple[Sample, SampleReport]]] = defaultdict(list)
    for sample, report in zip(samples, reports, strict=True):
        if report.sha1:
            by_hash[report.sha1].append((sample, report))
    duplicates: list[list[str]] = []
    for group in by_hash.values():
        if len(group) < 2:
            continue
        duplicates.append([s.path for s, _ in group])
        keys = {_class_key(s, info) for s, _ in group}
        names = ", ".join(s.path for s, _ in group[1:])
        first = group[0][0].path
        if len(keys) > 1:
            problems.append(
                Problem(first, f"duplicate images across classes ({' / '.join(sorted(keys))}): {names}")
            )
        else:
            masks_differ = len({r.mask_sha1 for _, r in group if r.mask_sha1}) > 1
            note = " (their masks differ)" if masks_differ else ""
            problems.append(Problem(first, f"duplicate image (same bytes) of: {names}{note}", "warning"))

    classes: Counter[str] = Counter()
    for sample in samples:
        for class_id in sample.classes or []:
            classes[info.safe_class_name(class_id)] += 1
    for position, name in enumerate(info.class_names, start=1):
        if classes[name] == 0 and not any(
            s.box_classes is not None and position in np.asarray(s.box_classes) for s in samples
        ):
            problems.append(Problem(f"{info.root} [{name}]", "empty class (no image of it)"))

    boxes: Counter[str] = Counter()
    for sample in samples:
        if sample.box_classes is not None:
            boxes.update(info.safe_class_name(int(c)) for c in np.asarray(sample.box_classes).reshape(-1))
    if not samples:
        problems.append(Problem(str(info.root), "no images: the dataset lists none"))
    label_names = {0: "good", 1: "defective", None: "unknown"}
    levels = {
        "label": sum(s.label is not None for s in samples),
        "classes": sum(s.classes is not None for s in samples),
        "mask": sum(s.has_mask for s in samples),
        "boxes": sum(s.has_boxes for s in samples),
        "surface": sum(s.surface is not None for s in samples),
        "part": sum(s.part is not None for s in samples),
    }
    return CheckReport(
        info=info,
        n_images=len(samples),
        labels=Counter(label_names[s.label] for s in samples),
        classes=classes,
        surfaces=Counter(s.surface or "unknown" for s in samples),
        boxes=boxes,
        parts=len({s.part for s in samples if s.part is not None}),
        sizes=Counter(r.size for r in reports if r.size is not None),
        label_levels={k: v for k, v in levels.items() if v},
        duplicates=duplicates,
        problems=problems,
    )
