"""MVTec AD reader on a small generated two-category folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectkit.data.formats import FormatError
from defectkit.data.formats.mvtec import _detect, read
from defectkit.data.io import load_mask, load_sample
from defectkit.data.sample import Sample

SIZE = 8


def _png(path: Path, value: int = 100, defect: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((SIZE, SIZE), value, dtype=np.uint8)
    if defect:  # a 0/255 ground-truth mask, as MVTec ships them
        array[:] = 0
        array[2:5, 3:6] = 255
    Image.fromarray(array).save(path)


def _category(root: Path, name: str, defects: dict[str, list[str]], masks: dict[str, list[str]]) -> Path:
    folder = root / name
    for stem in ("000", "001"):
        _png(folder / "train" / "good" / f"{stem}.png")
    _png(folder / "test" / "good" / "000.png")
    for defect_type, stems in defects.items():
        for stem in stems:
            _png(folder / "test" / defect_type / f"{stem}.png", value=30)
    for defect_type, stems in masks.items():
        for stem in stems:
            _png(folder / "ground_truth" / defect_type / f"{stem}_mask.png", defect=True)
    (folder / "ground_truth").mkdir(exist_ok=True)
    return folder


def _mvtec(root: Path) -> Path:
    _category(
        root,
        "bottle",
        {"broken_large": ["000"], "contamination": ["000", "001"]},
        {"broken_large": ["000"], "contamination": ["000", "001"]},
    )
    _category(root, "cable", {"contamination": ["000"]}, {"contamination": ["000"]})
    (root / "license.txt").write_text("CC BY-NC-SA 4.0\n")
    return root


def _by_part(samples: list[Sample]) -> dict[str, Sample]:
    return {str(s.part): s for s in samples}


def test_whole_folder(tmp_path: Path) -> None:
    root = _mvtec(tmp_path)
    assert _detect(root)
    dataset = read(root)
    assert dataset.problems == []
    assert len(dataset) == 2 * 3 + 3 + 1  # train/good + test/good per category, then defects
    assert dataset.info.class_names == ["bottle/broken_large", "bottle/contamination", "cable/contamination"]
    assert dataset.info.surface_names == ["bottle", "cable"]
    samples = _by_part(dataset.samples)

    good_train, good_test = samples["bottle/train/good/000"], samples["cable/test/good/000"]
    for good in (good_train, good_test):
        # No mask file, but the mask is known to be empty (a negative for segmentation losses).
        assert (good.label, good.classes, good.has_mask) == (0, [], True)
        assert not load_mask(good, 4, 4).any()
    assert good_train.meta["split"] == "train"
    assert good_test.meta["split"] == "test"

    # The same type name on two products gets two class ids.
    bottle, cable = samples["bottle/test/contamination/001"], samples["cable/test/contamination/000"]
    assert (bottle.label, bottle.classes, bottle.surface) == (1, [2], "bottle")
    assert (cable.label, cable.classes, cable.surface) == (1, [3], "cable")
    assert bottle.meta["mask_path"].endswith("bottle/ground_truth/contamination/001_mask.png")
    assert bottle.meta["mask_class"] == 2
    assert bottle.has_mask


def test_mask_loads_with_class_id(tmp_path: Path) -> None:
    samples = _by_part(read(_mvtec(tmp_path)).samples)
    loaded = load_sample(samples["cable/test/contamination/000"])
    assert loaded.mask is not None
    assert loaded.mask.shape == (SIZE, SIZE)
    assert set(np.unique(loaded.mask).tolist()) == {0, 3}
    assert int((loaded.mask == 3).sum()) == 9


def test_single_category_root(tmp_path: Path) -> None:
    category = _mvtec(tmp_path) / "bottle"
    assert _detect(category)
    dataset = read(category)
    assert dataset.info.name == "mvtec_ad/bottle"
    assert dataset.info.class_names == ["bottle/broken_large", "bottle/contamination"]
    assert len(dataset) == 6
    assert {s.surface for s in dataset.samples} == {"bottle"}


def test_missing_and_orphan_masks(tmp_path: Path) -> None:
    _category(
        tmp_path,
        "screw",
        {"scratch_head": ["000", "001"]},
        {"scratch_head": ["000", "007"]},  # 001 has no mask; 007 has no image
    )
    dataset = read(tmp_path / "screw")
    problems = {Path(p.path).name: p.reason for p in dataset.problems}
    assert len(problems) == 2
    assert "image without its label" in problems["001.png"]
    assert "mask without image" in problems["007_mask.png"]
    # The image keeps its image-level labels; only its mask is unknown.
    unmasked = _by_part(dataset.samples)["screw/test/scratch_head/001"]
    assert (unmasked.label, unmasked.classes, unmasked.has_mask) == (1, [1], False)


def test_not_mvtec(tmp_path: Path) -> None:
    (tmp_path / "train" / "good").mkdir(parents=True)  # no test/ or ground_truth/
    assert not _detect(tmp_path)
    with pytest.raises(FormatError):
        read(tmp_path)
