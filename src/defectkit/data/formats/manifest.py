"""The generic manifest: one row per image, in CSV or JSON Lines.

Columns / keys (all but ``path`` optional; paths are relative to the manifest's folder):

==========  ==================================================================================
``path``    image file
``label``   1 defective, 0 good; empty = not known
``class``   defect class names, ``;``-separated in CSV, a list in JSONL; empty = not known
            (a good image with an empty cell has no classes); ``none`` = annotated, no classes
``mask``    mask image (0 background, k class id, or binary 0/255); ``empty`` = known to be all
            background (no file); an empty cell = not known
``boxes``   JSON list of ``[x0, y0, x1, y1, "class"]`` in pixels; ``[]`` = annotated, no boxes
``part``    physical part id (grouped splits)
``surface`` surface / material / product type
==========  ==================================================================================

Class ids follow ``class_names`` in an optional ``dataset.json`` beside the manifest
(``{"name", "class_names", "surface_names", ...}``); without it, the sorted set of names seen.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from defectkit.data.formats import FormatError, register_format
from defectkit.data.io import printable_path
from defectkit.data.sample import MASK_KEYS, Dataset, DatasetInfo, Problem, Sample
from defectkit.files import write_atomic

COLUMNS = ("path", "label", "class", "mask", "boxes", "part", "surface")
MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
INFO_NAME = "dataset.json"
EMPTY_MASK = "empty"  # mask cell: known to be all background, no file needed


def find_manifest(root: Path) -> Path | None:
    if root.is_file() and root.suffix.lower() in (".csv", ".jsonl"):
        return root
    if root.is_dir():
        for name in MANIFEST_NAMES:
            if (root / name).is_file():
                return root / name
    return None


def _detect(root: Path) -> bool:
    return find_manifest(root) is not None


def _text(manifest: Path) -> str:
    """The manifest's text, strictly UTF-8: a file saved in a legacy code page (Excel's "CSV" is
    cp1252 on Windows) is refused with its line, not read with its names silently garbled."""
    raw = manifest.read_bytes()
    try:
        # utf-8-sig: spreadsheet programs start a "CSV UTF-8" file with a byte-order mark.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise FormatError(
            f"{manifest}: line {line} is not UTF-8 text (byte 0x{raw[error.start]:02x}); save the "
            'file as UTF-8 ("CSV UTF-8" in spreadsheet programs)'
        ) from None


def _rows(manifest: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    text = _text(manifest)
    if manifest.suffix.lower() == ".csv":
        # Hand-written files put spaces after the commas ("path, label"): without
        # skipinitialspace, " label" would be an unknown column and every label lost.
        reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
        if reader.fieldnames is not None:
            reader.fieldnames = [name.strip() for name in reader.fieldnames]
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise FormatError(f"{manifest}: CSV manifest needs a header with a 'path' column")
        for line, row in enumerate(reader, start=2):
            yield line, dict(row)
    else:
        # split("\n"), not splitlines(): a raw U+2028 inside a JSON string is no line end.
        for line, entry in enumerate(text.split("\n"), start=1):
            if not entry.strip():
                continue
            try:
                row = json.loads(entry)
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


def _label(value: Any) -> int | None:
    if _empty(value):
        return None
    text = str(value).strip()
    if text in ("0", "1", "0.0", "1.0") or value in (0, 1):
        return int(float(text))
    raise ValueError(f"label must be 0, 1 or empty, got {text!r}")


def _box_rows(boxes: list[list[Any]]) -> tuple[np.ndarray, list[str | None]]:
    try:
        coordinates = np.asarray([[float(v) for v in b[:4]] for b in boxes], dtype=np.float32).reshape(-1, 4)
    except (TypeError, ValueError):
        raise ValueError("box coordinates must be numbers") from None
    return coordinates, [str(b[4]) if len(b) == 5 else None for b in boxes]


@register_format("manifest", detect=_detect, description="generic CSV / JSONL manifest", priority=10)
def read(root: Path) -> Dataset:
    manifest = find_manifest(Path(root))
    if manifest is None:
        raise FormatError(f"{root}: no manifest.csv or manifest.jsonl found")
    base = manifest.parent
    info_file = base / INFO_NAME
    try:
        stored: dict[str, Any] = json.loads(info_file.read_text()) if info_file.is_file() else {}
    except (OSError, ValueError) as error:
        raise FormatError(f"{info_file}: unreadable dataset description ({error})") from None
    if not isinstance(stored, dict):
        raise FormatError(f"{info_file}: a dataset description must be a JSON object")
    for key in ("class_names", "surface_names"):
        names = stored.get(key)
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise FormatError(f"{info_file}: {key} must be a list of names, not {names!r}")

    problems: list[Problem] = []
    Row = tuple[str, dict[str, Any], int | None, list[str] | None, np.ndarray | None, list[str | None]]
    parsed: list[Row] = []
    for line, row in _rows(manifest):
        where = f"{manifest}:{line}"
        if "_error" in row:
            problems.append(Problem(where, row["_error"]))
            continue
        if _empty(row.get("path")):
            problems.append(Problem(where, "row has no path"))
            continue
        try:
            label = _label(row.get("label"))
            names = _names(row.get("class"))
            boxes = _boxes(row.get("boxes"))
            coordinates, box_names = _box_rows(boxes) if boxes is not None else (None, [])
        except (ValueError, json.JSONDecodeError) as error:
            problems.append(Problem(where, f"bad row: {error}"))
            continue
        if any(n is None for n in box_names) and any(n is not None for n in box_names):
            problems.append(Problem(where, "some boxes name a class and some do not"))
            continue
        if label == 0 and (names or box_names):
            problems.append(Problem(where, "labelled good (0) but lists defect classes or boxes", "warning"))
        parsed.append((where, row, label, names, coordinates, box_names))

    known: list[str] = list(stored.get("class_names") or [])
    seen = sorted({n for *_, names, _, box_names in parsed for n in [*(names or []), *box_names] if n})
    for name in seen:
        if name not in known:
            if stored.get("class_names"):
                problems.append(Problem(str(info_file), f"class {name!r} is used but not in class_names"))
            known.append(name)
    ids = {name: i + 1 for i, name in enumerate(known)}

    samples: list[Sample] = []
    for _where, row, label, names, coordinates, box_names in parsed:
        if names is None and label == 0:
            names = []
        meta: dict[str, Any] = {"source": "manifest"}
        if not _empty(row.get("part")):
            meta["part"] = str(row["part"])
        mask_cell = row.get("mask")
        if isinstance(mask_cell, str) and mask_cell.strip().lower() == EMPTY_MASK:
            meta["mask_empty"] = True
        elif not _empty(mask_cell):
            meta["mask_path"] = str(base / str(mask_cell))
            if names is not None and len(names) == 1:
                # Binary mask files of a one-class image still load as that class's id.
                meta["mask_class"] = ids[names[0]]
        for key, value in row.items():
            if key not in COLUMNS and not _empty(value):
                meta[key] = value
        sample = Sample(
            path=str(base / str(row["path"])),
            label=label,
            classes=None if names is None else sorted({ids[n] for n in names}),
            surface=None if _empty(row.get("surface")) else str(row["surface"]),
            meta=meta,
        )
        if coordinates is not None:
            sample.boxes = coordinates
            # Boxes without classes keep box_classes unknown rather than claiming class 1.
            if box_names and box_names[0] is not None:
                sample.box_classes = np.asarray([ids[str(n)] for n in box_names], dtype=np.int64)
            elif not box_names:
                sample.box_classes = np.zeros(0, dtype=np.int64)
        samples.append(sample)

    surfaces = stored.get("surface_names") or sorted({s.surface for s in samples if s.surface})
    info = DatasetInfo(
        name=str(stored.get("name", base.name)),
        format="manifest",
        root=str(base),
        class_names=known,
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
    mask_cell = EMPTY_MASK if sample.meta.get("mask_empty") and not mask_ref else None
    boxes: list[list[Any]] | None = None
    if sample.boxes is not None:
        coordinates = [[round(float(v), 2) for v in box] for box in np.asarray(sample.boxes).reshape(-1, 4)]
        if sample.box_classes is None:
            boxes = coordinates
        else:
            names = [info.class_name(int(c)) for c in np.asarray(sample.box_classes).reshape(-1)]
            boxes = [[*box, name] for box, name in zip(coordinates, names, strict=True)]
    classes: list[str] | str | None = None
    if sample.classes is not None:
        classes = [info.class_name(c) for c in sample.classes] or ("none" if sample.label != 0 else [])
    return {
        "path": _relative(sample.path, base),
        "label": sample.label,
        "class": classes,
        "mask": _relative(str(mask_ref), base) if mask_ref else mask_cell,
        "boxes": boxes,
        "part": sample.part,
        "surface": sample.surface,
    }


# Meta keys that describe how a reader found the data, not the data: never written as columns.
_READER_KEYS = frozenset({"part", "source", "sha1", "mask_source", *MASK_KEYS})


def portable_meta_keys(samples: Sequence[Sample]) -> tuple[str, ...]:
    """Meta keys with plain scalar values (split, defect_probability, ...) worth keeping as columns."""
    keys = {
        key
        for sample in samples
        for key, value in sample.meta.items()
        if key not in _READER_KEYS and isinstance(value, str | int | float | bool)
    }
    return tuple(sorted(keys))


class ManifestTargetError(ValueError):
    """Writing a manifest there would replace or corrupt a dataset (a usage error)."""


def manifest_path(out: str | Path) -> Path:
    """The manifest file that writing to ``out`` makes: ``out`` itself (``.csv`` / ``.jsonl``), or
    ``out/manifest.jsonl``."""
    out = Path(out).expanduser()
    return out if out.suffix.lower() in (".csv", ".jsonl") else out / "manifest.jsonl"


def check_manifest_target(out: str | Path, *, replace: bool = False, source: Path | None = None) -> Path:
    """The manifest path for ``out``, or :class:`ManifestTargetError` where writing it would lose data.

    Refused: the manifest being read (``source``; rows it cannot parse would be dropped from the
    user's own file); a folder that already holds a dataset, unless ``replace``; and, even then, a
    folder that holds another manifest or whose ``dataset.json`` belongs to one, since every
    manifest in a folder reads that one file (its class ids among them).
    """
    manifest = manifest_path(out)
    if source is not None and manifest.exists() and manifest.resolve() == Path(source).resolve():
        raise ManifestTargetError(f"{manifest}: is the dataset being read; write to another path")
    info = manifest.parent / INFO_NAME
    other = find_manifest(manifest.parent) if manifest.parent.is_dir() else None
    if other is not None and other.name != manifest.name:
        # The folder's reader finds that one first, and the new dataset.json would set its class ids.
        raise ManifestTargetError(
            f"{other}: {manifest.parent} already holds a manifest; write {manifest.name} to another folder"
        )
    if not (manifest.exists() or info.exists()):
        return manifest
    if not replace:
        held = manifest if manifest.exists() else info
        raise ManifestTargetError(
            f"{held}: already exists (a dataset); replace it with --force, or write to another path"
        )
    if info.exists():
        try:
            owner = json.loads(info.read_text()).get("manifest")
        except (OSError, ValueError, AttributeError):
            owner = None
        if owner != manifest.name and not (owner is None and manifest.exists()):
            raise ManifestTargetError(
                f"{info}: describes {owner or 'another manifest'}, and every manifest in "
                f"{manifest.parent} reads it; write {manifest.name} to another folder"
            )
    return manifest


def write_manifest(
    dataset: Dataset,
    out: str | Path,
    extra_info: dict[str, Any] | None = None,
    meta_columns: Sequence[str] | None = None,
) -> Path:
    """Write ``dataset`` as ``out`` (``.csv`` or ``.jsonl``, or a folder: ``out/manifest.jsonl``).

    Masks must already be files (``meta["mask_path"]``) or known empty (written ``empty``); paths
    are written relative to the manifest. ``meta_columns`` are ``meta`` keys written as extra
    columns, which the reader puts back in meta (default: every :func:`portable_meta_keys` key).
    Writes to a temporary name first, so an interrupted run leaves no half-written manifest.
    """
    meta_columns = portable_meta_keys(dataset.samples) if meta_columns is None else tuple(meta_columns)
    manifest = manifest_path(out)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    base = manifest.parent
    rows = [
        {**sample_row(s, dataset.info, base), **{k: s.meta.get(k) for k in meta_columns}}
        for s in dataset.samples
    ]
    text = io.StringIO()
    if manifest.suffix.lower() == ".csv":
        writer = csv.DictWriter(text, fieldnames=[*COLUMNS, *meta_columns])
        writer.writeheader()
        for row in rows:
            try:
                writer.writerow({k: _csv_cell(k, v) for k, v in row.items()})
            except ValueError as error:
                raise FormatError(
                    f"{manifest}: cannot write {printable_path(str(row['path']))} as CSV: {error}; "
                    "write a JSONL manifest (.jsonl) instead"
                ) from None
    else:
        for row in rows:
            text.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
    write_atomic(manifest, text.getvalue())
    info = {
        "name": dataset.info.name,
        "class_names": dataset.info.class_names,
        "surface_names": dataset.info.surface_names,
        **dataset.info.extra,
        **(extra_info or {}),
        "manifest": manifest.name,  # the manifest this description belongs to (check_manifest_target)
    }
    write_atomic(base / INFO_NAME, json.dumps(info, indent=2) + "\n")
    return manifest


def _csv_cell(key: str, value: Any) -> str:
    """A CSV cell that reads back as ``value``; ``ValueError`` says why one cannot be written."""
    if value is None:
        return ""
    if key == "boxes":
        return json.dumps(value)
    if key == "class" and isinstance(value, str):
        cell = value  # sample_row's "none": a defective image of no listed class
    elif key == "class":
        names = list(value)
        for name in names:
            # The reader splits the cell on ";", strips names, drops empty ones and reads "none" as
            # no class at all.
            if ";" in name or name.strip().lower() == "none" or name != name.strip() or not name:
                raise ValueError(f"class name {name!r} would read back as {_names(name)!r}")
        cell = ";".join(names)
    else:
        cell = str(value)
    try:
        cell.encode("utf-8")
    except UnicodeEncodeError:
        # A file name that is not UTF-8 (from a Latin-1 share): CSV is written as UTF-8 text;
        # JSON escapes such names and reads them back byte for byte.
        raise ValueError(f"{key} {printable_path(cell)} is not UTF-8") from None
    return cell
