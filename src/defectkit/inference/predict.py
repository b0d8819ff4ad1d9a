"""Batch prediction: inspect every image under some paths and write one result per image.

``predict_paths(inspector, paths, out)`` writes, for each image, ``<name>.json`` (the
:class:`~defectkit.inference.inspection.Inspection`), ``<name>.png`` (an overlay for a person to
look at) and optionally ``<name>.heatmap.png`` and ``<name>.mask.png`` (:func:`defect_mask`), then
``summary.csv`` with one row per input file.
A file that cannot be decoded, or whose results cannot be written (a full disk, a name too long),
is recorded as a failure and skipped; the others still get their results (DESIGN.md, "Errors
and bad input"), and ``summary.csv`` is written even when the run breaks off. An output folder
that holds input images is refused; one inside an input folder is left out of the search. No
file that a predict run did not write is replaced or left uninspected (:func:`check_output_folder`).
Every file is written under a temporary name and renamed, so an interrupted run never leaves half a
file.

The CLI (``defectkit predict`` and ``defectkit line run``) calls this; it holds the logic, the
CLI holds the words.
"""

from __future__ import annotations

import csv
import functools
import glob
import hashlib
import io
import itertools
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from defectkit.data.io import (
    ImageReadError,
    error_reason,
    image_files,
    is_image_file,
    printable_path,
    read_image,
)
from defectkit.files import OutputFolderError, writable_folder, write_atomic
from defectkit.inference.image_inspector import ImageInspector
from defectkit.inference.inspection import Inspection
from defectkit.inference.overlay import heatmap_image, png_bytes, render_overlay

SUMMARY_NAME = "summary.csv"
SUMMARY_COLUMNS = (
    "image", "verdict", "score", "threshold", "n_regions", "surface", "unseen_score", "latency_ms",
    "output", "error",
)  # fmt: skip
GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class Failure:
    """An input that produced no result: the file (or pattern) and why, for a one-line report."""

    path: str
    reason: str


@dataclass
class PredictReport:
    out: Path
    results: list[tuple[Path, Inspection]] = field(default_factory=list)  # (JSON written, result)
    failures: list[Failure] = field(default_factory=list)
    summary: Path | None = None
    # Results an earlier run into the same folder listed that this run did not write again: they
    # stay beside the new ones, but this run's summary.csv no longer lists them.
    earlier: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def collect_images(
    paths: Iterable[str | Path], exclude: Path | None = None, excluded: list[Path] | None = None
) -> tuple[list[Path], list[Failure]]:
    """Image files named by ``paths``: files, folders (searched recursively) and glob patterns.

    Patterns are expanded here because a shell passes them through unchanged when they are quoted
    or match nothing. Inside folders and patterns only image suffixes are taken (a README beside
    the images is not an error); a file named explicitly is always tried, so a mistake surfaces.
    Duplicates (the same file reached twice) are inspected once; order is kept. A folder or
    pattern searched from above ``exclude`` (predict's output folder) skips what lies in it, so a
    rerun into a results folder inside the inputs does not inspect the last run's overlays; the
    images so left out are added to ``excluded`` when it is given.
    """
    found: list[Path] = []
    failures: list[Failure] = []
    skipped = None if exclude is None else exclude.resolve()

    def kept(images: list[Path], root: Path) -> list[Path]:
        top = root.resolve()
        if skipped is None or skipped == top or not skipped.is_relative_to(top):
            return images
        inside = {m for m in images if m.resolve().is_relative_to(skipped)}
        if excluded is not None:
            excluded.extend(m for m in images if m in inside)
        return [m for m in images if m not in inside]

    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            images = kept(image_files(path), path)
            if not images:
                failures.append(Failure(printable_path(entry), "no image files in this folder"))
            found.extend(images)
        elif path.is_file():
            found.append(path)
        elif GLOB_CHARACTERS & set(str(entry)):
            matches = sorted(Path(m) for m in glob.glob(str(entry), recursive=True))
            images = [m for m in matches if m.is_file() and is_image_file(m)]
            for folder in (m for m in matches if m.is_dir()):
                images.extend(image_files(folder))
            images = kept(images, _pattern_root(str(entry)))
            if not images:
                failures.append(Failure(printable_path(entry), "no image files match this pattern"))
            found.extend(images)
        else:
            failures.append(Failure(printable_path(entry), "no such file or folder"))
    seen: set[Path] = set()
    unique: list[Path] = []
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique, failures


