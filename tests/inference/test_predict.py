"""Batch prediction: results for the good files, one line for each bad one, documented exit codes."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import defectkit
from conftest import save, texture, tiny_segdec
from defectkit.cli.main import app
from defectkit.inference.inspection import Inspection, Region
from defectkit.inference.overlay import VERDICT_COLOURS, render_overlay
from defectkit.inference.predict import collect_images, defect_mask, output_names

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_segdec(tmp_path_factory.mktemp("models") / "tiny", size=(96, 64), seed=1)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Three good images (two share the stem 'part'), a truncated PNG and a text file."""
    root = tmp_path / "images"
    save(root / "part.png", texture(1, 100, 40))
    save(root / "other.jpg", texture(2, 80, 120, channels=3))
    save(root / "line2" / "part.png", texture(3, 257, 131))
    good = save(root / "corrupt.png", texture(4, 64, 64)).read_bytes()
    (root / "corrupt.png").write_bytes(good[: len(good) // 2])
    (root / "notes.txt").write_text("not an image\n")
    return root


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_folder_with_a_bad_file(model_dir: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["predict", str(model_dir), str(images), "--out", str(out), "--save-heatmaps", "--save-masks"]
    )
    # Exit 1 because one file failed, but only after every other result was written.
    assert result.exit_code == 1, result.output
    assert "corrupt.png" in result.output and "Traceback" not in result.output
    assert "notes.txt" not in result.output  # folder search takes image files only
    written = sorted(p.name for p in out.glob("*.json"))
    assert len(written) == 3 and "other.json" in written
    assert sum(name.startswith("part-") for name in written) == 2  # repeated stem -> hashed names
    for json_path in out.glob("*.json"):
        inspection = Inspection.model_validate_json(json_path.read_text())
        assert inspection.verdict in ("ok", "defect") and inspection.threshold == 0.5
        assert inspection.heatmap is not None and Path(inspection.heatmap).is_file()
        assert inspection.mask is not None
        mask = np.asarray(Image.open(inspection.mask))
        assert mask.shape == np.asarray(Image.open(inspection.heatmap)).shape[:2]
        assert set(np.unique(mask)) <= ({0, 1} if inspection.verdict == "defect" else {0})
        assert (out / f"{json_path.stem}.png").is_file()
        assert json.loads(json_path.read_text())["image"].startswith(str(images))
    rows = _summary(out)
    assert len(rows) == 4
    failed = [row for row in rows if row["error"]]
    assert len(failed) == 1 and failed[0]["image"].endswith("corrupt.png") and not failed[0]["verdict"]
    good = [row for row in rows if not row["error"]]
    assert {row["verdict"] for row in good} <= {"ok", "defect"}
    assert all(float(row["threshold"]) == 0.5 and int(row["n_regions"]) >= 0 for row in good)
    assert not list(out.glob(".*tmp"))


def test_predict_glob_and_exit_zero(model_dir: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    pattern = str(images / "**" / "part.png")  # quoted: the command expands it
    result = runner.invoke(app, ["predict", str(model_dir), pattern, "--out", str(out), "--no-overlays"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.json"))) == 2 and not list(out.glob("*.png"))
    assert len(_summary(out)) == 2


def test_a_rerun_into_a_folder_inside_the_inputs_skips_the_last_outputs(
    model_dir: Path, images: Path
) -> None:
    (images / "corrupt.png").unlink()
    out = images / "results"
    for _ in range(2):
        result = runner.invoke(
            app, ["predict", str(model_dir), str(images), "--out", str(out), "--save-heatmaps"]
        )
        assert result.exit_code == 0, result.output
        # The three parts only: not the first run's overlays and heat maps under results/.
        assert len(_summary(out)) == 3 and len(list(out.glob("*.json"))) == 3
    pattern = runner.invoke(app, ["predict", str(model_dir), str(images / "**" / "*.png"), "--out", str(out)])
    assert pattern.exit_code == 0 and len(_summary(out)) == 2  # the two part.png, not results/*.png
    shutil.rmtree(out)
    above = runner.invoke(app, ["predict", str(model_dir), str(images), "--out", str(images.parent)])
    assert above.exit_code == 0 and len(_summary(images.parent)) == 3  # inputs below OUT: all kept


def test_a_rerun_into_the_same_folder_says_which_earlier_results_stay(
    model_dir: Path, images: Path, tmp_path: Path
) -> None:
    (images / "corrupt.png").unlink()
    out = tmp_path / "out"
    first = runner.invoke(app, ["predict", str(model_dir), str(images), "--out", str(out)])
    assert first.exit_code == 0 and "earlier run" not in first.output
    again = runner.invoke(app, ["predict", str(model_dir), str(images / "other.jpg"), "--out", str(out)])
    assert again.exit_code == 0 and "note: 2 result(s) of an earlier run stay in" in " ".join(
        again.output.split()
    )
    assert len(_summary(out)) == 1 and len(list(out.glob("*.json"))) == 3  # nothing deleted


def test_an_output_folder_that_holds_input_images_is_refused(model_dir: Path, images: Path) -> None:
    before = (images / "part.png").read_bytes()
    result = runner.invoke(app, ["predict", str(model_dir), str(images), "--out", str(images)])
    # Its overlay part.png would replace the image part.png. Bad usage: exit status 2.
    assert result.exit_code == 2 and "holds input images" in result.output
    assert "Traceback" not in result.output and "DEFECTKIT_DEBUG" not in result.output
    assert (images / "part.png").read_bytes() == before and not (images / "summary.csv").exists()


def test_an_output_that_cannot_be_written_fails_that_image_alone(
    model_dir: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from defectkit.inference import predict

    real = predict.write_atomic

    def full_disk(path: Path, data: bytes) -> None:
        if path.name == "other.png":
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(predict, "write_atomic", full_disk)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(model_dir), str(images), "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    failed = [row for row in _summary(out) if row["error"]]
    assert sorted(Path(row["image"]).name for row in failed) == ["corrupt.png", "other.jpg"]
    assert any("No space left on device" in row["error"] for row in failed)
    assert len(list(out.glob("part-*.json"))) == 2  # the images after it were still inspected


def test_the_summary_lists_what_was_done_when_a_run_breaks_off(
    model_dir: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from defectkit.inference import predict

    calls = []

    def interrupted(*args: object, **kwargs: object) -> dict[str, object]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = predict._inspect_one
    monkeypatch.setattr(predict, "_inspect_one", interrupted)
    (images / "corrupt.png").unlink()
    inspector = defectkit.load_inspector(model_dir)
    with pytest.raises(KeyboardInterrupt):
        predict.predict_paths(inspector, [images], tmp_path / "out")
    assert [row["error"] for row in _summary(tmp_path / "out")] == [""]  # the one inspected before
    calls.clear()
    # The command says where the results of the images judged so far are, and exits as shells do.
    stopped = runner.invoke(app, ["predict", str(model_dir), str(images), "-o", str(tmp_path / "cli")])
    assert stopped.exit_code == 130, stopped.output
    assert f"interrupted after 1 image(s); their results and summary.csv are in {tmp_path / 'cli'}" in (
        " ".join(stopped.output.split())
    )


def test_predict_nothing_readable(model_dir: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        str(images / "corrupt.png"),
        str(images / "notes.txt"),
        str(images / "*.bmp"),
        str(tmp_path / "x"),
    ]
    result = runner.invoke(app, ["predict", str(model_dir), *args, "--out", str(out)])
    assert result.exit_code == 1 and "no image was inspected" in result.output
    assert len(_summary(out)) == 4 and all(row["error"] for row in _summary(out))
    missing = runner.invoke(app, ["predict", str(tmp_path / "nomodel"), str(images), "--out", str(out)])
    assert missing.exit_code == 1 and "Traceback" not in missing.output


def test_collect_images_and_names(images: Path, tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here\n")
    paths = [images, images / "part.png", images / "notes.txt", tmp_path / "gone", tmp_path / "empty"]
    found, failures = collect_images(paths)
    assert len(found) == 5  # 4 images under the folder (the same part.png once) + the named text file
    assert [(f.path, f.reason) for f in failures] == [
        (str(tmp_path / "gone"), "no such file or folder"),
        (str(tmp_path / "empty"), "no image files in this folder"),  # named, not skipped in silence
    ]
    names = output_names(found)
    assert len(set(names)) == len(names) and "other" in names


def test_output_names_never_share_a_file(tmp_path: Path) -> None:
    names_in = ("a/x.png", "x.mask.png", "y.heatmap.png", "Y.jpg", "z.png", "w.heatmap.png")
    images = [tmp_path / name for name in names_in]
    names = output_names(images)
    files = [f"{n}{end}".lower() for n in names for end in (".png", ".json", ".mask.png", ".heatmap.png")]
    assert len(set(files)) == len(files)
    assert names[4] == "z" and names[5] == "w.heatmap"  # no w image among the inputs: no clash


def test_python_api_inspects_a_path(model_dir: Path, images: Path) -> None:
    inspection = defectkit.load_inspector(model_dir).inspect(images / "other.jpg")
    assert inspection.image == str(images / "other.jpg") and inspection.model.startswith("tiny@")
    assert inspection.verdict == ("defect" if inspection.score >= 0.5 else "ok")


def test_a_float_colour_array_is_refused_not_judged_as_a_black_image(model_dir: Path) -> None:
    inspector = defectkit.load_inspector(model_dir)  # a grey model: colour is mixed down first
    for image in (np.random.default_rng(0).random((64, 96, 3)), np.zeros((64, 96, 3), np.uint16)):
        with pytest.raises(ValueError, match="uint8"):
            inspector.inspect(image)


def test_pil_images_are_decoded_as_files_are_and_odd_inputs_named(model_dir: Path, tmp_path: Path) -> None:
    """A palette or CMYK PIL image was read as its raw channel values (palette indices; CMYK as
    RGBA) and judged as another image; bytes, or a path inside inspect_batch, failed on a dtype."""
    inspector = defectkit.load_inspector(model_dir)
    colour = texture(5, 64, 96, channels=3)
    palette = Image.fromarray(colour).quantize(16)
    palette.save(tmp_path / "palette.png")
    from_file = inspector.inspect(tmp_path / "palette.png").score
    assert inspector.inspect(palette).score == pytest.approx(from_file, abs=1e-6)
    assert inspector.inspect_batch([palette], ["p"])[0][0].score == pytest.approx(from_file, abs=1e-6)
    cmyk = Image.fromarray(colour).convert("CMYK")
    assert inspector.inspect(cmyk).score == pytest.approx(
        inspector.inspect(np.asarray(cmyk.convert("RGB"))).score
    )
    for odd in (b"\x89PNG", str(tmp_path / "palette.png")):
        with pytest.raises(TypeError, match=r"expected a numpy uint8 image array, got (bytes|str)"):
            inspector.inspect_batch([odd], ["x"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="uint8"):
        render_overlay(colour / 255.0, inspector.inspect(colour), None, 0.5)


def test_an_image_named_in_latin1_gives_a_writable_inspection(model_dir: Path, tmp_path: Path) -> None:
    import os

    path = save(tmp_path / os.fsdecode(b"pi\xe8ce.png"), texture(6))
    inspection = defectkit.load_inspector(model_dir).inspect(path)
    assert (
        "pi\\xe8ce.png" in inspection.image and json.loads(inspection.to_json())["image"] == inspection.image
    )


def test_a_device_torch_cannot_use_is_named_not_blamed_on_the_weights(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    with pytest.raises(ValueError, match="unknown device 'gpu'; use cpu, cuda or cuda:N"):
        defectkit.load_inspector(model_dir, device="gpu")
    with pytest.raises(ValueError, match="device 'meta': inspection runs on cpu, cuda or mps"):
        defectkit.load_inspector(model_dir, device="meta")
    assert defectkit.load_inspector(model_dir, device="cpu:0").backend_name == "torch"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': no CUDA GPU is available here"):
            defectkit.load_inspector(model_dir, device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="the onnx back-end runs on the CPU, not 'cuda'"):
        defectkit.load_inspector(model_dir, backend="onnx", device="cuda")


def test_one_inspector_shared_by_threads_scores_as_one_thread_does(model_dir: Path) -> None:
    """A line's usual set-up, promised in the README: one model, a thread per camera."""
    from concurrent.futures import ThreadPoolExecutor

    inspector = defectkit.load_inspector(model_dir)
    frames = [texture(seed, 40 + 8 * seed, 64) for seed in range(8)]
    alone = [inspector.inspect(frame).score for frame in frames]
    with ThreadPoolExecutor(4) as pool:
        shared = list(pool.map(lambda frame: inspector.inspect(frame).score, frames * 3))
    assert shared == alone * 3


def test_tf32_stays_off_while_any_thread_inspects_and_comes_back_after_the_last() -> None:
    """Each call restoring its own save turned TF32 on under another thread's forward pass."""
    import torch

    from defectkit.inference.inspector import full_float32

    cuda = torch.device("cuda")
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        first, second = full_float32(cuda), full_float32(cuda)
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        second.__exit__(None, None, None)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_models_in_folders_of_one_name_are_named_apart(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from defectkit.inference.saved_model import CARD_NAME, model_identity

    # Training writes every model to <out>/model: the name must tell two of them apart.
    first = tiny_segdec(tmp_path / "a" / "model", size=(96, 64), seed=1)
    second = tiny_segdec(tmp_path / "b" / "model", size=(96, 64), seed=2)
    assert model_identity(first).startswith("model@") and model_identity(first) != model_identity(second)
    copy = shutil.copytree(first, tmp_path / "c" / "model")
    assert model_identity(copy) == model_identity(first)  # the same files: the same model
    card = copy / CARD_NAME
    card.write_text(card.read_text().replace("decision: 0.5", "decision: 0.6"))
    assert model_identity(copy) != model_identity(first)  # a threshold changed: another model
    assert defectkit.load_inspector(copy).name == model_identity(copy)


def test_regions_measure_their_own_pixels(model_dir: Path) -> None:
    inspector = defectkit.load_inspector(model_dir)
    pixel = inspector.card.thresholds.pixel
    heatmap = np.zeros((40, 40), dtype=np.float32)
    heatmap[5:30, 5:8] = heatmap[27:30, 5:30] = min(1.0, pixel + 0.1)  # an L: 25x3 + 3x22 pixels
    heatmap[12, 20] = 1.0  # a speck inside the L's box, with the highest score
    regions = inspector.regions(heatmap)
    assert [(r.box, r.area_px) for r in regions] == [((20, 12, 21, 13), 1), ((5, 5, 30, 30), 75 + 66)]
    assert regions[1].score == pytest.approx(min(1.0, pixel + 0.1))  # not the speck's


def test_overlay_marks_verdict_contour_and_boxes() -> None:
    image = texture(5, 40, 60)
    heatmap = np.zeros((40, 60), dtype=np.float32)
    heatmap[10:20, 30:50] = 0.9
    region = Region(box=(30, 10, 50, 20), score=0.9, area_px=200)
    inspection = Inspection(
        image="x", model="m", verdict="defect", score=0.8, threshold=0.5, regions=[region], latency_ms=1.0
    )
    picture = np.asarray(render_overlay(image, inspection, heatmap, pixel_threshold=0.5))
    scale = -(-320 // 60)  # small images are enlarged so the banner is legible
    banner = picture.shape[0] - 40 * scale
    assert picture.shape[1] == 60 * scale and banner > 0
    assert tuple(picture[1, 1]) == VERDICT_COLOURS["defect"]
    body = picture[banner:]
    assert (body[..., 0] > 200).any()  # box outline
    assert tuple(body[15 * scale, 30 * scale + 1]) != tuple(body[2, 2])  # contour / heat visible
    ok = inspection.model_copy(update={"verdict": "ok", "regions": []})
    assert tuple(np.asarray(render_overlay(image, ok, None, 0.5))[1, 1]) == VERDICT_COLOURS["ok"]


def test_an_overlay_of_a_large_image_is_reduced_for_the_eye() -> None:
    from defectkit.inference.overlay import MAX_SIDE

    # 5000 px wide: at full size the overlay would take ~60 bytes a pixel (a 36 Mpx image: 2 GB).
    image = np.full((1500, 5000), 90, dtype=np.uint8)
    heatmap = np.zeros((1500, 5000), dtype=np.float32)
    heatmap[600:602, 2000:2600] = 0.9  # a scratch two pixels wide
    region = Region(box=(2000, 600, 2600, 602), score=0.9, area_px=1200)
    inspection = Inspection(
        image="x", model="m", verdict="defect", score=0.9, threshold=0.5, regions=[region], latency_ms=1.0
    )
    picture = np.asarray(render_overlay(image, inspection, heatmap, pixel_threshold=0.5))
    factor = -(-5000 // MAX_SIDE)  # an integer reduction, within MAX_SIDE
    assert picture.shape[1] == -(-5000 // factor) <= MAX_SIDE
    body = picture[picture.shape[0] - -(-1500 // factor) :]
    # Blocks keep their strongest heat, so the thin scratch is still shaded (and outlined, boxed).
    row = body[600 // factor, 2300 // factor - 3 : 2300 // factor + 3]
    assert all(tuple(pixel) != tuple(body[10, 10]) for pixel in row)


def test_defect_mask_names_the_strongest_class_and_only_for_defects() -> None:
    heat = np.zeros((2, 3, 4), np.float32)
    heat[0, 0, :2] = 0.9  # class 1 alone
    heat[1, 0, 1:3] = 0.7  # class 2; at (0, 1) class 1 is stronger
    heat[1, 2, 3] = 0.5  # exactly at the threshold counts
    mask = defect_mask(heat, 0.5, "defect")
    assert mask is not None and mask.dtype == np.uint8
    assert mask.tolist() == [[1, 1, 2, 0], [0, 0, 0, 0], [0, 0, 0, 2]]
    assert defect_mask(heat[0], 0.5, "defect").tolist()[0] == [1, 1, 0, 0]  # type: ignore[union-attr]
    assert not defect_mask(heat, 0.5, "ok").any()  # type: ignore[union-attr]
    # A class the classifier did not call marks no pixel, however hot its map.
    only_second = defect_mask(heat, 0.5, "defect", [False, True])
    assert only_second.tolist() == [[0, 2, 2, 0], [0, 0, 0, 0], [0, 0, 0, 2]]  # type: ignore[union-attr]
    assert defect_mask(None, 0.5, "defect") is None


def test_the_inspection_schema_imports_without_torch() -> None:
    # Clients that only read Inspection JSON (dashboards, the service's consumers) must not pay
    # for torch: the inspector base and its helpers live in their own module.
    code = "import sys, defectkit.inference.inspection; print(sorted({'torch', 'scipy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_files_no_predict_run_wrote_are_never_replaced_or_hidden(
    model_dir: Path, images: Path, tmp_path: Path
) -> None:
    (images / "corrupt.png").unlink()
    # A folder of the user's annotations: other.json would be replaced by other.jpg's result.
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    (annotations / "other.json").write_text('{"label": "scratch"}\n')
    result = runner.invoke(app, ["predict", str(model_dir), str(images), "--out", str(annotations)])
    assert result.exit_code == 2 and "would replace 1 file(s) that no predict run wrote" in result.output
    assert (annotations / "other.json").read_text() == '{"label": "scratch"}\n'
    assert not (annotations / "summary.csv").exists()
    # An output folder inside the inputs that holds the user's own images: the search leaves them
    # out, so they would go uninspected without a word.
    save(images / "batch2" / "new.png", texture(5, 64, 64))
    result = runner.invoke(app, ["predict", str(model_dir), str(images), "--out", str(images / "batch2")])
    assert result.exit_code == 2 and "holds 1 image(s) no predict run wrote" in " ".join(
        result.output.split()
    )
    assert sorted(p.name for p in (images / "batch2").iterdir()) == ["new.png"]
    # An output path that is a file fails before any image is inspected.
    (tmp_path / "taken").write_text("x")
    result = runner.invoke(app, ["predict", str(model_dir), str(images), "--out", str(tmp_path / "taken")])
    assert result.exit_code == 1 and "taken" in result.output and "Traceback" not in result.output


def test_a_file_name_that_is_not_utf8_keeps_every_result(
    model_dir: Path, images: Path, tmp_path: Path
) -> None:
    import os

    (images / "corrupt.png").unlink()
    latin1 = images / os.fsdecode(b"caf\xe9.png")  # from a Latin-1 share
    try:
        shutil.copy(images / "part.png", latin1)
    except (UnicodeEncodeError, OSError):
        pytest.skip("this file system takes UTF-8 names only")
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(model_dir), str(images), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _summary(out)
    assert len(rows) == 4 and not any(row["error"] for row in rows)
    assert any(row["image"].endswith("caf\\xe9.png") for row in rows)
    assert all((out / row["output"]).is_file() for row in rows)  # the summary names real files
    shown = [json.loads(p.read_text())["image"] for p in out.glob("*.json")]
    assert any(name.endswith("caf\\xe9.png") for name in shown)


def test_a_nan_score_is_a_failure_never_an_ok(model_dir: Path, images: Path, tmp_path: Path) -> None:
    from defectkit.inference import predict

    (images / "corrupt.png").unlink()
    inspector = defectkit.load_inspector(model_dir)
    real = inspector.backend.run

    def diverged(raw: np.ndarray) -> tuple[np.ndarray, ...]:
        scores, *rest = real(raw)
        return (np.full_like(scores, np.nan), *rest)

    inspector.backend.run = diverged  # type: ignore[method-assign]
    report = predict.predict_paths(inspector, [images / "other.jpg"], tmp_path / "out")
    assert report.results == [] and len(report.failures) == 1
    assert "non-finite score is never judged" in report.failures[0].reason

    def infinite(raw: np.ndarray) -> tuple[np.ndarray, ...]:
        scores, *rest = real(raw)
        return (np.full_like(scores, np.inf), *rest)

    inspector.backend.run = infinite  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="non-finite score"):
        inspector.inspect(images / "other.jpg")


def test_reruns_into_a_folder_accept_every_file_a_run_wrote(
    model_dir: Path, images: Path, tmp_path: Path
) -> None:
    (images / "corrupt.png").unlink()
    # An image named like a mask, with no image of its bare name: its overlay is scratch.mask.png.
    shutil.copy(images / "part.png", images / "scratch.mask.png")
    out = tmp_path / "out"
    args = ["predict", str(model_dir), str(images), "--out", str(out), "--save-masks", "--save-heatmaps"]
    for _ in range(2):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert len(_summary(out)) == 4
    # A summary.csv of the user's own is not predict's to replace.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "summary.csv").write_text("part,price\nbolt,3\n")
    result = runner.invoke(app, ["predict", str(model_dir), str(images), "--out", str(tmp_path / "mine")])
    assert result.exit_code == 2 and "summary.csv" in result.output
    assert (tmp_path / "mine" / "summary.csv").read_text() == "part,price\nbolt,3\n"


def test_an_image_whose_results_fail_midway_leaves_none_of_them(
    model_dir: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from defectkit.inference import predict

    def out_of_memory(*_: object, **__: object) -> None:
        raise MemoryError  # drawing the overlay of a huge image, after its mask and heat map

    (images / "corrupt.png").unlink()
    monkeypatch.setattr(predict, "render_overlay", out_of_memory)
    out = tmp_path / "out"
    args = ["predict", str(model_dir), str(images), "--out", str(out), "--save-masks", "--save-heatmaps"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv"]  # no mask without its JSON
    monkeypatch.undo()
    assert runner.invoke(app, args).exit_code == 0  # so a rerun finds nothing in its way


def test_a_card_with_class_scores_but_no_rule_to_judge_them_is_refused(tmp_path: Path) -> None:
    """A hand-written multi-label card without `multilabel: true` was judged as a reference
    classifier with no unknown threshold: every part a defect, whatever its scores."""
    import yaml

    from conftest import tiny_model
    from defectkit.inference.saved_model import SavedModelError

    model = tiny_model(tmp_path / "types", "tlu_net", size=(64, 64))
    card = yaml.safe_load((model / "model.yaml").read_text())
    card["multilabel"] = False
    (model / "model.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(SavedModelError, match="says neither `multilabel: true`"):
        defectkit.load_inspector(model).inspect(texture(0, 64, 64))
