"""The DAGM 2007 reader on a tiny handmade copy of the real layout, bad rows and files included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import save, texture
from defectkit.data.formats import FormatError, detect_format, read_dataset
from defectkit.data.formats.dagm import read
from defectkit.data.io import load_sample


def _labels(path: Path, first: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Real DAGM files end lines with CRLF; the reader must not care.
    path.write_text("\r\n".join([first, *rows]) + "\r\n")


@pytest.fixture
def dagm_root(tmp_path: Path) -> Path:
    root = tmp_path / "DAGM"
    mask = np.zeros((64, 48), dtype=np.uint8)
    mask[20:30, 10:25] = 255
    # Class1/Train: two good, one defective with its mask, one image not in Labels.txt,
    # one malformed row, one row whose label file is missing, one listed image that is missing.
    train = root / "Class1" / "Train"
    for stem, seed in (("0001", 1), ("0002", 2), ("0003", 3), ("0004", 4), ("0005", 5)):
        save(train / f"{stem}.PNG", texture(seed))
    save(train / "Label" / "0003_label.PNG", mask)
    save(train / "Label" / "0099_label.PNG", mask)  # mask without image
    _labels(
        train / "Label" / "Labels.txt",
        "1",
        [
            "1\t0\t0001.PNG\t0\t0",
            "2\t0\t0002.PNG\t0\t0",
            "3\t1\t0003.PNG\t0\t0003_label.PNG",
            "5\t1\t0005.PNG\t0\t0005_label.PNG",
            "6\tx\t0006.PNG\t0\t0",
            "7\t0\t0007.PNG\t0\t0",
        ],
    )
    # Class2/test (lower case, as some copies have it): one defective image.
    test = root / "Class2" / "test"
    save(test / "0010.png", texture(10))
    save(test / "Label" / "0010_label.png", mask)
    _labels(test / "Label" / "Labels.txt", "2", ["10\t1\t0010.png\t0\t0010_label.png"])
    return root


def test_detects_and_reads(dagm_root: Path) -> None:
    assert detect_format(dagm_root).name == "dagm"
    dataset = read_dataset(dagm_root)
    info = dataset.info
    assert info.format == "dagm"
    assert info.class_names == ["Class1", "Class2"]
    assert info.surface_names == ["Class1", "Class2"]
    by_name = {f"{s.surface}/{Path(s.path).name}": s for s in dataset.samples}
    assert set(by_name) == {f"Class1/000{i}.PNG" for i in range(1, 6)} | {"Class2/0010.png"}

    good = by_name["Class1/0001.PNG"]
    assert (good.label, good.classes, good.meta["split"]) == (0, [], "train")
    assert good.part == "Class1-train-0001"
    assert good.has_mask and "mask_path" not in good.meta

    defect = by_name["Class1/0003.PNG"]
    assert (defect.label, defect.classes) == (1, [1])
    loaded = load_sample(defect)
    assert loaded.mask is not None and loaded.mask.shape == (64, 48)
    assert set(np.unique(loaded.mask)) == {0, 1}

    other = by_name["Class2/0010.png"]
    assert (other.label, other.classes, other.meta["split"]) == (1, [2], "test")
    assert set(np.unique(load_sample(other).mask)) == {0, 2}  # type: ignore[arg-type]

    assert by_name["Class1/0004.PNG"].label is None  # not in Labels.txt
    missing_mask = by_name["Class1/0005.PNG"]
    assert missing_mask.label == 1 and "mask_path" not in missing_mask.meta


def test_bad_rows_and_files_are_problems(dagm_root: Path) -> None:
    problems = read(dagm_root).problems
    text = "\n".join(str(p) for p in problems)
    labels = dagm_root / "Class1" / "Train" / "Label" / "Labels.txt"
    assert f"{labels}:6" in text and "isDefective must be 0 or 1" in text
    assert f"{labels}:5" in text and "0005_label.PNG listed but missing" in text
    assert f"{labels}:7" in text and "listed image 0007.PNG is missing" in text
    assert "0004.PNG: image without its label" in text
    assert "0099_label.PNG: mask without image" in text
    assert len(problems) == 5


def test_too_short_row_and_missing_labels_file(tmp_path: Path) -> None:
    root = tmp_path / "d"
    save(root / "Class3" / "Test" / "0001.PNG", texture(1))
    save(root / "Class4" / "Train" / "0001.PNG", texture(2))
    _labels(root / "Class3" / "Test" / "Label" / "Labels.txt", "3", ["1\t0"])
    dataset = read(root)
    reasons = [p.reason for p in dataset.problems]
    assert any("expected 'index isDefective image" in r for r in reasons)
    assert any("no Label/Labels.txt" in r for r in reasons)
    assert [s.label for s in dataset.samples] == [None, None]


def test_not_dagm_raises(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(FormatError, match="not a DAGM 2007 layout"):
        read(tmp_path)