def _pattern_root(pattern: str) -> Path:
    """The folder a glob pattern searches from: its leading parts without wildcards."""
    parts = list(itertools.takewhile(lambda part: not GLOB_CHARACTERS & set(part), Path(pattern).parts))
    return Path(*parts) if parts else Path(".")


# What an image's results add to its stem: NAME.mask.png for x.png is NAME.png for x.mask.png.
DERIVED_SUFFIXES = (".mask", ".heatmap")


# What one image's result files add to its output name (:func:`result_files`).
RESULT_SUFFIXES = (".heatmap.png", ".mask.png", ".json", ".png")


def is_inspection_json(path: Path) -> bool:
    """Whether ``path`` holds an :class:`Inspection` (a result a predict run wrote)."""
    try:
        Inspection.model_validate_json(path.read_bytes())
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return False
    return True


def is_result_file(path: Path, is_inspection: Callable[[Path], bool] = is_inspection_json) -> bool:
    """Whether ``path`` is a file a predict run writes: ``summary.csv``, an Inspection JSON, or the
    overlay, heat map or mask beside one. Judged by content, not by an earlier summary.csv, which a
    later run into the same folder rewrites. ``is_inspection``: :func:`is_inspection_json`, or a
    cached copy of it when many files share one JSON."""
    if not path.is_file():
        return False
    if path.name == SUMMARY_NAME:
        # Columns were added over versions; every summary predict wrote starts so.
        header = _summary_header(path)
        return header is not None and header[:2] == list(SUMMARY_COLUMNS[:2])
    # x.mask.png is x's mask or the overlay of an image x.mask: either JSON vouches for it.
    return any(
        is_inspection(path.with_name(path.name[: -len(suffix)] + ".json"))
        for suffix in RESULT_SUFFIXES
        if path.name.endswith(suffix)
    )


def _summary_header(path: Path) -> list[str] | None:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle), None)
    except (OSError, ValueError, csv.Error):  # UnicodeDecodeError is a ValueError
        return None


def result_files(name: str, *, overlays: bool, heatmaps: bool, masks: bool) -> list[str]:
    """The file names one image's results take (stem ``name``, from :func:`output_names`)."""
    wanted = {".json": True, ".png": overlays, ".heatmap.png": heatmaps, ".mask.png": masks}
    return [name + suffix for suffix, kept in wanted.items() if kept]


def check_output_folder(
    out: Path, images: Sequence[Path], skipped: Sequence[Path], planned: Iterable[str]
) -> None:
    """Refuse ``out`` (:class:`OutputFolderError`) when the results would replace or hide a user's
    files: it holds input images (an overlay ``NAME.png`` can replace the image itself); it lies
    inside an input folder and holds images ``skipped`` by the search that no predict run wrote
    (they would be left uninspected without a word); or a result file would replace a file that no
    predict run wrote (an annotation ``NAME.json``, a picture ``NAME.png``)."""
    beside = next((image for image in images if _same_folder(image.parent, out)), None)
    if beside is not None:
        raise OutputFolderError(
            f"{out}: holds input images ({beside.name}); write the results to another folder"
        )
    is_inspection = functools.cache(is_inspection_json)  # a rerun meets each JSON up to 4 times
    hidden = [image for image in skipped if not is_result_file(image, is_inspection)]
    if hidden:
        raise OutputFolderError(
            f"{out}: lies inside the input folders and holds {len(hidden)} image(s) no predict run wrote "
            f"(e.g. {hidden[0]}), which the search leaves out; write the results to another folder"
        )
    clashes = [
        name for name in planned if (out / name).exists() and not is_result_file(out / name, is_inspection)
    ]
    if clashes:
        raise OutputFolderError(
            f"{out}: the results would replace {len(clashes)} file(s) that no predict run wrote "
            f"(e.g. {clashes[0]}); write the results to another folder, or move those files"
        )


def _same_folder(folder: Path, other: Path) -> bool:
    """One folder, also where names differ only in case (macOS, Windows) or by a link."""
    try:
        return os.path.samefile(folder, other)
    except OSError:  # one of them does not exist
        return False


