from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from defectkit.data.masks import mask_to_boxes
from defectkit.data.sample import Sample
from defectkit.data.transforms import AugmentConfig, build_transform


def _sample(channels: int = 1, multilabel: bool = False) -> Sample:
    shape = (64, 96) if channels == 1 else (64, 96, channels)
    image = np.zeros(shape, np.uint8)
    ids = np.zeros((64, 96), np.uint8)
    ids[8:20, 30:60] = 1
    ids[40:50, 70:90] = 2
    image[ids > 0] = 255
    boxes, classes = mask_to_boxes(ids)
    mask: np.ndarray = np.stack([ids == 1, ids == 2]) if multilabel else ids
    return Sample("s", image=image, label=1, classes=[1, 2], mask=mask, boxes=boxes, box_classes=classes)


@pytest.mark.parametrize("channels", [1, 3])
def test_random_geometry_moves_image_mask_and_boxes_together(channels: int) -> None:
    config = AugmentConfig(size=(64, 64), hflip=0.5, vflip=0.5, rot90=0.75, resized_crop_scale=(0.6, 1.0))
    transform = build_transform(config, train=True)
    torch.manual_seed(0)
    for _ in range(20):
        out = transform(_sample(channels))
        assert isinstance(out.image, torch.Tensor) and out.image.dtype == torch.float32
        assert out.image.shape == (channels, 64, 64)
        assert isinstance(out.mask, torch.Tensor) and out.mask.shape == (64, 64)
        # Where the image is bright, the mask is a defect (nearest-neighbour vs bilinear edges aside).
        bright = out.image[0] > 0.99
        assert bool((out.mask[bright] > 0).all())
        assert set(out.mask.unique().tolist()) <= {0, 1, 2}
        # Boxes still frame the mask's regions of their class.
        assert out.boxes is not None and out.box_classes is not None
        for box, class_id in zip(out.boxes.tolist(), out.box_classes.tolist(), strict=True):
            x0, y0, x1, y1 = (round(v) for v in box)
            inside = out.mask[max(y0, 0) : y1, max(x0, 0) : x1]
            assert bool((inside == class_id).any())


def test_rot90_is_exact_and_boxes_follow() -> None:
    transform = build_transform({"rot90": 1.0}, train=True)
    sample = _sample()
    sample = sample.replace(
        image=sample.image[:, :64], mask=np.asarray(sample.mask)[:, :64], boxes=None, box_classes=None
    )
    mask = np.asarray(sample.mask)
    sample = sample.replace(boxes=mask_to_boxes(mask)[0], box_classes=mask_to_boxes(mask)[1])
    torch.manual_seed(1)
    for _ in range(6):
        out = transform(sample)
        assert out.mask is not None and out.boxes is not None
        rotations = [np.rot90(mask, k) for k in range(4)]
        assert any(np.array_equal(out.mask.numpy(), r) for r in rotations)
        expected = mask_to_boxes(out.mask.numpy())[0]
        assert sorted(map(tuple, out.boxes.tolist())) == sorted(map(tuple, expected.tolist()))


def test_multilabel_masks_and_eval_transform_are_deterministic() -> None:
    transform = build_transform(
        AugmentConfig(size=(32, 48), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3), train=False
    )
    first, second = transform(_sample(1, multilabel=True)), transform(_sample(1, multilabel=True))
    assert first.image.shape == (3, 32, 48) and float(first.image.min()) == -1.0
    assert first.mask.shape == (2, 32, 48) and torch.equal(first.mask, second.mask)
    assert torch.equal(first.image, second.image)


def test_brightness_contrast_change_only_the_image() -> None:
    transform = build_transform({"brightness": 0.5, "contrast": 0.5}, train=True)
    torch.manual_seed(3)
    sample = _sample()
    out = transform(sample)
    assert torch.equal(out.mask, torch.as_tensor(sample.mask).long())
    assert out.image.shape == (1, 64, 96)


def test_config_validation() -> None:
    with pytest.raises(ValidationError):
        AugmentConfig(channels=2)
    with pytest.raises(ValidationError, match="needs size"):
        AugmentConfig(resized_crop_scale=(0.5, 1.0))
    with pytest.raises(ValidationError, match="square"):
        AugmentConfig(size=(32, 64), rot90=0.5)
    with pytest.raises(ValidationError):
        AugmentConfig(unknown=1)  # type: ignore[call-arg]


def test_crop_that_removes_the_only_box_keeps_the_mask_and_relabels() -> None:
    ids = np.zeros((64, 64), np.uint8)
    ids[0:3, 0:3] = 1
    boxes, classes = mask_to_boxes(ids)
    sample = Sample("s", image=ids * 255, label=1, classes=[1], mask=ids, boxes=boxes, box_classes=classes)
    transform = build_transform(AugmentConfig(size=(64, 64), resized_crop_scale=(0.2, 0.5)), train=True)
    torch.manual_seed(0)
    lost = 0
    for _ in range(30):
        out = transform(sample)
        assert out.mask is not None and out.mask.shape == (64, 64)
        assert out.label == int(bool(out.mask.any())) and out.classes == ([1] if out.mask.any() else [])
        lost += int(out.label == 0)
        assert out.boxes is not None and len(out.boxes) == int(out.label == 1)
    assert lost > 0  # the test really exercised a crop that cut the defect away


def test_multilabel_mask_survives_when_boxes_equal_channels() -> None:
    stack = np.zeros((2, 64, 64), bool)
    stack[0, 10:20, 10:20] = stack[1, 40:50, 40:50] = True
    boxes = np.array([[10, 10, 20, 20], [40, 40, 50, 50]], np.float32)
    sample = Sample(
        "s", image=np.zeros((64, 64), np.uint8), mask=stack, boxes=boxes, box_classes=np.array([1, 2])
    )
    out = build_transform({"hflip": 1.0}, train=True)(sample)
    assert out.mask is not None and out.mask.shape == (2, 64, 64)
    assert bool(out.mask[0, 10:20, 44:54].all()) and bool(out.mask[1, 40:50, 14:24].all())


def test_training_resize_without_antialias_gives_the_inference_pixels() -> None:
    from defectkit.inference.preprocess import Preprocess, to_network_layout
    from defectkit.inference.saved_model import InputSpec

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (250, 130), dtype=np.uint8)  # downscaled: antialiasing would blur it
    sample = Sample("s", image=image, label=0)
    spec = InputSpec(size=(96, 64), channels=1)
    inference = Preprocess(spec)(torch.from_numpy(to_network_layout(image, 1)))[0]
    plain = build_transform(AugmentConfig(size=(96, 64), channels=1, antialias=False), train=False)(sample)
    blurred = build_transform(AugmentConfig(size=(96, 64), channels=1, antialias=True), train=False)(sample)
    # Resizing uint8 rounds to whole grey levels; the inference path resizes floats.
    assert float((torch.as_tensor(plain.image) - inference).abs().max()) <= 1.0 / 255 + 1e-6
    assert float((torch.as_tensor(blurred.image) - inference).abs().max()) > 0.05


def test_rot90_on_a_non_square_size_needs_allow_transpose() -> None:
    with pytest.raises(ValidationError, match="allow_transpose"):
        AugmentConfig(size=(96, 64), rot90=0.5)
    config = AugmentConfig(size=(96, 64), rot90=1.0, allow_transpose=True)
    transform = build_transform(config, train=True)
    torch.manual_seed(0)
    shapes = {tuple(torch.as_tensor(transform(_sample()).image).shape[-2:]) for _ in range(20)}
    assert shapes == {(96, 64), (64, 96)}  # 180 degrees keeps the size, 90 and 270 transpose it
