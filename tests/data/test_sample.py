from __future__ import annotations

import numpy as np
import pytest
import torch

from defectkit.data.sample import DatasetInfo, Sample, collate


def _image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_collate_mixes_label_levels() -> None:
    with_mask = Sample("a", image=_image(), label=1, classes=[2], mask=torch.ones(8, 8, dtype=torch.long) * 2)
    with_boxes = Sample(
        "b", image=_image(1), label=1, classes=[1], boxes=np.array([[0, 0, 4, 4]]), box_classes=np.array([1])
    )
    bare = Sample("c", image=_image(2), surface="steel")
    good = Sample("d", image=_image(3), label=0, classes=[], boxes=np.zeros((0, 4)))
    batch = collate([with_mask, with_boxes, bare, good], num_classes=3, surface_names=["steel"])

    assert batch.images.shape == (4, 1, 8, 8)
    assert batch.label.tolist() == [1, 1, -1, 0]
    assert batch.has_label.tolist() == [True, True, False, True]
    assert batch.has_mask.tolist() == [True, False, False, False]
    assert batch.mask.shape == (4, 1, 8, 8)
    assert batch.mask[0].unique().tolist() == [2]
    assert batch.mask[1:].sum() == 0
    assert batch.has_boxes.tolist() == [False, True, False, True]
    assert [len(b) for b in batch.boxes] == [0, 1, 0, 0]
    assert batch.classes.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert batch.has_classes.tolist() == [True, True, False, True]
    assert batch.surface.tolist() == [-1, -1, 0, -1]
    assert batch.paths == ["a", "b", "c", "d"]
    assert len(batch.to("cpu")) == 4


def test_collate_multilabel_masks_and_uint8_images() -> None:
    stack = np.zeros((4, 8, 8), dtype=bool)
    stack[0, :2] = stack[3, 1:3] = True  # two classes overlap on row 1
    a = Sample("a", image=np.full((8, 8), 255, np.uint8), mask=stack, classes=[1, 4], label=1)
    b = Sample("b", image=np.zeros((8, 8), np.uint8))
    batch = collate([a, b])
    assert batch.mask.shape == (2, 4, 8, 8) and batch.mask.dtype == torch.bool
    assert batch.mask[0, :, 1, 0].tolist() == [True, False, False, True]
    assert batch.images.max() == 1.0 and batch.images.shape == (2, 1, 8, 8)
    assert batch.classes.shape == (2, 4)


def test_collate_errors_name_the_file() -> None:
    with pytest.raises(ValueError, match="share a shape"):
        collate([Sample("a", image=_image()), Sample("b", image=torch.rand(1, 4, 4))])
    with pytest.raises(ValueError, match="b: sample has no pixels"):
        collate([Sample("b")])
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_sample_has_mask_counts_references_and_replace_copies_meta() -> None:
    sample = Sample("x", meta={"mask_path": "x_label.bmp", "part": 7})
    assert sample.has_mask and sample.part == "7"
    copy = sample.replace(label=1)
    copy.meta["part"] = "changed"
    assert sample.meta["part"] == 7 and copy.label == 1 and sample.label is None
    assert not Sample("y").has_mask


def test_dataset_info_names() -> None:
    info = DatasetInfo("d", "f", "/", class_names=["scratch", "spot"])
    assert info.class_name(2) == "spot" and info.class_name(0) == "good" and info.class_id("scratch") == 1
    with pytest.raises(KeyError):
        info.class_name(3)


def test_collate_rejects_class_ids_outside_1_to_k() -> None:
    with pytest.raises(ValueError, match=r"x: class ids \[0\]"):
        collate([Sample("x", image=_image(), classes=[0])], num_classes=3)
