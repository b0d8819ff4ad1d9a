"""The DAGM-style generator: determinism, every family and defect, labels that agree, both layouts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from defectkit.data.formats import read_dataset
from defectkit.data.io import load_sample
from defectkit.data.masks import mask_to_boxes
from defectkit.data.synthetic import (
    ATTRIBUTE_NAMES,
    DEFECT_TYPES,
    MULTICLASS_TYPES,
    SURFACE_FAMILIES,
    SynthConfig,
    class_names,
    generate,
    surface_attributes,
    synthesize,
    synthetic_dataset,
)

SMALL = SynthConfig(surfaces=3, per_surface=8, size=64, seed=3, defect_fraction=0.5)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha1(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("layout", ["dagm", "manifest"])
def test_same_seed_gives_byte_identical_files(tmp_path: Path, layout: str) -> None:
    generate(tmp_path / "a", SMALL, layout=layout)  # type: ignore[arg-type]
    generate(tmp_path / "b", SMALL, layout=layout)  # type: ignore[arg-type]
    generate(tmp_path / "c", SynthConfig(**{**SMALL.__dict__, "seed": 4}), layout=layout)  # type: ignore[arg-type]
    a, b, c = (_tree_digest(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys() or layout == "dagm"  # which images are defective depends on the seed
    images = [
        n for n in a if n.lower().endswith(".png") and "label" not in n.lower() and not n.startswith("masks")
    ]
    assert images and all(a[name] != c.get(name) for name in images)
    assert not [name for name in a if name.endswith(".tmp")]


def test_image_does_not_depend_on_generation_order() -> None:
    forward = [synthesize(SMALL, 1, i).image for i in range(SMALL.per_surface)]
    backward = [synthesize(SMALL, 1, i).image for i in reversed(range(SMALL.per_surface))][::-1]
    assert all(np.array_equal(f, b) for f, b in zip(forward, backward, strict=True))


def test_every_family_renders_and_differs() -> None:
    config = SynthConfig(
        surfaces=len(SURFACE_FAMILIES) + 2, per_surface=2, size=96, seed=0, defect_fraction=0.0
    )
    images = [synthesize(config, s, 0).image.astype(np.float64) for s in range(config.surfaces)]
    for s, image in enumerate(images):
        assert image.shape == (96, 96)
        assert image.std() > 3.0, f"surface {s} is nearly flat"
    # Each family looks unlike the others: a simple descriptor (mean, std, gradient energies along
    # x and y, autocorrelation at a few lags) separates every pair of families.
    features = np.asarray([_describe(image) for image in images[: len(SURFACE_FAMILIES)]])
    features = (features - features.mean(0)) / (features.std(0) + 1e-9)
    distances = np.linalg.norm(features[:, None] - features[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert distances.min() > 0.3
    # Two images of one surface differ (phase, jitter, lighting).
    assert not np.array_equal(synthesize(config, 0, 0).image, synthesize(config, 0, 1).image)
    # Surfaces past the twelfth are variants of a family, not copies.
    assert not np.array_equal(images[0], images[len(SURFACE_FAMILIES)])


def _describe(image: np.ndarray) -> list[float]:
    centred = image - image.mean()
    values = [
        image.mean(),
        image.std(),
        np.abs(np.diff(image, axis=1)).mean(),
        np.abs(np.diff(image, axis=0)).mean(),
    ]
    for lag in (2, 5, 9):
        values.append(float((centred[:, lag:] * centred[:, :-lag]).mean() / (centred.var() + 1e-9)))
        values.append(float((centred[lag:] * centred[:-lag]).mean() / (centred.var() + 1e-9)))
    return values


def test_every_defect_type_has_mask_boxes_and_class() -> None:
    config = SynthConfig(surfaces=len(DEFECT_TYPES), per_surface=4, size=128, seed=1, defect_fraction=1.0)
    names = class_names(config)
    assert names == list(DEFECT_TYPES)
    for s in range(config.surfaces):
        item = synthesize(config, s, 0)
        assert item.label == 1
        assert item.classes == [names.index(DEFECT_TYPES[s]) + 1]
        assert item.defect_types == (DEFECT_TYPES[s],)
        assert item.mask.dtype == np.uint8 and item.mask.shape == (128, 128)
        assert set(np.unique(item.mask)) == {0, item.classes[0]}
        boxes, box_classes = mask_to_boxes(item.mask)
        np.testing.assert_array_equal(item.boxes, boxes)
        np.testing.assert_array_equal(item.box_classes, box_classes)
        assert len(item.boxes) >= 1
        # Every box holds defect pixels, and the defect changed the image there (visible, not noise).
        for x0, y0, x1, y1 in item.boxes.astype(int):
            assert item.mask[y0:y1, x0:x1].any()
        # The defective image is its good twin plus the defect: changed near the mask, and only there.
        clean = SynthConfig(**{**config.__dict__, "defect_fraction": 0.0})
        diff = np.abs(item.image.astype(int) - synthesize(clean, s, 0).image)
        assert diff[item.mask > 0].mean() > 4.0
        near = ndimage.binary_dilation(item.mask > 0, iterations=config.size // 8)
        assert diff[~near].max() <= 1


def test_good_images_have_empty_labels_and_fraction_holds() -> None:
    config = SynthConfig(surfaces=2, per_surface=16, size=64, seed=5, defect_fraction=0.25)
    items = [synthesize(config, s, i) for s in range(2) for i in range(16)]
    assert sum(item.label for item in items) == 8
    for item in items:
        if not item.label:
            assert not item.mask.any() and item.classes == [] and item.boxes.shape == (0, 4)
    splits = [item.split for item in items]
    assert splits.count("test") == 16
    # Stratified: each surface's defective images are split half/half too.
    assert sum(1 for item in items if item.label and item.split == "test") == 4


def test_multiclass_mode_has_multilabel_images() -> None:
    config = SynthConfig(surfaces=2, per_surface=30, size=96, seed=2, mode="multiclass", defect_fraction=1.0)
    assert class_names(config) == list(MULTICLASS_TYPES)
    items = [synthesize(config, s, i) for s in range(2) for i in range(30)]
    assert any(len(item.classes) >= 2 for item in items)
    assert {c for item in items for c in item.classes} == {1, 2, 3, 4}
    for item in items:
        assert item.classes == sorted(int(c) for c in np.unique(item.mask) if c)
        assert set(item.box_classes.tolist()) == set(item.classes)
        assert len(item.classes) <= 4


def test_sizes_are_honoured() -> None:
    for size in (32, 100, 128):
        item = synthesize(SynthConfig(surfaces=1, per_surface=1, size=size, defect_fraction=1.0), 0, 0)
        assert item.image.shape == item.mask.shape == (size, size)
        assert item.image.dtype == np.uint8


def test_attributes_documented_and_written(tmp_path: Path) -> None:
    config = SynthConfig(surfaces=14, per_surface=2, size=48, seed=0)
    names, vectors = surface_attributes(config)
    assert names == list(ATTRIBUTE_NAMES)
    assert set(vectors) == {f"Class{i}" for i in range(1, 15)}
    assert all(len(v) == len(names) for v in vectors.values())
    assert len({tuple(v) for v in vectors.values()}) == 14  # variants get their own embedding
    one_hot = [names.index(f"texture_{family}") for family in SURFACE_FAMILIES]
    assert all(sum(vectors[f"Class{i + 1}"][j] for j in one_hot) == 1.0 for i in range(14))
    generate(tmp_path / "out", config)
    stored = json.loads((tmp_path / "out" / "attributes.json").read_text())
    assert stored == {"attribute_names": names, "surfaces": vectors}


def test_dagm_layout_reads_back(tmp_path: Path) -> None:
    config = SynthConfig(surfaces=3, per_surface=8, size=64, seed=0, defect_fraction=0.25)
    written = generate(tmp_path / "dagm", config, layout="dagm")
    root = tmp_path / "dagm"
    assert (root / "Class1" / "Train" / "Label" / "Labels.txt").is_file()
    assert (root / "Class3" / "Test" / "Label" / "Labels.txt").is_file()
    lines = (root / "Class2" / "Train" / "Label" / "Labels.txt").read_text().splitlines()
    assert lines[0] == "2"
    assert all(len(line.split("\t")) == 5 for line in lines[1:])

    dataset = read_dataset(root)
    assert dataset.info.format == "dagm"
    assert not dataset.problems
    assert len(dataset) == 24
    assert dataset.info.class_names == class_names(config)
    assert dataset.info.surface_names == ["Class1", "Class2", "Class3"]
    assert dataset.info.extra["attributes"]["attribute_names"] == list(ATTRIBUTE_NAMES)
    by_path = {s.path: s for s in dataset.samples}
    assert set(by_path) == {s.path for s in written.samples}
    for expected in written.samples:
        got = by_path[expected.path]
        assert (got.label, got.classes, got.surface) == (expected.label, expected.classes, expected.surface)
        assert got.meta["split"] == expected.meta["split"] and got.part == expected.part
        assert got.has_mask  # good images: known empty (meta["mask_empty"]), no file
        loaded = load_sample(got)
        assert loaded.image is not None and loaded.image.shape == (64, 64)
        assert loaded.mask is not None and loaded.mask.shape == (64, 64)
        if not expected.label:
            assert not np.asarray(loaded.mask).any()
        else:
            item = synthesize(config, int(str(expected.surface)[5:]) - 1, expected.meta["index"])
            np.testing.assert_array_equal(loaded.mask, item.mask)
            np.testing.assert_array_equal(loaded.image, item.image)
    assert sum(s.label or 0 for s in dataset.samples) == 6


def test_manifest_layout_reads_back(tmp_path: Path) -> None:
    config = SynthConfig(surfaces=2, per_surface=10, size=64, seed=1, mode="multiclass", defect_fraction=0.6)
    generate(tmp_path / "m", config, layout="manifest")
    dataset = read_dataset(tmp_path / "m")
    assert dataset.info.format == "manifest"
    assert not dataset.problems
    assert dataset.info.class_names == list(MULTICLASS_TYPES)
    assert dataset.info.extra["attributes"]["attribute_names"] == list(ATTRIBUTE_NAMES)
    assert len(dataset) == 20
    for sample in dataset.samples:
        surface = int(str(sample.surface)[5:]) - 1
        item = synthesize(config, surface, int(Path(sample.path).stem) - 1)
        assert (sample.label, sample.classes, sample.part) == (item.label, item.classes, item.part)
        assert sample.meta["split"] == item.split and sample.meta["family"] == item.family
        assert sample.boxes is not None and sample.box_classes is not None
        np.testing.assert_array_equal(sample.boxes, item.boxes)
        np.testing.assert_array_equal(sample.box_classes, item.box_classes)
        np.testing.assert_array_equal(np.asarray(Image.open(sample.meta["mask_path"])), item.mask)
        loaded = load_sample(sample)
        assert loaded.image is not None and loaded.mask is not None
        assert loaded.image.shape == loaded.mask.shape == (64, 64)
        np.testing.assert_array_equal(loaded.mask, item.mask)


def test_in_memory_dataset_and_progress(tmp_path: Path) -> None:
    dataset = synthetic_dataset(SMALL)
    assert len(dataset) == 24
    assert all(s.image is not None and s.mask is not None for s in dataset.samples)
    assert dataset.info.extra["families"]["Class2"] == SURFACE_FAMILIES[1]
    calls: list[tuple[int, int]] = []
    generate(tmp_path / "p", SMALL, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (24, 24) and len(calls) == 24


def test_fewer_defect_types_share_each_type_among_surfaces() -> None:
    config = SynthConfig(surfaces=10, per_surface=2, size=64, seed=0, defect_fraction=1.0, defect_types=5)
    assert class_names(config) == list(DEFECT_TYPES[:5])
    for s in (2, 7):  # surfaces 3 and 8: two textures, one defect type
        item = synthesize(config, s, 0)
        assert item.defect_types == (DEFECT_TYPES[2],)
        assert item.classes == [3]
    # Surfaces below the cycle length are the same images as with all eight types.
    full = SynthConfig(**{**config.__dict__, "defect_types": len(DEFECT_TYPES)})
    np.testing.assert_array_equal(synthesize(config, 4, 1).image, synthesize(full, 4, 1).image)
    assert not np.array_equal(synthesize(config, 5, 1).image, synthesize(full, 5, 1).image)
    # Cache keys made before the option existed stay valid at its default.
    assert "defect_types" not in full.settings() and config.settings()["defect_types"] == 5


def test_fewer_families_make_later_surfaces_variants_of_seen_textures() -> None:
    config = SynthConfig(surfaces=10, per_surface=2, size=64, seed=0, families=5)
    dataset = synthetic_dataset(config)
    assert dataset.info.extra["families"]["Class6"] == dataset.info.extra["families"]["Class1"]
    assert dataset.info.extra["families"]["Class10"] == SURFACE_FAMILIES[4]
    _, vectors = surface_attributes(config)
    names = list(ATTRIBUTE_NAMES)
    family_slots = [names.index(f"texture_{f}") for f in SURFACE_FAMILIES]
    # Class1 and Class6 share the texture one-hot but not the variant's brightness.
    assert [vectors["Class1"][i] for i in family_slots] == [vectors["Class6"][i] for i in family_slots]
    brightness = names.index("mean_intensity")
    assert vectors["Class1"][brightness] != vectors["Class6"][brightness]
    # The first `families` surfaces are the same images as with all twelve families.
    full = SynthConfig(**{**config.__dict__, "families": len(SURFACE_FAMILIES)})
    np.testing.assert_array_equal(synthesize(config, 4, 1).image, synthesize(full, 4, 1).image)
    assert not np.array_equal(synthesize(config, 5, 1).image, synthesize(full, 5, 1).image)
    assert "families" not in full.settings() and config.settings()["families"] == 5
    assert "families" not in synthetic_dataset(SMALL).info.extra["generator"]


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="defect_fraction"):
        SynthConfig(defect_fraction=1.5)
    with pytest.raises(ValueError, match="defect_types"):
        SynthConfig(defect_types=9)
    with pytest.raises(ValueError, match="families"):
        SynthConfig(families=0)
    with pytest.raises(ValueError, match="mode"):
        SynthConfig(mode="severstal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index"):
        synthesize(SMALL, 0, SMALL.per_surface)
