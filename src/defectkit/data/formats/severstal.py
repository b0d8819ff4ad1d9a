"""Severstal: Steel Defect Detection (Kaggle, 2019), the labelled training set.

Layout (as downloaded from Kaggle)::

    <root>/
      train.csv            run-length masks, one of two variants (both read)
      train_images/*.jpg   1600x256 steel strip images (grayscale stored as RGB JPEG)
      test_images/         unlabelled competition test set: NOT indexed
      sample_submission.csv

``train.csv`` comes in two variants:

* **old** (first release): header ``ImageId_ClassId,EncodedPixels``, four rows per image
  (``0002cc93b.jpg_1`` .. ``_4``), ``EncodedPixels`` empty where that class is absent. Every
  image is listed, so an image in ``train_images/`` that the CSV does not name has no label: it
  is skipped with a warning.
* **new** (re-release): header ``ImageId,ClassId,EncodedPixels``, only rows with a defect. An
  image in ``train_images/`` absent from the CSV is defect-free (Kaggle's own convention).

Labels (every level the format has):

* ``classes``: the sorted defect class ids present (multi-label: an image can hold several of
  the four classes). ``class_names`` are ``["1", "2", "3", "4"]`` -- Kaggle's ``ClassId``
  values as written, so ``info.class_name(k) == str(k)`` and results read like the papers'.
* ``label``: 1 when any class is present, else 0.
* mask: referenced, not decoded: ``meta["mask_rle"] = {class_id: rle}`` with
  ``meta["mask_depth"] = 4``; :func:`defectkit.data.io.load_mask` turns it into a 4xHxW bool
  stack because Severstal's classes may overlap in one pixel (DESIGN.md). A defect-free image
  has a known-empty mask: ``mask_rle == {}`` (still depth 4).
* ``surface`` is ``"steel"``; ``meta["part"]`` is the Kaggle ``ImageId`` (``0002cc93b.jpg``):
  each image is its own strip section, there is no coarser part id.

Problems (recorded, never raised): a CSV row naming an image missing from ``train_images/``
("label without image"), a malformed run-length string or one that reaches past a 256x1600
image, a class id outside 1..4, a duplicate row. Run-length strings are validated without
decoding images (the size is fixed by the competition). An image whose row was bad keeps what is
still certain: ``label`` 1 when the bad row had a run-length string, and its mask becomes unknown
(no ``mask_rle``) because a partial mask would silently claim pixels are clean; after a bad class
id its ``classes`` become unknown (``None``) for the same reason.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectkit.data.formats import FormatError, register_format
from defectkit.data.io import is_image_file
from defectkit.data.sample import Dataset, DatasetInfo, Problem, Sample

HEIGHT, WIDTH = 256, 1600
NUM_CLASSES = 4
CLASS_NAMES = [str(k) for k in range(1, NUM_CLASSES + 1)]
CSV_NAME = "train.csv"
IMAGE_DIR = "train_images"
OLD_HEADER = ("ImageId_ClassId", "EncodedPixels")
NEW_HEADER = ("ImageId", "ClassId", "EncodedPixels")


def _header(csv_path: Path) -> tuple[str, ...] | None:
    try:
        with open(csv_path, encoding="utf-8-sig", errors="replace") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return None
    return tuple(cell.strip() for cell in first.strip().split(","))


def _variant(csv_path: Path) -> str | None:
    header = _header(csv_path)
    if header == OLD_HEADER:
        return "old"
    if header == NEW_HEADER:
        return "new"
    return None


def _detect(root: Path) -> bool:
    root = Path(root)
    return (
        (root / IMAGE_DIR).is_dir() and (root / CSV_NAME).is_file() and _variant(root / CSV_NAME) is not None
    )


def rle_error(rle: str, height: int = HEIGHT, width: int = WIDTH) -> str | None:
    """Why ``rle`` is not a valid run-length string for a ``height`` x ``width`` image, or None.

    Checks what :func:`defectkit.data.masks.rle_decode` would reject, without allocating the
    mask: indexing 12k images must not decode 50k masks.
    """
    tokens = rle.split()
    if len(tokens) % 2:
        return f"run-length string has an odd number of values ({len(tokens)})"
    try:
        runs = np.asarray(tokens, dtype=np.int64).reshape(-1, 2)
    except (ValueError, OverflowError):
        return "run-length string holds non-integers"
    starts, lengths = runs[:, 0], runs[:, 1]
    if (starts < 1).any() or (lengths < 0).any():
        return "run-length string has a start below 1 or a negative length"
    end = int((starts - 1 + lengths).max(initial=0))
    if end > height * width:
        return f"run ends at pixel {end}, past the {height}x{width} image ({height * width} pixels)"
    return None


@dataclass
class _ImageLabels:
    """What the CSV says about one image, gathered over its rows."""

    line: int  # first CSV line naming the image (for "label without image")
    rles: dict[int, str] = field(default_factory=dict)
    defective: bool = False
    mask_known: bool = True
    classes_known: bool = True


def _rows(csv_path: Path) -> list[tuple[int, list[str]]]:
    with open(csv_path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        return [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]


def _split_row(row: list[str], variant: str) -> tuple[str, str, str] | str:
    """(image id, class id text, rle) or the reason the row cannot be read."""
    if variant == "old":
        if len(row) not in (1, 2):
            return f"expected 2 cells (ImageId_ClassId,EncodedPixels), got {len(row)}"
        key = row[0].strip()
        image_id, sep, class_text = key.rpartition("_")
        if not sep or not image_id:
            return f"ImageId_ClassId {key!r} is not '<image>_<class>'"
        return image_id, class_text, row[1].strip() if len(row) == 2 else ""
    if len(row) not in (2, 3):
        return f"expected 3 cells (ImageId,ClassId,EncodedPixels), got {len(row)}"
    return row[0].strip(), row[1].strip(), row[2].strip() if len(row) == 3 else ""


def _parse_csv(csv_path: Path, variant: str, problems: list[Problem]) -> dict[str, _ImageLabels]:
    labels: dict[str, _ImageLabels] = {}
    for line, row in _rows(csv_path):
        where = f"{csv_path}:{line}"
        parts = _split_row(row, variant)
        if isinstance(parts, str):
            problems.append(Problem(where, f"unreadable row: {parts}"))
            continue
        image_id, class_text, rle = parts
        entry = labels.setdefault(image_id, _ImageLabels(line))
        try:
            class_id = int(class_text)
        except ValueError:
            class_id = 0
        if not 1 <= class_id <= NUM_CLASSES:
            problems.append(Problem(where, f"bad class id {class_text!r} for {image_id} (expected 1..4)"))
            entry.defective |= bool(rle)
            entry.classes_known = entry.mask_known = False
            continue
        if not rle:
            continue  # an empty EncodedPixels cell states this class is absent from the image
        entry.defective = True
        if class_id in entry.rles:
            problems.append(Problem(where, f"duplicate row for {image_id} class {class_id}; mask unknown"))
            entry.mask_known = False
            continue
        error = rle_error(rle)
        if error is not None:
            problems.append(Problem(where, f"bad run-length string for {image_id} class {class_id}: {error}"))
            # The class is certainly present (the row has pixels); only where is unknown.
            entry.rles[class_id] = ""
            entry.mask_known = False
            continue
        entry.rles[class_id] = rle
    return labels


def _sample(image: Path, entry: _ImageLabels | None) -> Sample:
    meta: dict[str, Any] = {"source": "severstal", "part": image.name, "mask_depth": NUM_CLASSES}
    if entry is None:  # new variant, not in the CSV: defect-free by Kaggle's convention
        meta["mask_rle"] = {}
        return Sample(path=str(image), label=0, classes=[], surface="steel", meta=meta)
    if entry.mask_known:
        meta["mask_rle"] = dict(sorted(entry.rles.items()))
    return Sample(
        path=str(image),
        label=int(entry.defective),
        classes=sorted(entry.rles) if entry.classes_known else None,
        surface="steel",
        meta=meta,
    )


@register_format(
    "severstal",
    detect=_detect,
    description="Severstal steel defect detection (Kaggle): train.csv + train_images/",
    priority=20,
)
def read(root: Path) -> Dataset:
    root = Path(root)
    csv_path, image_dir = root / CSV_NAME, root / IMAGE_DIR
    if not csv_path.is_file() or not image_dir.is_dir():
        raise FormatError(f"{root}: not a Severstal folder (needs {CSV_NAME} and {IMAGE_DIR}/)")
    variant = _variant(csv_path)
    if variant is None:
        raise FormatError(
            f"{csv_path}: header is not 'ImageId_ClassId,EncodedPixels' or 'ImageId,ClassId,EncodedPixels'"
        )

    problems: list[Problem] = []
    labels = _parse_csv(csv_path, variant, problems)
    images = {p.name: p for p in image_dir.iterdir() if p.is_file() and is_image_file(p)}

    for image_id, listed in labels.items():
        if image_id not in images:
            problems.append(
                Problem(
                    str(image_dir / image_id), f"label without image ({csv_path.name} line {listed.line})"
                )
            )

    samples: list[Sample] = []
    for name in sorted(images):
        entry = labels.get(name)
        if entry is None and variant == "old":
            # The old CSV lists every image, so silence here means "unknown", not "good".
            problems.append(
                Problem(
                    str(images[name]), f"image not listed in {csv_path.name}; skipped", severity="warning"
                )
            )
            continue
        samples.append(_sample(images[name], entry))

    info = DatasetInfo(
        name="severstal",
        format="severstal",
        root=str(root),
        class_names=list(CLASS_NAMES),
        surface_names=["steel"],
        multilabel_masks=True,
        extra={"csv_variant": variant, "image_size": [HEIGHT, WIDTH]},
    )
    return Dataset(samples, info, problems)
