"""MVTec AD (MVTec Anomaly Detection, Bergmann et al., CVPR 2019).

Layout, per category (``bottle``, ``carpet``, ... ``zipper``)::

    <category>/
      train/good/*.png                      defect-free training images
      test/good/*.png                       defect-free test images
      test/<defect_type>/*.png              defective test images, one folder per defect type
      ground_truth/<defect_type>/<stem>_mask.png   binary (0/255) mask of test/<defect_type>/<stem>.png

``root`` may be one category folder or the whole MVTec AD folder holding several categories
(anything else in it, such as ``license.txt`` or a folder without ``train/good``, is ignored).

Labels (every level the format has):

* ``label``: 0 for ``good``, 1 for any other folder.
* ``classes``: the defect type as one class id, ``[]`` for good images. Class names are
  ``"<category>/<defect_type>"`` (``"bottle/broken_large"``), sorted across the categories read,
  ``good`` excluded: the same type name means different defects on different products
  (``bottle/contamination`` vs ``capsule/...``), so they must not share an id.
* mask: referenced by ``meta["mask_path"]`` (the ground-truth PNG) with ``meta["mask_binary"]``
  and ``meta["mask_class"] = k``, so :func:`defectkit.data.io.load_mask` gives an HxW map with 0
  background and the sample's class id ``k`` on defect pixels. Good images have no mask file, but
  their mask is known to be empty: ``meta["mask_empty"]`` makes ``load_mask`` return zeros, so
  segmentation losses use them as negatives.
* ``surface``: the category (``"bottle"``), also listed in ``surface_names``.
* ``meta``: ``split`` (``"train"`` / ``"test"``), ``defect_type``, ``category`` and ``part`` =
  ``"<category>/<split>/<defect_type>/<stem>"`` (MVTec gives no physical part ids, and stems
  repeat across folders, so the path is the only unique id).

Problems (recorded, never raised): a defective image whose ground-truth mask is missing ("image
without its label"; the image is kept with its image-level labels and an unknown mask), a
ground-truth mask with no matching image ("mask without image").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectkit.data.formats import FormatError, register_format
from defectkit.data.io import is_image_file
from defectkit.data.sample import Dataset, DatasetInfo, Problem, Sample

GOOD = "good"
SPLITS = ("train", "test")
MASK_SUFFIX = "_mask"


def _is_category(folder: Path) -> bool:
    return (
        (folder / "train" / GOOD).is_dir()
        and (folder / "test").is_dir()
        and (folder / "ground_truth").is_dir()
    )


def _categories(root: Path) -> list[Path]:
    if _is_category(root):
        return [root]
    if not root.is_dir():
        return []
    return sorted(child for child in root.iterdir() if child.is_dir() and _is_category(child))


def _detect(root: Path) -> bool:
    return bool(_categories(Path(root)))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _masks(ground_truth: Path, defect_type: str) -> dict[str, Path]:
    """Image stem -> ground-truth mask file for one defect type."""
    folder = ground_truth / defect_type
    if not folder.is_dir():
        return {}
    return {p.stem[: -len(MASK_SUFFIX)]: p for p in _images(folder) if p.stem.endswith(MASK_SUFFIX)}


def _defect_types(category: Path) -> set[str]:
    types = {f.name for split in SPLITS for f in _subfolders(category / split) if f.name != GOOD}
    return types | {f.name for f in _subfolders(category / "ground_truth")}


def _read_category(category: Path, class_ids: dict[str, int], problems: list[Problem]) -> list[Sample]:
    name = category.name
    ground_truth = category / "ground_truth"
    samples: list[Sample] = []
    seen: dict[str, set[str]] = {}  # defect type -> image stems, to find orphan masks
    for split in SPLITS:
        for folder in _subfolders(category / split):
            defect_type = folder.name
            masks = {} if defect_type == GOOD else _masks(ground_truth, defect_type)
            for image in _images(folder):
                meta: dict[str, Any] = {
                    "source": "mvtec",
                    "split": split,
                    "category": name,
                    "defect_type": defect_type,
                    "part": f"{name}/{split}/{defect_type}/{image.stem}",
                }
                if defect_type == GOOD:
                    meta["mask_empty"] = True
                    samples.append(Sample(str(image), label=0, classes=[], surface=name, meta=meta))
                    continue
                class_id = class_ids[f"{name}/{defect_type}"]
                seen.setdefault(defect_type, set()).add(image.stem)
                mask = masks.get(image.stem)
                if mask is None:
                    expected = ground_truth / defect_type / f"{image.stem}{MASK_SUFFIX}.png"
                    problems.append(Problem(str(image), f"image without its label: no {expected}"))
                else:
                    meta.update(mask_path=str(mask), mask_binary=True, mask_class=class_id)
                samples.append(Sample(str(image), label=1, classes=[class_id], surface=name, meta=meta))
    for folder in _subfolders(ground_truth):
        for stem, mask in sorted(_masks(ground_truth, folder.name).items()):
            if stem not in seen.get(folder.name, set()):
                problems.append(
                    Problem(str(mask), f"mask without image: no {folder.name}/{stem}.* under test/")
                )
    return samples


@register_format(
    "mvtec",
    detect=_detect,
    description="MVTec AD: <category>/{train,test}/<type>/ + ground_truth/ (one category or all)",
    priority=20,
)
def read(root: Path) -> Dataset:
    root = Path(root)
    categories = _categories(root)
    if not categories:
        raise FormatError(
            f"{root}: not MVTec AD (needs <category>/train/good, test/ and ground_truth/, or folders of them)"
        )
    class_names = sorted({f"{c.name}/{t}" for c in categories for t in _defect_types(c)})
    class_ids = {n: i + 1 for i, n in enumerate(class_names)}
    problems: list[Problem] = []
    samples = [s for c in categories for s in _read_category(c, class_ids, problems)]
    info = DatasetInfo(
        name=f"mvtec_ad/{root.name}" if categories == [root] else "mvtec_ad",
        format="mvtec",
        root=str(root),
        class_names=class_names,
        surface_names=[c.name for c in categories],
        extra={"categories": [c.name for c in categories]},
    )
    return Dataset(samples, info, problems)
