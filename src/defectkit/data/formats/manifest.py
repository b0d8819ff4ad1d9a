"""The generic manifest: one row per image, in CSV or JSON Lines.

Columns / keys (all but ``path`` optional; paths are relative to the manifest's folder):

==========  ==================================================================================
``path``    image file
``label``   1 defective, 0 good; empty = not known
``class``   defect class names, ``;``-separated in CSV, a list in JSONL; empty = not known
            (a good image with an empty cell has no classes); ``none`` = annotated, no classes
``mask``    mask image (0 background, k class id, or binary 0/255); empty = not known
``boxes``   JSON list of ``[x0, y0, x1, y1, "class"]`` in pixels; ``[]`` = annotated, no boxes
``part``    physical part id (grouped splits)
``surface`` surface / material / product type
==========  ==================================================================================

Class ids follow ``class_names`` in an optional ``dataset.json`` beside the manifest
(``{"name", "class_names", "surface_names", ...}``); without it, the sorted set of names seen.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from defectkit.data.formats import FormatError, register_format
from defectkit.data.sample import Dataset, DatasetInfo, Problem, Sample

COLUMNS = ("path", "label", "class", "mask", "boxes", "part", "surface")
MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
INFO_NAME = "dataset.json"


def _find_manifest(root: Path) -> Path | None:
    if root.is_file() and root.suffix.lower() in (".csv", ".jsonl"):
        return root
    if root.is_dir():
        for name in MANIFEST_NAMES:
            if (root / name).is_file():
                return root / name
    return None


def _detect(root: Path) -> bool:
    return _find_manifest(root) is not None


def _rows(manifest: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    if manifest.suffix.lower() == ".csv":
        with open(manifest, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise FormatError(f"{manifest}: CSV manifest needs a header with a 'path' column")
            for line, row in enumerate(reader, start=2):
                yield line, dict(row)
    else:
        with open(manifest, encoding="utf-8") as handle:
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as error:
                    yield line, {"_error": f"invalid JSON ({error.msg})"}
                    continue
                yield line, row if isinstance(row, dict) else {"_error": "line is not a JSON object"}


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _names(value: Any) -> list[str] | None:
    if _empty(value):
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    return [] if text.lower() == "none" else [v.strip() for v in text.split(";") if v.strip()]


def _boxes(value: Any) -> list[list[Any]] | None:
    if _empty(value):
        return None
    parsed = json.loads(value) if isinstance(value, str) else value
    if not isinstance(parsed, list) or any(not isinstance(b, list) or len(b) not in (4, 5) for b in parsed):
        raise ValueError("boxes must be a JSON list of [x0, y0, x1, y1] or [x0, y0, x1, y1, class]")
    return parsed


@register_format("manifest", detect=_detect, description="generic CSV / JSONL manifest", priority=10)
def read(root: Path) -> Dataset:
    manifest = _find_manifest(Path(root))
    if manifest is None:
        raise FormatError(f"{root}: no manifest.csv or manifest.jsonl found")
    base = manifest.parent
    info_file = base / INFO_NAME
    stored: dict[str, Any] = json.loads(info_file.read_text()) if info_file.is_file() else {}

    problems: list[Problem] = []
    parsed: list[tuple[dict[str, Any], list[str] | None, list[list[Any]] | None]] = []
    for line, row in _rows(manifest):
        where = f"{manifest}:{line}"
        if "_error" in row:
            problems.append(Problem(where, row["_error"]))
            continue
        if _empty(row.get("path")):
            problems.append(Problem(where, "row has no path"))
            continue
        try:
            parsed.append((row, _names(row.get("class")), _boxes(row.get("boxes"))))
        except (ValueError, json.JSONDecodeError) as error:
            problems.append(Problem(where, f"bad boxes cell: {error}"))

    seen = sorted({n for _, names, boxes in parsed for n in [*(names or []), *_box_names(boxes)]})
    class_names: list[str] = list(stored.get("class_names") or seen)
    for name in seen:
        if name not in class_names:
            class_names.append(name)
    ids = {name: i + 1 for i, name in enumerate(class_names)}

    samples: list[Sample] = []
    for row, names, boxes in parsed:
        path = base / str(row["path"])
        label = None if _empty(row.get("label")) else int(float(row["label"]))
        if names is None and label == 0:
            names = []
        meta: dict[str, Any] = {"source": "manifest"}
        if not _empty(row.get("part")):
            meta["part"] = str(row["part"])
        if not _empty(row.get("mask")):
            meta["mask_path"] = str(base / str(row["mask"]))
            if names is not None and len(names) == 1:
                # Binary mask files of a one-class image still load as that class's id.
                meta["mask_class"] = ids[names[0]]
        for key, value in row.items():
            if key not in COLUMNS and not _empty(value):
                meta[key] = value
        sample = Sample(
            path=str(path),
            label=label,
            classes=None if names is None else sorted({ids[n] for n in names}),
            surface=None if _empty(row.get("surface")) else str(row["surface"]),
            meta=meta,
        )
        if boxes is not None:
            sample.boxes = np.asarray([b[:4] for b in boxes], dtype=np.float32).reshape(-1, 4)
            sample.box_classes = np.asarray(
                [ids[str(b[4])] if len(b) == 5 else 1 for b in boxes], dtype=np.int64
            )
        samples.append(sample)

    surfaces = stored.get("surface_names") or sorted({s.surface for s in samples if s.surface})
    info = DatasetInfo(
        name=str(stored.get("name", base.name)),
        format="manifest",
        root=str(base),
        class_names=class_names,
        surface_names=list(surfaces),
        extra={k: v for k, v in stored.items() if k not in ("name", "class_names", "surface_names")},
    )
    return Dataset(samples, info, problems)


def _box_names(boxes: list[list[Any]] | None) -> list[str]:
    return [str(b[4]) for b in boxes or [] if len(b) == 5]


def _relative(path: str, base: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()


def sample_row(sample: Sample, info: DatasetInfo, base: Path, mask_path: str | None = None) -> dict[str, Any]:
    """One manifest row for ``sample``; ``mask_path`` overrides where its mask lives on disk."""
    mask_ref = mask_path or sample.meta.get("mask_path") or sample.meta.get("mask_source")
    boxes: list[list[Any]] | None = None
    if sample.boxes is not None:
        ids = (
            np.ones(len(sample.boxes), dtype=np.int64)
            if sample.box_classes is None
            else np.asarray(sample.box_classes)
        )
        boxes = [
            [*(round(float(v), 2) for v in box), info.class_name(int(c))]
            for box, c in zip(np.asarray(sample.boxes).reshape(-1, 4), ids, strict=True)
        ]
    classes: list[str] | str | None = None
    if sample.classes is not None:
        classes = [info.class_name(c) for c in sample.classes] or ("none" if sample.label != 0 else [])
    return {
        "path": _relative(sample.path, base),
        "label": sample.label,
        "class": classes,
        "mask": _relative(str(mask_ref), base) if mask_ref else None,
        "boxes": boxes,
        "part": sample.part,
        "surface": sample.surface,
    }


def write_manifest(
    dataset: Dataset,
    out: str | Path,
    extra_info: dict[str, Any] | None = None,
    meta_columns: tuple[str, ...] = (),
) -> Path:
    """Write ``dataset`` as ``out`` (``.csv`` or ``.jsonl``, or a folder: ``out/manifest.jsonl``).

    Masks must already be files (``meta["mask_path"]``); paths are written relative to the manifest.
    ``meta_columns`` are ``meta`` keys written as extra columns (the reader puts them back in meta).
    Writes to a temporary name first, so an interrupted run leaves no half-written manifest.
    """
    out = Path(out)
    manifest = out if out.suffix.lower() in (".csv", ".jsonl") else out / "manifest.jsonl"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    base = manifest.parent
    rows = [
        {**sample_row(s, dataset.info, base), **{k: s.meta.get(k) for k in meta_columns}}
        for s in dataset.samples
    ]
    tmp = manifest.with_name(manifest.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        if manifest.suffix.lower() == ".csv":
            writer = csv.DictWriter(handle, fieldnames=[*COLUMNS, *meta_columns])
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_cell(k, v) for k, v in row.items()})
        else:
            for row in rows:
                handle.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
    tmp.replace(manifest)
    info = {
        "name": dataset.info.name,
        "class_names": dataset.info.class_names,
        "surface_names": dataset.info.surface_names,
        **dataset.info.extra,
        **(extra_info or {}),
    }
    (base / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    return manifest


def _csv_cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "boxes":
        return json.dumps(value)
    if key == "class":
        return value if isinstance(value, str) else ";".join(value) if value else ""
    return str(value)