def output_names(images: Sequence[Path]) -> list[str]:
    """One file-name stem per image: the image's stem, plus a short path hash where the files of
    two images could share a name (equal stems; or a stem that is another's plus ``.mask`` or
    ``.heatmap``, whose files get the hash).

    Stems are compared case-insensitively (two names that differ only in case are one file on
    some file systems). The hash is of the resolved path, so a rerun gives the same names. A stem
    whose bytes are not UTF-8 is written as its :func:`printable_path` (escapes as ``_``) plus the
    hash, so the files, the JSON and summary.csv name one another alike.
    """
    groups: dict[str, int] = defaultdict(int)
    for image in images:
        groups[image.stem.lower()] += 1
    # x.mask.png's files would meet x.png's (its mask is x.mask.png): renaming x.mask's is enough.
    derived = {image.stem.lower() + suffix for image in images for suffix in DERIVED_SUFFIXES}

    names = []
    for image in images:
        stem = image.stem.lower()
        undecodable = printable_path(image.stem) != image.stem
        if groups[stem] > 1 or stem in derived or stem == Path(SUMMARY_NAME).stem or undecodable:
            digest = hashlib.sha1(os.fsencode(image.resolve())).hexdigest()[:8]
            base = printable_path(image.stem).replace("\\", "_") if undecodable else image.stem
            names.append(f"{base}-{digest}")
        else:
            names.append(image.stem)
    return names


def defect_mask(
    heatmap: np.ndarray | None, pixel_threshold: float, verdict: str, called: Sequence[bool] | None = None
) -> np.ndarray | None:
    """H x W uint8 class-id map (DESIGN.md's mask: 0 background, k = class k; one class: 1) of the
    pixels at or above ``pixel_threshold``, or None for a model without a heat map.

    ``heatmap`` is H x W, or K x H x W per-class maps; where several classes pass, the strongest
    names the pixel. As with regions, only a ``defect`` verdict has defect pixels (an ``ok`` or
    ``unknown`` image gets an empty mask), and only the classes ``called`` (K flags, one per map:
    those the classifier found present; default all) mark any.
    """
    if heatmap is None:
        return None
    stack = heatmap[None] if heatmap.ndim == 2 else heatmap
    above = stack >= pixel_threshold
    if called is not None and len(called) == len(stack):  # one flag per class map
        above &= np.asarray(called, dtype=bool)[:, None, None]
    ids = np.where(above.any(axis=0), np.where(above, stack, -np.inf).argmax(axis=0) + 1, 0)
    if verdict != "defect":
        ids[:] = 0
    return ids.astype(np.uint8)


def _called(inspection: Inspection) -> list[bool] | None:
    """Per class of a multi-class Inspection: reported present (its probability at its class
    threshold, else the decision threshold, or the defect class); None for a model without class
    scores."""
    if len(inspection.class_scores) < 2:
        return None
    own = inspection.class_thresholds or {}
    return [
        name == inspection.defect_class or score >= own.get(name, inspection.threshold)
        for name, score in inspection.class_scores.items()
    ]


