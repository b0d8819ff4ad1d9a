"""Readers written against small fixtures in each format's real layout, and auto-detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import save, texture
from defectkit.data.formats import FormatError, available_formats, detect_format, get_format, read_dataset
from defectkit.data.formats.manifest import write_manifest
from defectkit.data.io import load_sample


def test_registry_lists_every_format() -> None:
    names = {spec.name for spec in available_formats()}
    assert {
        "kolektorsdd",
        "neu-cls",
        "neu-det",
        "dagm",
        "severstal",
        "mvtec",
        "elpv",
        "folder",
        "manifest",
    } <= names
    assert get_format("neu_cls").name == "neu-cls"
    with pytest.raises(FormatError, match="unknown format"):
        get_format("nope")


def test_kolektorsdd(ksdd_root: Path) -> None:
    assert detect_format(ksdd_root).name == "kolektorsdd"
    dataset = read_dataset(ksdd_root)
    assert len(dataset) == 6 and dataset.problems == []
    assert sum(s.label == 1 for s in dataset.samples) == 1
    defective = next(s for s in dataset.samples if s.label == 1)
    assert defective.part == "kos01" and defective.classes == [1] and defective.surface == "commutator"
    loaded = load_sample(defective)
    assert loaded.mask is not None and int(np.asarray(loaded.mask).sum()) == 100


def test_dataset_root_expands_home(ksdd_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(ksdd_root.parent))
    home_relative = f"~/{ksdd_root.name}"
    assert detect_format(home_relative).name == "kolektorsdd"
    assert len(read_dataset(home_relative)) == 6


def test_kolektorsdd_reports_missing_label_and_orphan_mask(ksdd_root: Path) -> None:
    (ksdd_root / "kos02" / "Part1_label.bmp").unlink()
    (ksdd_root / "kos02" / "Part0.jpg").unlink()
    dataset = read_dataset(ksdd_root, "kolektorsdd")
    reasons = {Path(p.path).name: p.reason for p in dataset.problems}
    assert reasons["Part1.jpg"].startswith("image without its label")
    assert reasons["Part0_label.bmp"] == "mask without image"
    unlabelled = next(s for s in dataset.samples if s.path.endswith("kos02/Part1.jpg"))
    assert unlabelled.label is None and not unlabelled.has_mask


def test_neu_cls(tmp_path: Path) -> None:
    root = tmp_path / "NEU-CLS"
    for prefix in ("Cr", "In", "Pa", "PS", "RS", "Sc"):
        for index in (1, 2):
            save(root / f"{prefix}_{index}.bmp", texture(index))
    save(root / "Zz_1.jpg", texture(9))
    assert detect_format(root).name == "neu-cls"
    dataset = read_dataset(root)
    assert len(dataset) == 12 and dataset.info.num_classes == 6
    assert {s.classes[0] for s in dataset.samples if s.classes} == set(range(1, 7))
    assert all(s.label == 1 and s.mask is None and s.boxes is None for s in dataset.samples)
    assert [p.path for p in dataset.problems] == [str(root / "Zz_1.jpg")]


def test_neu_det(neu_det_root: Path) -> None:
    assert detect_format(neu_det_root).name == "neu-det"
    dataset = read_dataset(neu_det_root)
    assert len(dataset) == 2 and dataset.problems == []
    scratches = next(s for s in dataset.samples if "scratches" in s.path)
    assert scratches.boxes is not None and scratches.box_classes is not None
    assert scratches.boxes.tolist() == [[4, 4, 20, 64], [29, 29, 48, 48]]  # VOC 1-based inclusive -> edges
    names = [dataset.info.class_name(int(c)) for c in scratches.box_classes]
    assert names == ["scratches", "inclusion"] and scratches.classes == sorted(
        set(scratches.box_classes.tolist())
    )


def test_neu_det_nested_lowercase_layout_and_problems(neu_det_root: Path) -> None:
    nested = neu_det_root.parent / "nested"
    (nested / "train" / "images" / "crazing").mkdir(parents=True)
    (nested / "train" / "annotations").mkdir(parents=True)
    (neu_det_root / "IMAGES" / "crazing_1.jpg").rename(
        nested / "train" / "images" / "crazing" / "crazing_1.jpg"
    )
    (neu_det_root / "ANNOTATIONS" / "crazing_1.xml").rename(
        nested / "train" / "annotations" / "crazing_1.xml"
    )
    (nested / "train" / "annotations" / "orphan.xml").write_text("<annotation></annotation>")
    (nested / "train" / "annotations" / "broken.xml").write_text("<annotation><object>")
    save(nested / "train" / "images" / "crazing" / "broken.jpg", texture(1))
    save(nested / "train" / "images" / "crazing" / "lonely.jpg", texture(2))
    dataset = read_dataset(nested, "neu-det")
    reasons = {Path(p.path).name: p.reason for p in dataset.problems}
    assert reasons["orphan.xml"] == "annotation without image"
    assert reasons["broken.xml"].startswith("malformed annotation")
    assert reasons["lonely.jpg"].startswith("image without its label")
    assert len(dataset) == 3


def test_folder_layout_with_masks_and_coco(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    save(root / "good" / "a.png", texture(1))
    save(root / "scratch" / "b.png", texture(2))
    save(root / "spot" / "sub" / "c.png", texture(3))
    mask = np.zeros((64, 48), np.uint8)
    mask[1:5, 1:5] = 255
    save(root / "masks" / "b_mask.png", mask)
    save(root / "masks" / "ghost.png", mask)
    (root / "empty_class").mkdir()
    coco = {
        "images": [{"id": 1, "file_name": "spot/sub/c.png"}],
        "categories": [{"id": 7, "name": "spot"}],
        "annotations": [{"image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5]}],
    }
    (root / "annotations.json").write_text(json.dumps(coco))
    assert detect_format(root).name == "folder"
    dataset = read_dataset(root)
    assert dataset.info.class_names == ["empty_class", "scratch", "spot"]
    by_name = {Path(s.path).name: s for s in dataset.samples}
    assert (by_name["a.png"].label, by_name["a.png"].classes) == (0, [])
    assert by_name["b.png"].classes == [2]
    loaded = load_sample(by_name["b.png"])
    assert set(np.unique(np.asarray(loaded.mask))) == {0, 2}  # binary mask file, class of the folder
    c = by_name["c.png"]
    assert c.boxes is not None and c.boxes.tolist() == [[2, 3, 12, 8]] and c.box_classes.tolist() == [3]
    reasons = {Path(p.path).name: p.reason for p in dataset.problems}
    assert reasons["ghost.png"] == "mask without image"
    assert reasons["empty_class"].startswith("empty class")


def test_folder_good_and_defect_only(tmp_path: Path) -> None:
    save(tmp_path / "d" / "OK" / "a.png", texture(1))
    save(tmp_path / "d" / "NG" / "b.png", texture(2))
    dataset = read_dataset(tmp_path / "d", "folder")
    assert sorted((s.label, s.classes) for s in dataset.samples) == [(0, []), (1, None)]  # type: ignore[type-var]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_manifest_round_trip(tmp_path: Path, neu_det_root: Path, ksdd_root: Path, suffix: str) -> None:
    for source in (neu_det_root, ksdd_root):
        original = read_dataset(source)
        out = tmp_path / source.name / f"manifest{suffix}"
        write_manifest(original, out)
        assert detect_format(out.parent).name == "manifest"
        copy = read_dataset(out.parent)
        assert copy.info.class_names == original.info.class_names
        for a, b in zip(original.samples, copy.samples, strict=True):
            assert Path(a.path).resolve() == Path(b.path).resolve()
            assert (a.label, a.classes, a.part, a.surface, a.has_mask) == (
                b.label,
                b.classes,
                b.part,
                b.surface,
                b.has_mask,
            )
            if a.boxes is not None:
                assert np.allclose(a.boxes, b.boxes) and np.array_equal(a.box_classes, b.box_classes)
            if a.has_mask:
                assert np.array_equal(np.asarray(load_sample(a).mask), np.asarray(load_sample(b).mask))


def test_manifest_problems(tmp_path: Path) -> None:
    save(tmp_path / "a.png", texture(0))
    rows = [
        {"path": "a.png", "label": 1, "class": ["crack"], "boxes": [[1, 2, 3, 4, "crack"]]},
        {"label": 0},
        {"path": "a.png", "boxes": "not json"},
    ]
    lines = [json.dumps(r) for r in rows] + ["{broken"]
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    dataset = read_dataset(tmp_path)
    assert len(dataset) == 1 and dataset.samples[0].classes == [1]
    assert [p.path.rsplit(":", 1)[1] for p in dataset.problems] == ["2", "3", "4"]


def test_spreadsheet_and_hand_written_manifests(tmp_path: Path) -> None:
    save(tmp_path / "csv" / "a.png", texture(0))
    save(tmp_path / "csv" / "b.png", texture(1))
    # Excel's "CSV UTF-8" starts with a byte-order mark; people put spaces after commas.
    text = "path, label, class\na.png, 1, scratch\nb.png, 0,\n"
    (tmp_path / "csv" / "manifest.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    dataset = read_dataset(tmp_path / "csv")
    assert not dataset.problems and dataset.info.class_names == ["scratch"]
    assert [(s.label, s.classes) for s in dataset.samples] == [(1, [1]), (0, [])]
    assert all(set(s.meta) == {"source"} for s in dataset.samples)  # no stray " label" column
    save(tmp_path / "jsonl" / "a.png", texture(0))
    line = json.dumps({"path": "a.png", "label": 1})
    (tmp_path / "jsonl" / "manifest.jsonl").write_bytes(b"\xef\xbb\xbf" + line.encode("utf-8") + b"\n")
    jsonl = read_dataset(tmp_path / "jsonl")
    assert not jsonl.problems and [s.label for s in jsonl.samples] == [1]


def test_unknown_layout_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(FormatError, match="layout not recognised"):
        read_dataset(tmp_path)
    with pytest.raises(FormatError, match="no such file"):
        read_dataset(tmp_path / "absent")


def test_folder_defect_masks_stay_binary_and_ambiguous_stems_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    save(root / "crack" / "c1.png", texture(1))
    save(root / "defect" / "d1.png", texture(2))
    save(root / "defect" / "x" / "c1.png", texture(3))
    (root / "__MACOSX").mkdir()
    save(root / "__MACOSX" / "junk.png", texture(4))
    mask = np.zeros((64, 48), np.uint8)
    mask[1:5, 1:5] = 255
    save(root / "masks" / "d1.png", mask)
    save(root / "masks" / "c1.png", mask)
    dataset = read_dataset(root, "folder")
    assert dataset.info.class_names == ["crack"]
    d1 = next(s for s in dataset.samples if s.path.endswith("d1.png"))
    assert d1.classes is None and set(np.unique(np.asarray(load_sample(d1).mask))) == {0, 1}
    assert d1.meta.get("mask_binary") and "mask_class" not in d1.meta
    assert any("ambiguous mask" in p.reason for p in dataset.problems)
    untyped = [p for p in dataset.problems if "no known type" in p.reason]
    assert len(untyped) == 1 and untyped[0].severity == "warning" and "'crack'" in untyped[0].reason


def test_folder_masks_match_by_path_before_stem(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    for kind in ("good", "scratch", "dent"):
        save(root / kind / "000.png", texture(1))
    save(root / "defect" / "007.png", texture(2))
    for kind, row in (("scratch", 1), ("dent", 40)):  # MVTec's ground_truth/<type>/<stem>_mask.png
        mask = np.zeros((64, 48), np.uint8)
        mask[row : row + 4, 1:5] = 255
        save(root / "ground_truth" / kind / "000_mask.png", mask)
    save(root / "ground_truth" / "elsewhere" / "007_mask.png", mask)  # a unique stem still matches
    dataset = read_dataset(root, "folder")
    by_name = {Path(s.path).parent.name: s for s in dataset.samples}
    assert "mask_path" not in by_name["good"].meta  # never guessed between scratch's and dent's
    for kind, row in (("scratch", 1), ("dent", 40)):
        assert Path(by_name[kind].meta["mask_path"]).parent.name == kind
        assert (
            np.asarray(load_sample(by_name[kind]).mask)[row + 1, 2]
            == dataset.info.class_names.index(kind) + 1
        )
    assert by_name["defect"].meta["mask_path"].endswith("007_mask.png")
    assert [p.severity for p in dataset.problems] == ["warning"]  # defect/007's mask has no type
    # One defect type: its mask, matched by path, is not offered to good/000.png by stem.
    for folder in ("dent", "ground_truth/dent"):
        for path in (root / folder).iterdir():
            path.unlink()
        (root / folder).rmdir()
    single = read_dataset(root, "folder")
    assert [Path(s.path).parent.name for s in single.samples if "mask_path" in s.meta] == [
        "defect",
        "scratch",
    ]
    assert [p.severity for p in single.problems] == ["warning"]


def test_manifest_bad_cells_become_problems(tmp_path: Path) -> None:
    save(tmp_path / "a.png", texture(0))
    (tmp_path / "dataset.json").write_text(json.dumps({"class_names": ["crack"]}))
    rows = [
        {"path": "a.png", "label": "yes"},
        {"path": "a.png", "label": 0.7},
        {"path": "a.png", "label": 1, "boxes": [["x", 0, 4, 4]]},
        {"path": "a.png", "label": 1, "boxes": [[0, 0, 4, 4, "crack"], [1, 1, 2, 2]]},
        {"path": "a.png", "label": 1, "boxes": [[0, 0, 4, 4]]},
        {"path": "a.png", "label": 1, "class": ["dent"]},
        {"path": "a.png", "label": 1, "mask": "empty"},
    ]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dataset = read_dataset(tmp_path)
    reasons = [p.reason for p in dataset.problems]
    assert sum("label must be 0, 1 or empty" in r for r in reasons) == 2
    assert any("coordinates must be numbers" in r for r in reasons)
    assert any("some boxes name a class" in r for r in reasons)
    assert any("'dent' is used but not in class_names" in r for r in reasons)
    unknown_class_box, dent, empty = dataset.samples
    assert unknown_class_box.boxes is not None and unknown_class_box.box_classes is None
    assert dent.classes == [2] and dataset.info.class_names == ["crack", "dent"]
    assert empty.has_mask and not np.asarray(load_sample(empty).mask).any()


def test_convert_keeps_known_empty_masks_and_splits(tmp_path: Path) -> None:
    from defectkit.data.convert import to_manifest
    from defectkit.data.synthetic import SynthConfig, generate

    generate(tmp_path / "syn", SynthConfig(surfaces=2, per_surface=4, size=64, defect_fraction=0.5))
    original = read_dataset(tmp_path / "syn")
    to_manifest(tmp_path / "syn", tmp_path / "conv")
    copy = read_dataset(tmp_path / "conv")
    assert [s.has_mask for s in copy.samples] == [s.has_mask for s in original.samples]
    assert all(s.has_mask for s in copy.samples)
    assert [s.meta["split"] for s in copy.samples] == [s.meta["split"] for s in original.samples]
    assert copy.info.class_names == original.info.class_names


def test_a_manifest_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path) -> None:
    save(tmp_path / "a.png", texture(0))
    # Excel's plain "CSV" on Windows is cp1252: "ß" is one byte there.
    text = "path,label,class\na.png,1,Rißbildung\n"
    (tmp_path / "manifest.csv").write_bytes(text.encode("cp1252"))
    with pytest.raises(FormatError, match=r"manifest.csv: line 2 is not UTF-8 text \(byte 0xdf\)"):
        read_dataset(tmp_path)


def test_csv_manifest_refuses_what_would_read_back_otherwise(tmp_path: Path) -> None:
    """Class names holding the CSV's separator or its "none", and file names that are not UTF-8:
    the CSV is refused, naming the image; JSONL writes them and reads them back unchanged."""
    import os

    from defectkit.data.sample import Dataset, DatasetInfo, Sample

    save(tmp_path / "a.png", texture(0))
    info = DatasetInfo(name="x", format="folder", root=str(tmp_path), class_names=["rust;pit"])
    dataset = Dataset([Sample(path=str(tmp_path / "a.png"), label=1, classes=[1])], info)
    with pytest.raises(FormatError, match=r"a.png as CSV: class name 'rust;pit' would read back as"):
        write_manifest(dataset, tmp_path / "out" / "manifest.csv")
    assert not (tmp_path / "out" / "manifest.csv").exists()
    for name in ("None", " scratch"):
        named = Dataset(dataset.samples, DatasetInfo("x", "folder", str(tmp_path), class_names=[name]))
        with pytest.raises(FormatError, match=f"class name '{name}' would read back as"):
            write_manifest(named, tmp_path / "out" / "manifest.csv")
    copy = read_dataset(write_manifest(dataset, tmp_path / "jsonl" / "manifest.jsonl").parent)
    assert copy.info.class_names == ["rust;pit"] and copy.samples[0].classes == [1]

    latin = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name on a UTF-8 system
    save(tmp_path / latin, texture(1))
    odd = Dataset([Sample(path=str(tmp_path / latin), label=0)], DatasetInfo("x", "folder", str(tmp_path)))
    with pytest.raises(FormatError, match=r"caf\\xe9.png as CSV: .* is not UTF-8; write a JSONL"):
        write_manifest(odd, tmp_path / "odd" / "manifest.csv")
    back = read_dataset(write_manifest(odd, tmp_path / "odd" / "manifest.jsonl").parent)
    assert Path(back.samples[0].path).resolve() == (tmp_path / latin).resolve()
