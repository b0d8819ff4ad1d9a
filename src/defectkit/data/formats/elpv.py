"""ELPV: electroluminescence images of solar cells (Buerhop-Lutz et al. 2018; Deitsch et al. 2019).

Layout (the GitHub repository, and the ``data/`` folder of the ``elpv-dataset`` package)::

    <root>/
      labels.csv        one row per cell, whitespace-separated:  images/cell0001.png  1.0  mono
      images/*.png      300x300 8-bit grayscale cells

Columns: image path relative to ``root``, defect probability (one of 0, 1/3, 2/3, 1: the experts'
confidence that the cell is defective), cell type (``mono`` / ``poly`` crystalline).

Labels (every level the format has; ELPV has no masks or boxes, so those stay unknown):

* ``meta["defect_probability"]``: the probability as a float, always kept so other rules (or
  soft-label training) can be applied later.
* ``label``: 1 when ``defect_probability >= threshold``, else 0. The default threshold
  :data:`DEFECT_THRESHOLD` = 0.5 makes 2/3 and 1 defective and 0 and 1/3 good, the binary split
  used with the ELPV paper (Deitsch et al.). Pass ``read(root, threshold=...)`` or change the
  module constant to use another rule.
* ``classes``: ``[]`` for good cells, ``[1]`` for defective ones; ``class_names == ["defect"]``
  (ELPV names no defect types, and a class list keeps it usable by classification recipes).
* ``surface``: the cell type, ``"mono"`` or ``"poly"``; ``meta["part"]``: the file stem
  (``cell0001``; each cell is cut from a module, but ELPV does not say which module).

Problems (recorded, never raised): a listed image that is missing, an unparsable row, a
probability outside [0, 1], a duplicate row; warnings for an unknown cell type (the sample is
kept) and for images in ``images/`` that ``labels.csv`` does not list (skipped: no label).

The data ships in the optional extra ``defectkit[elpv]`` (PyPI ``elpv-dataset``);
:func:`default_root` finds its folder when it is installed.
"""

from __future__ import annotations

import importlib
import logging
import math
from pathlib import Path

from defectkit.data.formats import FormatError, register_format
from defectkit.data.io import is_image_file
from defectkit.data.sample import Dataset, DatasetInfo, Problem, Sample

logger = logging.getLogger(__name__)

DEFECT_THRESHOLD = 0.5
LABELS_NAME = "labels.csv"
IMAGE_DIR = "images"
CELL_TYPES = ("mono", "poly")
CLASS_NAMES = ["defect"]
PACKAGE = "elpv_dataset"
INSTALL_HINT = "ELPV data is not installed: install defectkit[elpv] (pip install 'defectkit[elpv]')"


def default_root() -> Path | None:
    """The data folder of the installed ``elpv-dataset`` package, or None (with a log message)."""
    try:
        package = importlib.import_module(PACKAGE)
    except ImportError:
        logger.warning(INSTALL_HINT)
        return None
    # Namespace packages have no __file__; __path__ covers both.
    for folder in (Path(p) for p in getattr(package, "__path__", [])):
        # Newer releases keep the data in <package>/data; older ones beside the code.
        for candidate in (folder / "data", folder):
            if (candidate / LABELS_NAME).is_file():
                return candidate
    logger.warning("%s is installed but holds no %s; reinstall defectkit[elpv]", PACKAGE, LABELS_NAME)
    return None


def _parse(line: str) -> tuple[str, float, str] | str:
    """(image path, probability, cell type) or the reason the row cannot be read."""
    cells = line.split()
    if len(cells) != 3:
        return f"unparsable row: expected 'path probability type', got {len(cells)} fields"
    try:
        probability = float(cells[1])
    except ValueError:
        return f"unparsable row: probability {cells[1]!r} is not a number"
    return cells[0], probability, cells[2].lower()


def _detect(root: Path) -> bool:
    root = Path(root)
    labels = root / LABELS_NAME
    if not labels.is_file() or not (root / IMAGE_DIR).is_dir():
        return False
    try:
        with open(labels, encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return False
    return not isinstance(_parse(first), str)


def read(root: Path, threshold: float | None = None) -> Dataset:
    """Index ELPV at ``root``; ``label`` is 1 where the probability >= ``threshold``.

    ``threshold`` None reads :data:`DEFECT_THRESHOLD` at call time, so changing the module
    constant changes the rule everywhere the registry calls ``read(root)``.
    """
    root = Path(root)
    labels = root / LABELS_NAME
    if not labels.is_file() or not (root / IMAGE_DIR).is_dir():
        raise FormatError(f"{root}: not ELPV (needs {LABELS_NAME} and {IMAGE_DIR}/)")
    cut = DEFECT_THRESHOLD if threshold is None else float(threshold)

    problems: list[Problem] = []
    samples: list[Sample] = []
    listed: set[Path] = set()
    with open(labels, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{labels}:{number}"
        parsed = _parse(line)
        if isinstance(parsed, str):
            problems.append(Problem(where, parsed))
            continue
        relative, probability, cell_type = parsed
        if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
            problems.append(Problem(where, f"probability {probability} outside [0, 1]"))
            continue
        image = root / relative
        if image in listed:
            problems.append(Problem(where, f"duplicate row for {relative}; ignored"))
            continue
        listed.add(image)
        if not image.is_file():
            problems.append(Problem(str(image), f"listed image missing ({LABELS_NAME} line {number})"))
            continue
        if cell_type not in CELL_TYPES:
            problems.append(
                Problem(where, f"unknown cell type {cell_type!r} (expected mono or poly)", severity="warning")
            )
        defective = probability >= cut
        samples.append(
            Sample(
                path=str(image),
                label=int(defective),
                classes=[1] if defective else [],
                surface=cell_type,
                meta={"source": "elpv", "part": image.stem, "defect_probability": probability},
            )
        )

    for image in sorted((root / IMAGE_DIR).iterdir()):
        if is_image_file(image) and image not in listed:
            problems.append(
                Problem(str(image), f"image not listed in {LABELS_NAME}; skipped", severity="warning")
            )

    seen_types = {s.surface for s in samples if s.surface}
    info = DatasetInfo(
        name="elpv",
        format="elpv",
        root=str(root),
        class_names=list(CLASS_NAMES),
        surface_names=[*CELL_TYPES, *sorted(seen_types - set(CELL_TYPES))],
        extra={"defect_threshold": cut},
    )
    return Dataset(samples, info, problems)


# Registered after the definition, not as a decorator: the registry's type is read(root) only,
# and decorating would hide ``threshold`` from type checkers.
register_format(
    "elpv",
    detect=_detect,
    description="ELPV solar cells: labels.csv (path probability type) + images/",
    priority=20,
)(read)
