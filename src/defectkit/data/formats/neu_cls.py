"""NEU-CLS (Song & Yan 2013): hot-rolled steel, six defect classes, 300 images each, one flat folder.

The class is the file-name prefix (``Cr_12.bmp`` -> crazing); the original release ships BMPs, the
copy made from NEU-DET ships JPEGs, so both are read. Every image shows a defect: ``label`` is 1
and ``classes`` holds the single class. No masks or boxes exist in this format.
"""

from __future__ import annotations

from pathlib import Path

from defectkit.data.formats import FormatError, register_format
from defectkit.data.io import is_image_file
from defectkit.data.sample import Dataset, DatasetInfo, Problem, Sample

CLASS_NAMES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
PREFIXES = {"cr": 1, "in": 2, "pa": 3, "ps": 4, "rs": 5, "sc": 6}


def _prefix(path: Path) -> str:
    return path.stem.split("_", 1)[0].lower()


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p))


def _detect(root: Path) -> bool:
    if not root.is_dir():
        return False
    images = _images(root)
    return bool(images) and sum(_prefix(p) in PREFIXES for p in images) >= 0.9 * len(images)


@register_format(
    "neu-cls", detect=_detect, description="NEU-CLS: flat folder, class = file prefix (Cr_, In_, ...)"
)
def read(root: Path) -> Dataset:
    root = Path(root)
    if not root.is_dir():
        raise FormatError(f"{root}: not a folder (NEU-CLS is one flat folder of images)")
    samples: list[Sample] = []
    problems: list[Problem] = []
    for image in _images(root):
        class_id = PREFIXES.get(_prefix(image))
        if class_id is None:
            problems.append(
                Problem(str(image), f"image without its label (unknown class prefix {_prefix(image)!r})")
            )
            continue
        samples.append(
            Sample(
                path=str(image),
                label=1,
                classes=[class_id],
                surface="hot-rolled steel",
                meta={"part": image.stem},
            )
        )
    if not samples:
        raise FormatError(f"{root}: no NEU-CLS images (expected names like Cr_1.bmp)")
    info = DatasetInfo(
        name="neu-cls",
        format="neu-cls",
        root=str(root),
        class_names=list(CLASS_NAMES),
        surface_names=["hot-rolled steel"],
    )
    return Dataset(samples, info, problems)
