"""A user's own folders: the layout a quality engineer makes by hand.

::

    root/
      good/            *.png|jpg|bmp...   label 0 (also ``ok/``, ``normal/``, ``pass/``)
      defect/          ...                label 1, defect type not known (also ``ng/``, ``bad/``, ``fail/``)
      <class name>/    ...                label 1, defect class <class name> (one id per folder, sorted)
      masks/           <stem>.png or <stem>_mask.png   optional pixel masks (also ``ground_truth/``), matched
                       by the image's path (masks/<class>/<stem>_mask.png, as MVTec lays them out),
                       else by its stem where one mask alone has it
      annotations.json optional COCO boxes, matched by ``file_name`` (relative path or base name)

Images may sit in nested sub-folders of a class folder (the class is the top folder). A binary
mask of a class-folder image is read as that class's id; a mask in ``masks/`` whose image is
missing is reported. Where a folder has only classes and no ``good/``, every image is defective:
that is a defect-classification set (X-SDD's layout).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from defectkit.data.formats import FormatError, register_format
from defectkit.data.io import image_files, is_image_file
from defectkit.data.sample import Dataset, DatasetInfo, Problem, Sample

GOOD_NAMES = frozenset({"good", "ok", "normal", "pass", "non-defective", "nondefective"})
DEFECT_NAMES = frozenset({"defect", "defective", "ng", "bad", "fail", "nok"})
MASK_DIRS = frozenset({"masks", "mask", "ground_truth", "labels"})
COCO_NAMES = ("annotations.json", "coco.json", "instances.json")


def _class_dirs(root: Path) -> list[Path]:
    # Hidden and tool folders (.git, __MACOSX) are never classes.
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.lower() not in MASK_DIRS and not p.name.startswith((".", "__"))
    )


def _detect(root: Path) -> bool:
    if not root.is_dir():
        return False
    return any(any(is_image_file(f) for f in d.rglob("*")) for d in _class_dirs(root))


def _coco_boxes(
    path: Path, problems: list[Problem]
) -> tuple[dict[str, list[tuple[list[float], str]]], list[str]]:
    """COCO ``[x, y, w, h]`` boxes per file name (full relative path and base name both keyed)."""
    try:
        coco: dict[str, Any] = json.loads(path.read_text())
        categories = {int(c["id"]): str(c["name"]) for c in coco.get("categories", [])}
        files = {int(im["id"]): str(im["file_name"]) for im in coco.get("images", [])}
        by_file: dict[str, list[tuple[list[float], str]]] = {name: [] for name in files.values()}
        for ann in coco.get("annotations", []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            by_file[files[int(ann["image_id"])]].append(
                ([x, y, x + w, y + h], categories[int(ann["category_id"])])
            )
    except (OSError, ValueError, KeyError, TypeError) as error:
        problems.append(Problem(str(path), f"unreadable COCO annotations: {error}"))
        return {}, []
    keyed = dict(by_file)
    for name, boxes in by_file.items():
        keyed.setdefault(Path(name).name, boxes)
    return keyed, [categories[k] for k in sorted(categories)]


@register_format(
    "folder",
    detect=_detect,
    description="generic folders: good/ + defect/ or one folder per class, optional masks/ and COCO JSON",
    priority=90,
)
def read(root: Path) -> Dataset:
    root = Path(root)
    if not _detect(root):
        raise FormatError(f"{root}: expected sub-folders of images (good/, defect/ or one per class)")
    problems: list[Problem] = []
    class_dirs = _class_dirs(root)
    defect_classes = [d.name for d in class_dirs if d.name.lower() not in GOOD_NAMES | DEFECT_NAMES]

    coco_file = next((root / n for n in COCO_NAMES if (root / n).is_file()), None)
    coco, coco_classes = _coco_boxes(coco_file, problems) if coco_file else ({}, [])
    class_names = defect_classes + [c for c in coco_classes if c not in defect_classes]
    if not class_names and any(d.name.lower() in DEFECT_NAMES for d in class_dirs):
        class_names = ["defect"]
    ids = {name: i + 1 for i, name in enumerate(class_names)}

    images = [(folder, image) for folder in class_dirs for image in image_files(folder)]
    masks = _match_masks(root, [(f.name.lower() in GOOD_NAMES, i) for f, i in images], problems)

    samples: list[Sample] = []
    mask_users: dict[Path, list[Path]] = {}
    for folder, image in images:
        kind = folder.name.lower()
        sample = Sample(path=str(image), meta={"part": image.relative_to(root).with_suffix("").as_posix()})
        if kind in GOOD_NAMES:
            sample.label, sample.classes = 0, []
        elif kind in DEFECT_NAMES:
            sample.label = 1
        else:
            sample.label, sample.classes = 1, [ids[folder.name]]
        mask_file = masks.get(image)
        if mask_file is not None:
            mask_users.setdefault(mask_file, []).append(image)
            sample.meta["mask_path"] = str(mask_file)
            if sample.classes and len(sample.classes) == 1:
                sample.meta["mask_class"] = sample.classes[0]
            else:
                # Type unknown (defect/) or good: any non-zero pixel is "defect", no class implied.
                sample.meta["mask_binary"] = True
        rel = image.relative_to(root).as_posix()
        boxes = coco.get(rel, coco.get(image.name))
        if boxes is not None:
            sample.boxes = np.asarray([b for b, _ in boxes], dtype=np.float32).reshape(-1, 4)
            sample.box_classes = np.asarray([ids[c] for _, c in boxes], dtype=np.int64)
        samples.append(sample)
    untyped = [s for s in samples if s.label == 1 and not s.classes and "mask_path" in s.meta]
    if untyped and defect_classes:
        # A mask holds class ids; an untyped defect's pixels can only be read as some class.
        problems.append(
            Problem(
                str(Path(untyped[0].path).parent),
                f"{len(untyped)} masks of defects of no known type: methods with a mask per class "
                f"(tlu_net, aux_net) read their pixels as class 1, {class_names[0]!r}; move the images "
                "into their class folders",
                severity="warning",
            )
        )
    for mask, users in mask_users.items():
        if len(users) > 1:
            names = ", ".join(str(u) for u in users)
            problems.append(Problem(str(mask), f"ambiguous mask: images {names} share its stem"))
    for name in defect_classes:
        if not any(s.classes == [ids[name]] for s in samples):
            problems.append(Problem(str(root / name), "empty class (folder holds no images)"))
    info = DatasetInfo(name=root.name, format="folder", root=str(root), class_names=class_names)
    return Dataset(samples, info, problems)


def _mask_key(relative: Path) -> str:
    """A mask's path below its masks folder, lower case, without suffix or ``_mask``."""
    key = relative.with_suffix("").as_posix().lower()
    return key[: -len("_mask")] if key.endswith("_mask") else key


