"""Severstal reader on small generated folders in both train.csv variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectkit.data.formats import FormatError
from defectkit.data.formats.severstal import HEIGHT, WIDTH, _detect, read, rle_error
from defectkit.data.io import load_sample
from defectkit.data.masks import rle_decode, rle_encode
from defectkit.data.sample import Sample


def _mask(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[rows, cols] = True
    return mask


# Classes 1 and 3 overlap on a.jpg (rows 10:20, cols 10:20): the multi-label case.
MASK_A1 = _mask(slice(0, 20), slice(5, 20))
MASK_A3 = _mask(slice(10, 40), slice(10, 30))
MASK_B2 = _mask(slice(200, 256), slice(1590, 1600))  # reaches the last pixel
LABELLED = {"a.jpg": {1: rle_encode(MASK_A1), 3: rle_encode(MASK_A3)}, "b.jpg": {2: rle_encode(MASK_B2)}}


def _write_images(folder: Path, names: list[str], size: tuple[int, int] = (8, 4)) -> None:
    # The reader never decodes images, so tiny placeholders stand in for 1600x256 JPEGs.
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full(size[::-1], 40 * i, dtype=np.uint8)).convert("RGB").save(folder / name)


def _new_csv(rows: list[tuple[str, object, str]]) -> str:
    return "ImageId,ClassId,EncodedPixels\n" + "".join(f"{i},{c},{r}\n" for i, c, r in rows)


def _old_csv(labels: dict[str, dict[int, str]]) -> str:
    lines = [f"{image}_{c},{labels[image].get(c, '')}\n" for image in labels for c in range(1, 5)]
    return "ImageId_ClassId,EncodedPixels\n" + "".join(lines)


def _dataset(tmp_path: Path, csv_text: str, images: list[str]) -> Path:
    _write_images(tmp_path / "train_images", images)
    (tmp_path / "train.csv").write_text(csv_text)
    return tmp_path


def _new_rows() -> list[tuple[str, object, str]]:
    return [(image, c, rle) for image, rles in LABELLED.items() for c, rle in rles.items()]


def _check_labels(samples: dict[str, Sample]) -> None:
    a, b, c = (samples[n] for n in ("a.jpg", "b.jpg", "c.jpg"))
    assert (a.label, a.classes) == (1, [1, 3])
    assert (b.label, b.classes) == (1, [2])
    assert (c.label, c.classes) == (0, [])
    assert c.meta["mask_rle"] == {}
    assert c.meta["mask_depth"] == 4
    assert c.has_mask
    assert a.meta["mask_rle"] == LABELLED["a.jpg"]
    assert {s.surface for s in samples.values()} == {"steel"}
    assert a.meta["part"] == "a.jpg"


def test_new_csv_variant(tmp_path: Path) -> None:
    root = _dataset(tmp_path, _new_csv(_new_rows()), ["a.jpg", "b.jpg", "c.jpg"])
    assert _detect(root)
    dataset = read(root)
    assert dataset.problems == []
    assert len(dataset) == 3
    assert dataset.info.class_names == ["1", "2", "3", "4"]
    assert dataset.info.multilabel_masks
    assert dataset.info.extra["csv_variant"] == "new"
    _check_labels({Path(s.path).name: s for s in dataset.samples})


def test_old_csv_variant(tmp_path: Path) -> None:
    labels = {**LABELLED, "c.jpg": {}}
    root = _dataset(tmp_path, _old_csv(labels), ["a.jpg", "b.jpg", "c.jpg", "unlisted.jpg"])
    assert _detect(root)
    dataset = read(root)
    assert dataset.info.extra["csv_variant"] == "old"
    assert len(dataset) == 3
    _check_labels({Path(s.path).name: s for s in dataset.samples})
    # The old CSV lists every image: one it omits is unlabelled, not good.
    [problem] = dataset.problems
    assert problem.path.endswith("unlisted.jpg")
    assert problem.severity == "warning"


def test_rle_round_trip() -> None:
    for mask in (MASK_A1, MASK_A3, MASK_B2):
        rle = rle_encode(mask)
        assert rle_error(rle) is None
        assert np.array_equal(rle_decode(rle, HEIGHT, WIDTH), mask)


def test_rle_error_cases() -> None:
    assert rle_error("") is None
    assert "odd" in str(rle_error("1 2 3"))
    assert "non-integer" in str(rle_error("1 x"))
    assert "past" in str(rle_error(f"{HEIGHT * WIDTH} 2"))
    assert rle_error(f"{HEIGHT * WIDTH} 1") is None
    assert rle_error("0 3") is not None


def test_problems_are_recorded_not_raised(tmp_path: Path) -> None:
    rows = [
        *_new_rows(),
        ("ghost.jpg", 1, "1 5"),  # label without image
        ("c.jpg", 2, "1 2 3"),  # malformed run-length string
        ("d.jpg", 4, f"{HEIGHT * WIDTH - 1} 5"),  # run past the 256x1600 image
        ("e.jpg", 7, "1 5"),  # bad class id
    ]
    root = _dataset(tmp_path, _new_csv(rows), ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    dataset = read(root)
    by_name = {Path(s.path).name: s for s in dataset.samples}
    assert len(dataset) == 5
    reasons = {p.path.rsplit("/", 1)[-1]: p.reason for p in dataset.problems}
    assert len(dataset.problems) == 4
    assert "label without image" in reasons["ghost.jpg"]
    assert reasons["train.csv:" + str(len(_new_rows()) + 3)].startswith("bad run-length string for c.jpg")
    assert "past" in reasons["train.csv:" + str(len(_new_rows()) + 4)]
    assert "bad class id" in reasons["train.csv:" + str(len(_new_rows()) + 5)]
    # What stays certain is kept; what a bad row made uncertain becomes unknown.
    c, d, e = by_name["c.jpg"], by_name["d.jpg"], by_name["e.jpg"]
    assert (c.label, c.classes, c.has_mask) == (1, [2], False)
    assert (d.label, d.classes, d.has_mask) == (1, [4], False)
    assert (e.label, e.classes, e.has_mask) == (1, None, False)
    assert by_name["a.jpg"].meta["mask_rle"] == LABELLED["a.jpg"]


def test_load_sample_full_size(tmp_path: Path) -> None:
    rows = [(image, c, rle) for image, c, rle in _new_rows() if image == "a.jpg"]
    root = tmp_path
    _write_images(root / "train_images", ["a.jpg", "c.jpg"], size=(WIDTH, HEIGHT))
    (root / "train.csv").write_text(_new_csv(rows))
    samples = {Path(s.path).name: s for s in read(root).samples}
    a = load_sample(samples["a.jpg"])
    assert a.image is not None
    assert a.image.shape[:2] == (HEIGHT, WIDTH)
    assert a.mask is not None
    assert a.mask.shape == (4, HEIGHT, WIDTH)
    assert a.mask.dtype == bool
    assert np.array_equal(a.mask[0], MASK_A1)
    assert np.array_equal(a.mask[2], MASK_A3)
    assert a.mask[0, 15, 15]
    assert a.mask[2, 15, 15]
    assert not a.mask[1].any()
    assert not a.mask[3].any()
    c = load_sample(samples["c.jpg"])
    assert c.mask is not None
    assert c.mask.shape == (4, HEIGHT, WIDTH)
    assert not c.mask.any()


def test_not_severstal(tmp_path: Path) -> None:
    assert not _detect(tmp_path)
    with pytest.raises(FormatError):
        read(tmp_path)
    _dataset(tmp_path, "path,label\nx.jpg,1\n", ["x.jpg"])
    assert not _detect(tmp_path)
    with pytest.raises(FormatError, match="header"):
        read(tmp_path)
