"""KolektorSDD (Tabernik et al., J. Intell. Manuf. 2019): ``kosNN/PartK.jpg`` + ``PartK_label.bmp``.

Every image has a pixel mask (palette BMP: 0 background, non-zero defect), so the image label is
derived from it: defective when any mask pixel is non-zero. One mask in the published set has a
third grey level; every non-zero value is read as the single class ``defect`` (id 1). The physical
part is the folder (``kosNN``): images of one commutator must never straddle a split.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from defectkit.data.formats import FormatError, register_format
from defectkit.data.io import ImageReadError, read_mask
from defectkit.data.sample import Dataset, DatasetInfo, Problem, Sample

_PART_DIR = re.compile(r"^kos\d+$", re.IGNORECASE)
_IMAGE = re.compile(r"^part\d+\.(jpg|jpeg|png|bmp)$", re.IGNORECASE)
_LABEL_SUFFIX = "_label"


def _part_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and _PART_DIR.match(p.name))


def _detect(root: Path) -> bool:
    return root.is_dir() and bool(_part_dirs(root))


def _find_label(folder: Path, stem: str) -> Path | None:
    for candidate in folder.iterdir():
        if candidate.stem.lower() == (stem + _LABEL_SUFFIX).lower():
            return candidate
    return None


@register_format("kolektorsdd", detect=_detect, description="KolektorSDD: kosNN/PartK.jpg + PartK_label.bmp")
def read(root: Path) -> Dataset:
    root = Path(root)
    parts = _part_dirs(root) if root.is_dir() else []
    if not parts:
        raise FormatError(f"{root}: no kosNN part folders (KolektorSDD layout)")
    samples: list[Sample] = []
    problems: list[Problem] = []
    for folder in parts:
        files = sorted(folder.iterdir())
        stems = {f.stem.lower() for f in files if _IMAGE.match(f.name)}
        for file in files:
            if (
                file.stem.lower().endswith(_LABEL_SUFFIX)
                and file.stem.lower()[: -len(_LABEL_SUFFIX)] not in stems
            ):
                problems.append(Problem(str(file), "mask without image"))
        for image in (f for f in files if _IMAGE.match(f.name)):
            sample = Sample(path=str(image), surface="commutator", meta={"part": folder.name})
            label_file = _find_label(folder, image.stem)
            if label_file is None:
                problems.append(
                    Problem(str(image), f"image without its label ({image.stem}{_LABEL_SUFFIX}.bmp)")
                )
            else:
                try:
                    defective = bool(np.any(read_mask(label_file)))
                except ImageReadError as error:
                    problems.append(Problem(error.path, error.reason))
                else:
                    sample.label = int(defective)
                    sample.classes = [1] if defective else []
                    sample.meta.update(mask_path=str(label_file), mask_binary=True)
            samples.append(sample)
    info = DatasetInfo(
        name="kolektorsdd",
        format="kolektorsdd",
        root=str(root),
        class_names=["defect"],
        surface_names=["commutator"],
    )
    return Dataset(samples, info, problems)
