"""ELPV reader on a small generated labels.csv + images/ folder; default_root with and without the extra."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectkit.data.formats import FormatError, elpv
from defectkit.data.formats.elpv import _detect, default_root, read
from defectkit.data.io import load_sample

# The four probabilities ELPV uses, written as the real labels.csv writes them.
ROWS = [
    ("cell0001", "0.0", "mono"),
    ("cell0002", "0.3333333333333333", "poly"),
    ("cell0003", "0.6666666666666666", "mono"),
    ("cell0004", "1.0", "poly"),
]


def _elpv(root: Path, extra_lines: tuple[str, ...] = ()) -> Path:
    (root / "images").mkdir(parents=True)
    for i, (stem, _, _) in enumerate(ROWS):
        Image.fromarray(np.full((12, 12), 50 * i, dtype=np.uint8)).save(root / "images" / f"{stem}.png")
    lines = [f"images/{stem}.png  {p}  {kind}" for stem, p, kind in ROWS]
    (root / "labels.csv").write_text("\n".join([*lines, *extra_lines]) + "\n")
    return root


def test_read_default_threshold(tmp_path: Path) -> None:
    root = _elpv(tmp_path)
    assert _detect(root)
    dataset = read(root)
    assert dataset.problems == []
    assert len(dataset) == 4
    assert [s.label for s in dataset.samples] == [0, 0, 1, 1]
    assert [s.classes for s in dataset.samples] == [[], [], [1], [1]]
    assert [s.surface for s in dataset.samples] == ["mono", "poly", "mono", "poly"]
    assert dataset.samples[1].meta["defect_probability"] == pytest.approx(1 / 3)
    assert dataset.samples[0].meta["part"] == "cell0001"
    assert dataset.info.class_names == ["defect"]
    assert dataset.info.surface_names == ["mono", "poly"]
    assert not any(s.has_mask for s in dataset.samples)  # ELPV has no masks: unknown, not empty
    loaded = load_sample(dataset.samples[3])
    assert loaded.image is not None
    assert loaded.image.shape == (12, 12)


def test_threshold_parameter_and_constant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _elpv(tmp_path)
    assert [s.label for s in read(root, threshold=0.3).samples] == [0, 1, 1, 1]
    assert [s.label for s in read(root, threshold=1.0).samples] == [0, 0, 0, 1]
    monkeypatch.setattr(elpv, "DEFECT_THRESHOLD", 0.1)
    dataset = read(root)
    assert [s.label for s in dataset.samples] == [0, 1, 1, 1]
    assert dataset.info.extra["defect_threshold"] == 0.1


def test_problems_are_recorded_not_raised(tmp_path: Path) -> None:
    bad = (
        "images/cell0099.png  1.0  mono",  # listed image missing
        "images/cell0001.png  mono",  # two fields
        "images/cell0002.png  maybe  poly",  # probability not a number
        "images/cell0003.png  1.5  mono",  # probability outside [0, 1]
    )
    root = _elpv(tmp_path, bad)
    dataset = read(root)
    assert len(dataset) == 4
    problems = {p.path.rsplit("/", 1)[-1]: p.reason for p in dataset.problems}
    assert len(problems) == 4
    assert "listed image missing" in problems["cell0099.png"]
    assert "unparsable row" in problems["labels.csv:6"]
    assert "unparsable row" in problems["labels.csv:7"]
    assert "outside [0, 1]" in problems["labels.csv:8"]


def test_not_elpv(tmp_path: Path) -> None:
    assert not _detect(tmp_path)
    with pytest.raises(FormatError):
        read(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels.csv").write_text("path,label\nx.png,1\n")
    assert not _detect(tmp_path)


def test_default_root_without_extra(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "elpv_dataset", None)  # import now raises ImportError
    with caplog.at_level(logging.WARNING):
        assert default_root() is None
    assert "defectkit[elpv]" in caplog.text


def test_default_root_with_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for the installed package: its data lives in <package>/data.
    package = tmp_path / "elpv_dataset"
    _elpv(package / "data")
    module = types.ModuleType("elpv_dataset")
    module.__path__ = [str(package)]
    monkeypatch.setitem(sys.modules, "elpv_dataset", module)
    root = default_root()
    assert root == package / "data"
    assert len(read(root)) == 4
