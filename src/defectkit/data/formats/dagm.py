"""DAGM 2007 ("Weakly Supervised Learning for Industrial Optical Inspection"), as published.

Layout (folder names matched case-insensitively; the synthetic generator writes the same)::

    ClassN/Train/NNNN.PNG                  8-bit grey images
    ClassN/Train/Label/NNNN_label.PNG      defect mask (0/255) of each defective image
    ClassN/Train/Label/Labels.txt          first line: the class number; then one row per image,
                                           tab-separated: index, isDefective (0/1), image file,
                                           0, label file ("0" when there is none)
    ClassN/Test/...                        the same

What the reader fills:

* ``surface`` = ``"ClassN"``; ``meta["split"]`` = ``"train"`` / ``"test"``; ``meta["part"]`` =
  ``"ClassN-<split>-<stem>"`` (every DAGM image is its own part).
* ``label`` from ``Labels.txt``. An image with no row there gets ``label=None`` and a problem.
* Classes: real DAGM has one defect type per class, so ``class_names`` are the surface folders
  (``["Class1", ..., "Class10"]`` in natural order) and a defective image of ``ClassN`` has
  ``classes=[id of ClassN]`` (= N for the full set); good images have ``classes=[]``. When the
  synthetic generator's ``dagm.json`` sits at the root, its defect-type ``class_names`` and
  per-surface / per-image classes are used instead, and ``attributes.json`` (the per-surface class
  embeddings) goes to ``DatasetInfo.extra["attributes"]``.
* Masks: a defective image with a label file gets ``meta["mask_path"]``; DAGM masks are binary, so
  ``meta["mask_class"]`` makes the loaded map carry the image's class id. Good images have no mask
  file but their mask is known to be all zero: they get ``meta["mask_empty"] = True``, so
  ``Sample.has_mask`` is true and :func:`defectkit.data.io.load_sample` gives zeros. Real DAGM
  labels are coarse ellipses around the defect, not exact outlines.
* Boxes are not filled (DAGM has none; :func:`defectkit.data.masks.mask_to_boxes` derives them from
  loaded masks).

Bad input gives problems, never exceptions: a malformed ``Labels.txt`` row (``file:line`` and the
reason), a listed image or label file that is missing, an image without its row, a label image
without its image. :class:`FormatError` only when the root has no ``Class*/Train`` or
``Class*/Test`` folder at all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectkit.data.formats import FormatError, register_format
from defectkit.data.io import is_image_file
from defectkit.data.sample import Dataset, DatasetInfo, Problem, Sample

SPLITS = ("train", "test")
LABELS_NAME = "labels.txt"
GENERATOR_INFO = "dagm.json"
ATTRIBUTES_INFO = "attributes.json"
_CLASS_DIR = re.compile(r"^class(\d+)$", re.IGNORECASE)


def _children(folder: Path) -> dict[str, Path]:
    """Entries of ``folder`` by lower-cased name (DAGM copies differ in case: Train/train, .PNG/.png)."""
    try:
        return {entry.name.lower(): entry for entry in sorted(folder.iterdir())}
    except OSError:
        return {}


def _class_dirs(root: Path) -> list[tuple[int, Path]]:
    found = []
    for name, entry in _children(root).items():
        match = _CLASS_DIR.match(name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def _split_dirs(class_dir: Path) -> list[tuple[str, Path]]:
    children = _children(class_dir)
    return [(split, children[split]) for split in SPLITS if split in children and children[split].is_dir()]


def _detect(root: Path) -> bool:
    return root.is_dir() and any(_split_dirs(folder) for _, folder in _class_dirs(root))


@dataclass
class _Row:
    line: int
    image: str  # as written in Labels.txt
    defective: bool
    label_file: str | None


def _parse_labels(path: Path, problems: list[Problem]) -> dict[str, _Row]:
    """Rows of a ``Labels.txt`` by lower-cased image file name; malformed rows become problems."""
    rows: dict[str, _Row] = {}
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as error:
        problems.append(Problem(str(path), f"cannot read labels file ({error.strerror or error})"))
        return rows
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if number == 1 and len(fields) == 1:
            continue  # DAGM's first line holds only the class number
        where = f"{path}:{number}"
        if len(fields) < 3:
            problems.append(
                Problem(where, f"expected 'index isDefective image [0 label]', got {raw.strip()!r}")
            )
            continue
        index, flag, image = fields[0], fields[1], fields[2]
        if not index.isdigit():
            problems.append(Problem(where, f"index {index!r} is not a whole number"))
            continue
        if flag not in ("0", "1"):
            problems.append(Problem(where, f"isDefective must be 0 or 1, got {flag!r}"))
            continue
        label_file = fields[4] if len(fields) >= 5 and fields[4] != "0" else None
        key = image.lower()
        if key in rows:
            problems.append(
                Problem(where, f"{image} listed again (first on line {rows[key].line}); first row kept")
            )
            continue
        rows[key] = _Row(number, image, flag == "1", label_file)
    return rows


def _load_json(path: Path, problems: list[Problem]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        problems.append(Problem(str(path), f"ignored: not valid JSON ({error})", "warning"))
        return {}
    if not isinstance(data, dict):
        problems.append(Problem(str(path), "ignored: not a JSON object", "warning"))
        return {}
    return data


@register_format(
    "dagm",
    detect=_detect,
    description="DAGM 2007 (ClassN/Train|Test, Label/Labels.txt); also the synthetic generator's output",
    priority=20,
)
def read(root: Path) -> Dataset:
    root = Path(root)
    if not _detect(root):
        raise FormatError(f"{root}: no Class*/Train or Class*/Test folders; not a DAGM 2007 layout")
    problems: list[Problem] = []
    generator = _load_json(root / GENERATOR_INFO, problems)
    attributes = _load_json(root / ATTRIBUTES_INFO, problems)

    class_dirs = [(number, folder) for number, folder in _class_dirs(root) if _split_dirs(folder)]
    surfaces = [f"Class{number}" for number, _ in class_dirs]
    class_names: list[str] = [str(n) for n in generator.get("class_names") or []] or surfaces
    surface_classes: dict[str, Any] = generator.get("surface_classes") or {}
    image_classes: dict[str, Any] = generator.get("image_classes") or {}
    binary_masks = generator.get("mode", "dagm") == "dagm"

    samples: list[Sample] = []
    for number, class_dir in class_dirs:
        surface = f"Class{number}"
        class_id = surface_classes.get(surface, surfaces.index(surface) + 1 if not generator else None)
        for split, split_dir in _split_dirs(class_dir):
            samples.extend(
                _read_split(
                    split_dir,
                    surface,
                    split,
                    class_id,
                    binary_masks,
                    image_classes,
                    problems,
                )
            )

    extra: dict[str, Any] = {}
    if attributes:
        extra["attributes"] = attributes
    if generator:
        extra["generator"] = generator.get("generator", {})
        if "families" in generator:
            extra["families"] = generator["families"]
    info = DatasetInfo(
        name=root.name,
        format="dagm",
        root=str(root),
        class_names=class_names,
        surface_names=[str(n) for n in generator.get("surface_names") or []] or surfaces,
        extra=extra,
    )
    return Dataset(samples, info, problems)


def _read_split(
    split_dir: Path,
    surface: str,
    split: str,
    class_id: int | None,
    binary_masks: bool,
    image_classes: dict[str, Any],
    problems: list[Problem],
) -> list[Sample]:
    entries = _children(split_dir)
    images = {name: path for name, path in entries.items() if path.is_file() and is_image_file(path)}
    label_dir = entries.get("label")
    label_entries = _children(label_dir) if label_dir is not None and label_dir.is_dir() else {}
    labels_txt = label_entries.get(LABELS_NAME)
    rows: dict[str, _Row] = {}
    if labels_txt is not None and labels_txt.is_file():
        rows = _parse_labels(labels_txt, problems)
    elif images:
        problems.append(Problem(str(split_dir), "no Label/Labels.txt: image labels unknown"))
    where = str(labels_txt) if labels_txt is not None else str(split_dir)

    for name, listed in rows.items():
        if name not in images:
            problems.append(Problem(f"{where}:{listed.line}", f"listed image {listed.image} is missing"))

    used_labels: set[str] = set()
    samples: list[Sample] = []
    for key, path in images.items():
        meta: dict[str, Any] = {"source": "dagm", "split": split, "part": f"{surface}-{split}-{path.stem}"}
        row = rows.get(key)
        if row is None:
            if labels_txt is not None:
                problems.append(Problem(str(path), "image without its label (no row in Labels.txt)"))
            samples.append(Sample(path=str(path), surface=surface, meta=meta))
            continue
        label = int(row.defective)
        classes: list[int] | None = []
        if row.defective:
            relative = f"{surface}/{split_dir.name}/{path.name}"
            recorded = image_classes.get(relative)
            classes = (
                [int(c) for c in recorded] if recorded else ([class_id] if class_id is not None else None)
            )
            # A row without a label file name still has one when DAGM's usual name exists.
            label_name = (row.label_file or f"{path.stem}_label{path.suffix}").lower()
            label_path = label_entries.get(label_name)
            if row.label_file and label_path is None:
                problems.append(
                    Problem(
                        f"{where}:{row.line}", f"label file {row.label_file} listed but missing; mask unknown"
                    )
                )
            if label_path is not None:
                used_labels.add(label_path.name.lower())
                meta["mask_path"] = str(label_path)
                if classes is not None and len(classes) == 1:
                    meta["mask_class"] = classes[0]
                elif binary_masks:
                    meta["mask_binary"] = True
        else:
            meta["mask_empty"] = True
        samples.append(Sample(path=str(path), label=label, classes=classes, surface=surface, meta=meta))

    stems = {Path(name).stem: path for name, path in images.items()}
    for name, path in label_entries.items():
        if name == LABELS_NAME or name in used_labels or not is_image_file(path):
            continue
        owner = stems.get(Path(name).stem.removesuffix("_label"))
        if owner is None:
            problems.append(Problem(str(path), "mask without image"))
        elif (owner_row := rows.get(owner.name.lower())) is not None and not owner_row.defective:
            problems.append(
                Problem(
                    str(path), f"label image of {owner.name}, which is listed as good; ignored", "warning"
                )
            )
    return samples
