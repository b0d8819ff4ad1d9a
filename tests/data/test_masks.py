from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from defectkit.data.masks import boxes_to_mask, content_hash, mask_to_boxes, rle_decode, rle_encode


def test_mask_to_boxes_per_component_and_class() -> None:
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[2:5, 3:9] = 1
    mask[10:12, 20:30] = 1
    mask[15:20, 0:2] = 3
    boxes, classes = mask_to_boxes(mask)
    order = np.lexsort((boxes[:, 0], classes))
    assert boxes[order].tolist() == [[3, 2, 9, 5], [20, 10, 30, 12], [0, 15, 2, 20]]
    assert classes[order].tolist() == [1, 1, 3]
    assert mask_to_boxes(np.zeros((4, 4)))[0].shape == (0, 4)


def test_mask_to_boxes_diagonal_pixels_are_one_region_and_min_area() -> None:
    mask = np.eye(5, dtype=np.uint8)
    boxes, _ = mask_to_boxes(mask)
    assert boxes.tolist() == [[0, 0, 5, 5]]
    assert len(mask_to_boxes(mask, min_area=6)[0]) == 0


def test_mask_to_boxes_multilabel_stack() -> None:
    stack = np.zeros((2, 10, 10), dtype=bool)
    stack[0, 0:2, 0:2] = True
    stack[1, 0:2, 0:2] = True
    boxes, classes = mask_to_boxes(stack)
    assert sorted(classes.tolist()) == [1, 2] and all(b.tolist() == [0, 0, 2, 2] for b in boxes)


def test_boxes_to_mask_round_trip_and_clipping() -> None:
    boxes = np.array([[3, 2, 9, 5], [25, 15, 40, 30]], dtype=np.float32)
    mask = boxes_to_mask(boxes, np.array([2, 1]), 20, 30)
    assert mask[2:5, 3:9].min() == 2 and mask[15:, 25:].min() == 1
    assert int((mask > 0).sum()) == 3 * 6 + 5 * 5
    back, classes = mask_to_boxes(mask)
    assert sorted(map(tuple, back.tolist())) == [(3, 2, 9, 5), (25, 15, 30, 20)]
    assert sorted(classes.tolist()) == [1, 2]


def test_rle_known_case() -> None:
    mask = np.zeros((3, 2), dtype=bool)
    mask[1:, 0] = True  # column-major pixels 2, 3
    mask[0, 1] = True  # pixel 4
    assert rle_encode(mask) == "2 3"
    assert rle_encode(np.zeros((2, 2))) == ""
    assert np.array_equal(rle_decode("2 3", 3, 2), mask)


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_rle_round_trip(mask: np.ndarray) -> None:
    assert np.array_equal(rle_decode(rle_encode(mask), *mask.shape), mask)


def test_rle_decode_rejects_bad_input() -> None:
    import pytest

    for bad in ("1", "1 x", "0 2", "5 10"):
        with pytest.raises(ValueError):
            rle_decode(bad, 3, 3)


def test_content_hash(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    c.write_bytes(b"other")
    assert content_hash(a) == content_hash(b) != content_hash(c)
