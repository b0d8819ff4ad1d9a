"""NEU-DET: the NEU steel images with Pascal VOC boxes, six classes.

Annotations (``*.xml``) and images are searched recursively and matched by file stem, so both the
original ``IMAGES/`` + ``ANNOTATIONS/`` layout and the later ``train|validation/images/<class>/``
split work, whatever the folders' case. VOC coordinates are 1-based inclusive pixel indices; they
become pixel-edge ``xyxy`` as ``(xmin - 1, ymin - 1, xmax, ymax)``. ``label`` is 1 when the image has
at least one box; ``classes`` are the classes of its boxes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from defectkit.data.formats import FormatError, register_format
from defectkit.data.formats.neu_cls import CLASS_NAMES
from defectkit.data.io import is_image_file
from defectkit.data.sample import Dataset, DatasetInfo, Problem, Sample


def _detect(root: Path) -> bool:
    if not root.is_dir():
        return False
    for child in root.iterdir():
        if child.is_dir() and child.name.lower() in ("annotations", "annotation", "train", "validation"):
            return next(child.rglob("*.xml"), None) is not None
    return False


class _Annotation:
    def __init__(self, size: tuple[int, int] | None, boxes: list[list[float]], names: list[str]) -> None:
        self.size = size
        self.boxes = boxes
        self.names = names


def _parse(xml: Path) -> _Annotation:
    tree = ET.parse(xml)
    node = tree.getroot()
    size = None
    width, height = node.findtext("size/width"), node.findtext("size/height")
    if width and height:
        size = (int(float(width)), int(float(height)))
    boxes: list[list[float]] = []
    names: list[str] = []
    for obj in node.iter("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            raise ValueError("object without a name or a bndbox")
        xmin, ymin, xmax, ymax = (float(box.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([xmin - 1.0, ymin - 1.0, xmax, ymax])
        names.append(name)
    return _Annotation(size, boxes, names)


@register_format("neu-det", detect=_detect, description="NEU-DET: Pascal VOC XML boxes, searched recursively")
def read(root: Path) -> Dataset:
    root = Path(root)
    if not root.is_dir():
        raise FormatError(f"{root}: not a folder")
    xmls = {p.stem.lower(): p for p in sorted(root.rglob("*")) if p.suffix.lower() == ".xml"}
    images = {p.stem.lower(): p for p in sorted(root.rglob("*")) if p.is_file() and is_image_file(p)}
    if not xmls:
        raise FormatError(f"{root}: no Pascal VOC .xml annotations found")
    class_names = list(CLASS_NAMES)
    samples: list[Sample] = []
    problems = [
        Problem(str(xml), "annotation without image") for stem, xml in xmls.items() if stem not in images
    ]
    for stem, image in images.items():
        sample = Sample(path=str(image), surface="hot-rolled steel", meta={"part": image.stem})
        xml = xmls.get(stem)
        if xml is None:
            problems.append(Problem(str(image), "image without its label (no .xml annotation)"))
            samples.append(sample)
            continue
        try:
            annotation = _parse(xml)
        except (ET.ParseError, ValueError) as error:
            problems.append(Problem(str(xml), f"malformed annotation: {error}"))
            samples.append(sample)
            continue
        for name in annotation.names:
            if name not in class_names:
                class_names.append(name)
        ids = [class_names.index(n) + 1 for n in annotation.names]
        sample.boxes = np.asarray(annotation.boxes, dtype=np.float32).reshape(-1, 4)
        sample.box_classes = np.asarray(ids, dtype=np.int64)
        sample.label = int(bool(ids))
        sample.classes = sorted(set(ids))
        if annotation.size is not None:
            sample.meta["annotated_size"] = annotation.size
        samples.append(sample)
    info = DatasetInfo(
        name="neu-det",
        format="neu-det",
        root=str(root),
        class_names=class_names,
        surface_names=["hot-rolled steel"],
    )
    return Dataset(samples, info, problems)