def predict_paths(
    inspector: ImageInspector,
    paths: Iterable[str | Path],
    out: str | Path,
    *,
    save_heatmaps: bool = False,
    save_masks: bool = False,
    overlays: bool = True,
    explainer: Callable[[np.ndarray, Inspection], np.ndarray | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_failure: Callable[[Failure], None] | None = None,
) -> PredictReport:
    """Inspect every image under ``paths`` and write results to ``out`` (see the module doc)."""
    out = Path(out)
    skipped: list[Path] = []
    images, failures = collect_images(paths, exclude=out, excluded=skipped)
    names = output_names(images)
    heatmaps = save_heatmaps or explainer is not None
    planned = [SUMMARY_NAME] + [
        file
        for name in names
        for file in result_files(name, overlays=overlays, heatmaps=heatmaps, masks=save_masks)
    ]
    check_output_folder(out, images, skipped, planned)
    writable_folder(out)  # before the first image, not after every one has failed
    report = PredictReport(out=out)
    rows: list[dict[str, object]] = []
    listed_before = _listed_outputs(out / SUMMARY_NAME)

    def failed(failure: Failure) -> None:
        # A file name that is not UTF-8 must not cost the summary.csv it is written into.
        failure = Failure(printable_path(failure.path), printable_path(failure.reason))
        report.failures.append(failure)
        rows.append({"image": failure.path, "error": failure.reason})
        if on_failure is not None:
            on_failure(failure)

    for failure in failures:
        failed(failure)
    total = len(images)
    if progress is not None:
        progress(0, total)
    try:
        for done, (image_path, name) in enumerate(zip(images, names, strict=True), start=1):
            try:
                row = _inspect_one(
                    inspector,
                    image_path,
                    name,
                    out,
                    report,
                    save_heatmaps=save_heatmaps,
                    save_masks=save_masks,
                    overlays=overlays,
                    explainer=explainer,
                )
                rows.append(row)
            except (ImageReadError, ValueError) as error:
                failed(Failure(str(image_path), error_reason(error, image_path)))
            except (OSError, RuntimeError, MemoryError) as error:
                # Not the file's fault (a name too long for the output folder, a full disk, an
                # image too large for memory): the run goes on and the summary says why.
                failed(Failure(str(image_path), f"{type(error).__name__}: {error}".rstrip(": ")))
            if progress is not None:
                progress(done, total)
    finally:
        # Written whatever stopped the loop, so the images already inspected stay listed.
        _write_summary(report, rows)
        written = {row["output"] for row in rows if "output" in row}
        report.earlier = [n for n in listed_before if n not in written and (out / n).is_file()]
    return report


def _listed_outputs(summary: Path) -> list[str]:
    """The result files an existing ``summary.csv`` lists (none when it is missing or unreadable)."""
    try:
        with open(summary, newline="", encoding="utf-8") as handle:
            return [row["output"] for row in csv.DictReader(handle) if row.get("output")]
    except (OSError, ValueError, KeyError, csv.Error):
        return []


def _inspect_one(
    inspector: ImageInspector,
    image_path: Path,
    name: str,
    out: Path,
    report: PredictReport,
    *,
    save_heatmaps: bool,
    save_masks: bool,
    overlays: bool,
    explainer: Callable[[np.ndarray, Inspection], np.ndarray | None] | None,
) -> dict[str, object]:
    """Inspect one image, write its files under ``out``; its summary row. Whatever stops it once a
    file is written (a full disk, an overlay out of memory, Ctrl-C) removes the files it wrote:
    a mask without its JSON is no result, and the next run into ``out`` would take it for a
    user's file."""
    written: list[Path] = []

    def write(path: Path, data: bytes) -> None:
        write_atomic(path, data)
        written.append(path)

    try:
        pixels = read_image(image_path)
        inspection, heatmap = inspector.inspect_with_heatmap(pixels, name=printable_path(image_path))
        if save_masks:
            # From the model's own heat map: a Grad-CAM explanation is no segmentation.
            mask = defect_mask(
                heatmap, inspector.pixel_threshold_of(inspection), inspection.verdict, _called(inspection)
            )
            if mask is not None:
                mask_path = out / f"{name}.mask.png"
                write(mask_path, png_bytes(Image.fromarray(mask)))
                inspection.mask = printable_path(mask_path)
        if explainer is not None:
            heatmap = explainer(pixels, inspection)  # Grad-CAM stands in for the missing heat map
        if (save_heatmaps or explainer is not None) and heatmap is not None:
            heatmap_path = out / f"{name}.heatmap.png"
            write(heatmap_path, png_bytes(heatmap_image(heatmap)))
            inspection.heatmap = printable_path(heatmap_path)
        if overlays:
            pixel_threshold = inspector.pixel_threshold_of(inspection)
            overlay = render_overlay(pixels, inspection, heatmap, pixel_threshold)
            write(out / f"{name}.png", png_bytes(overlay))
        json_path = out / f"{name}.json"
        write(json_path, (inspection.to_json() + "\n").encode("utf-8"))
        report.results.append((json_path, inspection))
        unseen = inspection.unseen_score
        unjudged = inspection.verdict == "unknown" and unseen is not None
        return {
            "image": printable_path(image_path),
            "verdict": inspection.verdict,
            # A line's unknown was judged by no detector: no score to show.
            "score": "" if unjudged else f"{inspection.score:.6f}",
            "threshold": "" if unjudged else f"{inspection.threshold:.6f}",
            "n_regions": len(inspection.regions),
            "surface": inspection.surface or "",
            "unseen_score": "" if unseen is None else f"{unseen:.6f}",
            "latency_ms": f"{inspection.latency_ms:.2f}",
            "output": json_path.name,  # printable: output_names escapes a name that is not UTF-8
        }
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def _write_summary(report: PredictReport, rows: list[dict[str, object]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    report.summary = report.out / SUMMARY_NAME
    write_atomic(report.summary, buffer.getvalue().encode("utf-8"))
