"""Convert any supported dataset to the generic manifest (see ``formats/manifest.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from defectkit.data.formats import read_dataset
from defectkit.data.formats.manifest import check_manifest_target, find_manifest, write_manifest
from defectkit.data.io import ImageReadError, load_mask
from defectkit.data.masks import stack_to_ids
from defectkit.data.sample import Dataset, Problem, Sample


def _materialise_mask(sample: Sample, mask_dir: Path, index: int) -> Sample:
    """Masks that are not files (run-length strings, arrays) are written as PNG class-id maps."""
    if "mask_rle" not in sample.meta and sample.mask is None:
        return sample
    with Image.open(sample.path) as handle:
        width, height = handle.size
    mask = load_mask(sample, height, width)
    if mask is None:
        return sample
    mask_dir.mkdir(parents=True, exist_ok=True)
    target = mask_dir / f"{index:06d}_{Path(sample.path).stem}.png"
    Image.fromarray(stack_to_ids(np.asarray(mask))).save(target)
    meta = {k: v for k, v in sample.meta.items() if k not in ("mask_rle", "mask_depth")}
    meta["mask_path"] = str(target)
    return sample.replace(mask=None, meta=meta)


def to_manifest(
    root: str | Path,
    out: str | Path,
    format: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    replace: bool = False,
) -> tuple[Path, Dataset]:
    """Index ``root`` and write it as a manifest at ``out``; returns the manifest path and the dataset.

    Images are referenced where they are (relative paths), not copied. Masks that exist only as
    run-length strings are written under ``<out>/masks/``; where multi-label classes overlap in a
    pixel, the higher class id is kept (a manifest mask is a single class-id image). An existing
    dataset at ``out`` is replaced only with ``replace``, and never the manifest being read
    (:func:`~defectkit.data.formats.manifest.check_manifest_target`).
    """
    dataset = read_dataset(root, format)
    source = find_manifest(Path(root).expanduser()) if dataset.info.format == "manifest" else None
    out = check_manifest_target(out, replace=replace, source=source)
    base = out.parent
    samples: list[Sample] = []
    problems = list(dataset.problems)
    for index, sample in enumerate(dataset.samples):
        try:
            samples.append(_materialise_mask(sample, base / "masks", index))
        except (OSError, ImageReadError, ValueError) as error:
            problems.append(Problem(sample.path, f"mask not converted: {error}"))
            samples.append(sample.replace(meta={k: v for k, v in sample.meta.items() if k != "mask_rle"}))
        if progress is not None:
            progress(index + 1, len(dataset.samples))
    converted = Dataset(samples, dataset.info, problems)
    manifest = write_manifest(converted, out, extra_info={"converted_from": dataset.info.format})
    return manifest, converted