def _match_masks(root: Path, images: list[tuple[bool, Path]], problems: list[Problem]) -> dict[Path, Path]:
    """Each image's mask, for ``images`` as (is good, path): the mask at the image's own path below a
    masks folder, else the one mask left with its stem. A mask matched by path is no longer offered
    by stem, and several masks of one stem are never guessed between (a wrong mask would teach a
    defect where there is none): that is a problem for a defective image, and expected of a good
    one (MVTec's good/000.png beside ground_truth/<type>/000_mask.png)."""
    by_path: dict[str, Path] = {}
    for mask_dir in (p for p in root.iterdir() if p.is_dir() and p.name.lower() in MASK_DIRS):
        for mask in sorted(mask_dir.rglob("*")):
            if not is_image_file(mask):
                continue
            key = _mask_key(mask.relative_to(mask_dir))
            if key in by_path:
                problems.append(Problem(str(mask), f"ambiguous mask: {by_path[key]} is the same image's"))
                continue
            by_path[key] = mask
    matched: dict[Path, Path] = {}
    for _, image in images:
        own = by_path.get(image.relative_to(root).with_suffix("").as_posix().lower())
        if own is not None:
            matched[image] = own
    taken = set(matched.values())  # a set: matched.values() is a linear scan per mask
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for key, mask in by_path.items():
        if mask not in taken:
            by_stem[key.rsplit("/", 1)[-1]].append(mask)
    for good, image in images:
        candidates = by_stem.get(image.stem.lower(), []) if image not in matched else []
        if len(candidates) == 1:
            matched[image] = candidates[0]
        elif candidates and not good:
            listed = ", ".join(str(c) for c in candidates)
            problems.append(
                Problem(
                    str(image),
                    f"ambiguous mask: {listed} all have its stem, none is used (put the mask at the "
                    "image's own path below the masks folder)",
                )
            )
    used = set(matched.values())
    problems += [Problem(str(m), "mask without image") for m in by_path.values() if m not in used]
    return matched
