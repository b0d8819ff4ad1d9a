"""``data check`` on a corrupted copy names every bad file and exits 1; nothing crashes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import save, texture
from defectkit.cli.main import app
from defectkit.data.check import check_dataset

runner = CliRunner()


def _corrupt(root: Path) -> dict[str, str]:
    """Truncate a JPEG, give a mask the wrong size, remove a label; return file -> expected reason."""
    jpeg = root / "kos02" / "Part0.jpg"
    save(jpeg, texture(7, 256, 256))
    jpeg.write_bytes(jpeg.read_bytes()[:600])
    save(root / "kos02" / "Part0_label.bmp", np.zeros((256, 256), np.uint8), palette=True)
    save(root / "kos02" / "Part1_label.bmp", np.zeros((10, 10), np.uint8), palette=True)
    (root / "kos03" / "Part1_label.bmp").unlink()
    return {
        str(jpeg): "cannot decode image",
        str(root / "kos02" / "Part1_label.bmp"): "mask is 10x10 but image",
        str(root / "kos03" / "Part1.jpg"): "image without its label",
    }


def test_check_report_counts(ksdd_root: Path) -> None:
    report = check_dataset(ksdd_root)
    assert report.ok and report.n_images == 6 and report.parts == 3
    assert report.labels == {"good": 5, "defective": 1}
    assert report.sizes == {(48, 64): 6}
    assert report.label_levels["mask"] == 6
    # kos03/Part0.jpg is byte-identical to kos01/Part0.jpg: a warning, not an error.
    assert len(report.duplicates) == 1 and report.problems[0].severity == "warning"


def test_check_names_every_bad_file(ksdd_root: Path) -> None:
    expected = _corrupt(ksdd_root)
    report = check_dataset(ksdd_root)
    assert not report.ok
    for path, reason in expected.items():
        assert any(p.path == path and reason in p.reason for p in report.errors), (path, report.errors)
    assert len(report.errors) == 3


def test_cli_check_exit_status_and_one_line_per_problem(ksdd_root: Path, tmp_path: Path) -> None:
    clean = runner.invoke(app, ["data", "check", str(ksdd_root), "--json", str(tmp_path / "r.json")])
    assert clean.exit_code == 0, clean.output
    assert "no errors" in clean.output and (tmp_path / "r.json").is_file()
    expected = _corrupt(ksdd_root)
    result = runner.invoke(app, ["data", "check", str(ksdd_root)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    for path, reason in expected.items():
        assert any(path in line and reason in line for line in lines), (path, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_check_box_outside_image_and_duplicates_across_classes(tmp_path: Path) -> None:
    root = tmp_path / "neu"
    save(root / "IMAGES" / "crazing_1.jpg", texture(1, 64, 64))
    (root / "IMAGES" / "scratches_1.jpg").write_bytes((root / "IMAGES" / "crazing_1.jpg").read_bytes())
    (root / "ANNOTATIONS").mkdir()
    for stem, name, box in (
        ("crazing_1", "crazing", (1, 1, 90, 20)),
        ("scratches_1", "scratches", (1, 1, 5, 5)),
    ):
        (root / "ANNOTATIONS" / f"{stem}.xml").write_text(
            f"<annotation><object><name>{name}</name><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
            f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object></annotation>"
        )
    report = check_dataset(root, "neu-det")
    reasons = [p.reason for p in report.errors]
    assert any("outside the 64x64 image" in r for r in reasons)
    assert any(r.startswith("duplicate images across classes") for r in reasons)
    assert any("empty class" in p.reason and "inclusion" in p.path for p in report.errors)


@pytest.mark.parametrize(
    ("args", "code"),
    [(["data", "check", "/definitely/absent"], 1), (["data", "check", ".", "--format", "nope"], 2)],
)
def test_cli_bad_input_is_one_line(args: list[str], code: int) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == code
    # A crash would surface here as the stored exception; a handled error is a plain SystemExit.
    assert isinstance(result.exception, SystemExit)


def test_empty_or_malformed_manifests_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.csv").write_text("path,label\n")
    result = runner.invoke(app, ["data", "check", str(empty), "--max-problems", "0"])
    assert result.exit_code == 1 and "1 error(s)" in result.output  # no images is no dataset
    assert runner.invoke(app, ["data", "check", str(empty), "--max-problems", "-1"]).exit_code == 2
    for description, reason in (
        ('["crack"]', "must be a JSON object"),
        ('{"class_names": "scratch"}', "class_names must be a list of names"),
    ):
        (empty / "dataset.json").write_text(description)
        result = runner.invoke(app, ["data", "check", str(empty)])
        assert result.exit_code == 1 and reason in result.output
        assert isinstance(result.exception, SystemExit)


def test_check_json_goes_where_it_can_be_written_or_nowhere(ksdd_root: Path, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "taken").write_text("a file, not a folder")
    refused = runner.invoke(
        app, ["data", "check", str(ksdd_root), "--json", str(reports / "taken" / "r.json")]
    )
    assert refused.exit_code == 1 and "taken" in refused.output and "images " not in refused.output  # no pass
    written = runner.invoke(app, ["data", "check", str(ksdd_root), "--json", str(reports / "r.json")])
    assert written.exit_code == 0 and json.loads((reports / "r.json").read_text())["images"] > 0
    assert sorted(p.name for p in reports.iterdir()) == ["r.json", "taken"]  # no temporary file left


def test_real_datasets_match_their_published_counts(real_data: Callable[[str], Path]) -> None:
    ksdd = check_dataset(real_data("kolektorsdd"))
    assert (ksdd.n_images, ksdd.labels["defective"], ksdd.parts) == (399, 52, 50)
    assert ksdd.ok


def test_real_neu(real_data: Callable[[str], Path]) -> None:
    det = check_dataset(real_data("neu-det"))
    assert det.n_images == 1800 and sum(det.boxes.values()) == 4189 and len(det.boxes) == 6
    cls = check_dataset(real_data("neu-cls"))
    assert cls.n_images == 1800 and sorted(cls.classes.values()) == [300] * 6
    pair = next(d for d in cls.duplicates if any("Pa_101" in p for p in d))
    assert sorted(Path(p).stem for p in pair) == ["Pa_101", "Pa_105"]


def test_a_mask_run_outside_its_image_is_a_problem_not_the_end_of_the_check(tmp_path: Path) -> None:
    """A Severstal-style run-length mask that overruns a smaller image: one problem, and the
    check goes on to the next file."""
    from defectkit.data.check import check_sample
    from defectkit.data.sample import Sample

    image = save(tmp_path / "small.png", texture(0, 64, 400))
    report = check_sample(Sample(path=str(image), label=1, meta={"mask_rle": {1: "30000 50"}}))
    assert len(report.problems) == 1 and "outside" in report.problems[0].reason
    assert report.problems[0].path == str(image)


def test_check_json_that_names_a_folder_is_refused_before_the_pass(ksdd_root: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(ksdd_root), "--json", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output and "images " not in result.output
