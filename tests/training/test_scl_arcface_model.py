"""scl_arcface as a user meets it: train, predict (class + unknown), enroll a new class, export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from conftest import save
from defectkit.cli.main import app
from defectkit.inference.inspector import load_inspector
from defectkit.inference.saved_model import REFERENCES_NAME, read_card

runner = CliRunner()


def pattern(kind: str, seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.normal(110, 8, (size, size))
    # Rotation-invariant patterns: the augmentations rotate by 90 degrees, so stripes along rows
    # and along columns would be one class to the network.
    if kind == "dots":
        image[::6, ::6] += 120
    elif kind == "frame":
        image[4:8, 4:44] += 90
        image[40:44, 4:44] += 90
        image[4:44, 4:8] += 90
        image[4:44, 40:44] += 90
    elif kind == "blob":
        image[14:34, 14:34] += 90
    elif kind == "checks":
        image[(np.add.outer(np.arange(size), np.arange(size)) // 6) % 2 == 0] += 90
    return np.clip(image, 0, 255).astype(np.uint8)


def tinted(image: np.ndarray) -> np.ndarray:
    """A colour image whose three channels differ (a part photographed in colour)."""
    return np.stack([image, image // 2 + 60, 255 - image], axis=2)


def train_types(
    root: Path,
    norm: tuple[list[float], list[float]] | None = None,
    colour: bool = False,
    **model_options: str,
) -> Path:
    """Train on three pattern classes (8 images each) under ``root``; the model directory. ``norm``:
    the config's input mean and std (the EfficientNet-Lite weights' 0.5 and 0.5 otherwise);
    ``colour``: the images saved as RGB with three different channels."""
    mean, std = norm or ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    data = root / "data"
    rows = []
    for kind in ("dots", "frame", "blob"):
        for index in range(8):
            image = pattern(kind, index)
            save(data / kind / f"{kind}{index}.png", tinted(image) if colour else image)
            rows.append({"path": f"{kind}/{kind}{index}.png", "label": 1, "class": [kind]})
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "method": "scl_arcface",
        "seed": 0,
        "weights": None,
        "data": {"root": str(data), "val_fraction": 0.25},
        "input": {"size": [32, 32], "channels": 3, "mean": mean, "std": std},
        "model": {"backbone": "mobilenetv3_small_050", "embedding_dim": 16, **model_options},
        "method_options": {"arc_scale": 16.0, "unknown_quantile": 0.0},
        "trainer": {"epochs": 12, "batch_size": 9, "lr": 0.002},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["train", str(root / "config.yaml"), "--out", str(root / "run"), "-q"])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output
    return root / "run" / "model"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_types(tmp_path_factory.mktemp("types"))


def test_predict_names_the_class_and_flags_the_unknown(
    trained: Path, tmp_path: Path, one_thread: None
) -> None:
    card = read_card(trained)
    assert card.class_names == ["blob", "dots", "frame"] and (trained / REFERENCES_NAME).is_file()
    assert card.thresholds.unknown is not None
    inspector = load_inspector(trained)
    for kind in ("dots", "frame", "blob"):
        inspection = inspector.inspect(pattern(kind, 99))
        assert set(inspection.class_scores) == {"blob", "dots", "frame"}
        assert max(inspection.class_scores, key=inspection.class_scores.__getitem__) == kind
    save(tmp_path / "in" / "dots.png", pattern("dots", 50))
    result = runner.invoke(
        app, ["predict", str(trained), str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "out" / "dots.json").read_text())
    assert written["class_scores"] and written["verdict"] in ("defect", "unknown")

    explained = runner.invoke(
        app, ["predict", str(trained), str(tmp_path / "in"), "--out", str(tmp_path / "why"), "--explain"]
    )
    assert explained.exit_code == 0, explained.output
    heatmap = tmp_path / "why" / "dots.heatmap.png"
    assert heatmap.is_file() and json.loads((tmp_path / "why" / "dots.json").read_text())["heatmap"] == str(
        heatmap
    )
    assert np.asarray(Image.open(heatmap)).shape == (48, 48)


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "colour"])
def test_references_are_embedded_as_the_card_says_queries_will_be(
    tmp_path: Path, one_thread: None, colour: bool
) -> None:
    """A config's own ``input.mean`` / ``std`` (ImageNet's, for a user's ResNet-50 weights) must reach
    training and the reference database, not only the card that predict and enroll read: a training
    image queried through the card's pre-processor then finds its own reference. Colour images
    too: training once read every image as grey while queries kept their colour."""
    import torch
    from safetensors.torch import load_file

    from defectkit.data.io import read_image
    from defectkit.inference.preprocess import Preprocess, to_network_layout
    from defectkit.inference.saved_model import load_model

    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    directory = train_types(tmp_path, norm=imagenet, colour=colour)
    model, card = load_model(directory)
    assert (list(card.input.mean), list(card.input.std)) == imagenet
    references = load_file(str(directory / REFERENCES_NAME))["embeddings"]
    images = sorted((tmp_path / "data").rglob("*.png"))
    # As the Inspector and enroll read a query.
    raw = torch.cat([torch.from_numpy(to_network_layout(read_image(p), card.input.channels)) for p in images])
    with torch.inference_mode():
        queries = torch.nn.functional.normalize(model.network.embed(Preprocess(card.input)(raw)), dim=1)
    nearest = (references @ queries.T).max(dim=1).values
    assert len(references) == 18 and float(nearest.min()) > 0.99999


def test_enroll_adds_a_class_without_training_and_refreshes_onnx(
    trained: Path, tmp_path: Path, one_thread: None
) -> None:
    model = tmp_path / "model"
    import shutil

    shutil.copytree(trained, model)
    assert runner.invoke(app, ["export", str(model)]).exit_code == 0
    weights_before = (model / "weights.safetensors").read_bytes()
    for index in range(3):
        save(tmp_path / "checks" / f"c{index}.png", pattern("checks", 200 + index))
    result = runner.invoke(app, ["enroll", str(model), str(tmp_path / "checks"), "--class", "checks"])
    assert result.exit_code == 0, result.output
    assert "new class 'checks'" in result.output and "exported again" in result.output
    assert (model / "weights.safetensors").read_bytes() == weights_before  # no retraining
    assert read_card(model).class_names[-1] == "checks"
    for backend in ("torch", "onnx"):
        # One of the enrolled images: the mechanics, not how well a tiny net generalises.
        inspection = load_inspector(model, backend=backend).inspect(pattern("checks", 200))
        assert "checks" in inspection.class_scores
        assert max(inspection.class_scores, key=inspection.class_scores.__getitem__) == "checks"

    refused = runner.invoke(app, ["enroll", str(model), str(tmp_path / "nothing"), "--class", "x"])
    assert refused.exit_code == 2 and "no such file" in refused.output
    unnamed = runner.invoke(app, ["enroll", str(model), str(tmp_path / "checks"), "--class", " "])
    assert unnamed.exit_code == 2 and "class name is empty" in unnamed.output


def test_enroll_keeps_one_reference_per_image_and_refuses_a_clash(
    trained: Path, tmp_path: Path, one_thread: None
) -> None:
    """An enrolment run twice adds nothing the second time; a copy under another name is one image;
    an image of another class and a name that differs from a class only in case are refused."""
    import shutil

    model = shutil.copytree(trained, tmp_path / "model")
    for index in range(3):
        save(tmp_path / "checks" / f"c{index}.png", pattern("checks", 200 + index))
    first = runner.invoke(app, ["enroll", str(model), str(tmp_path / "checks"), "--class", "checks"])
    assert first.exit_code == 0 and "enrolled 3 image(s)" in first.output, first.output
    database = (model / REFERENCES_NAME).read_bytes()

    again = runner.invoke(app, ["enroll", str(model), str(tmp_path / "checks"), "--class", " checks "])
    assert again.exit_code == 0, again.output
    assert (
        "skipped 3 image(s) already enrolled as 'checks'" in again.output and "nothing added" in again.output
    )
    assert (model / REFERENCES_NAME).read_bytes() == database

    save(tmp_path / "more" / "c3.png", pattern("checks", 203))
    shutil.copy(tmp_path / "checks" / "c0.png", tmp_path / "more" / "copy.png")
    save(tmp_path / "more" / "c3 again.png", pattern("checks", 203))
    more = runner.invoke(app, ["enroll", str(model), str(tmp_path / "more"), "--class", "checks"])
    assert more.exit_code == 0, more.output
    assert (
        "enrolled 1 image(s)" in more.output
        and "skipped 1" in more.output
        and "1 image(s) repeat" in more.output
    )
    assert read_card(model).class_names == ["blob", "dots", "frame", "checks"]

    references = runner.invoke(
        app, ["enroll", str(model), str(trained.parent.parent / "data" / "dots"), "-c", "x"]
    )
    assert references.exit_code == 1 and "already a reference of class 'dots'" in references.output
    assert read_card(model).class_names[-1] == "checks"  # nothing written

    clash = runner.invoke(app, ["enroll", str(model), str(tmp_path / "more"), "--class", "Checks"])
    assert clash.exit_code == 2 and "only in letter case" in clash.output
    # A class saved with outer spaces (by an older version, or by hand) is still the class named so.
    card = model / "model.yaml"
    card.write_text(card.read_text().replace("- checks\n", "- 'checks '\n", 1))
    save(tmp_path / "spaced" / "c5.png", pattern("checks", 205))
    spaced = runner.invoke(app, ["enroll", str(model), str(tmp_path / "spaced"), "--class", "checks "])
    assert spaced.exit_code == 0 and "as class 'checks '" in spaced.output, spaced.output


def test_two_enrolments_at_once_keep_both_classes(
    trained: Path, tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each enrolment reads the database, then writes it: without the model folder's lock the
    second to write would drop the first one's class."""
    import shutil
    import threading
    import time

    import defectkit.inference.enroll as enrolment
    from defectkit.inference.saved_model import load_model

    model = shutil.copytree(trained, tmp_path / "model")
    slow_reader = threading.Event()

    def load_slowly(directory: Path) -> Any:
        loaded = load_model(directory)
        if not slow_reader.is_set():
            slow_reader.set()
            time.sleep(0.5)  # the other enrolment starts while this one holds the old database
        return loaded

    monkeypatch.setattr(enrolment, "load_model", load_slowly)
    errors: list[BaseException] = []

    images = {
        "checks": [save(tmp_path / f"checks{i}.png", pattern("checks", i)) for i in (1, 2)],
        "dim": [save(tmp_path / f"dim{i}.png", pattern("blob", 300 + i) // 2) for i in (1, 2)],
    }

    def enroll(kind: str) -> None:
        try:
            enrolment.enroll(model, kind, images[kind])
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    first = threading.Thread(target=enroll, args=("checks",))
    first.start()
    assert slow_reader.wait(30)
    second = threading.Thread(target=enroll, args=("dim",))
    second.start()
    first.join(60)
    second.join(60)
    assert not errors, errors
    assert read_card(model).class_names == ["blob", "dots", "frame", "checks", "dim"]
    loaded, card = load_model(model)
    labels = cast(Any, loaded).reference_labels
    assert [int((labels == card.class_names.index(k)).sum()) for k in ("checks", "dim")] == [2, 2]


def test_a_failed_export_at_enrolment_leaves_no_stale_graph(
    trained: Path, tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from defectkit.inference.export import ExportError
    from defectkit.inference.saved_model import ONNX_NAME

    model = shutil.copytree(trained, tmp_path / "model")
    (model / ONNX_NAME).write_bytes(b"stands for a graph that knows the old classes only")

    def refuse(directory: Path) -> None:
        raise ExportError(f"{directory}: exported graph disagrees with PyTorch; nothing written")

    monkeypatch.setattr("defectkit.inference.export.export_onnx", refuse)
    for index in range(2):
        save(tmp_path / "checks" / f"c{index}.png", pattern("checks", 200 + index))
    result = runner.invoke(app, ["enroll", str(model), str(tmp_path / "checks"), "--class", "checks"])
    assert result.exit_code == 1 and "nothing written" in result.output and "was removed" in result.output
    # A service on backend auto now takes the torch backend, which knows the new class.
    assert not (model / ONNX_NAME).exists() and read_card(model).class_names[-1] == "checks"
    assert "checks" in load_inspector(model).inspect(pattern("checks", 200)).class_scores


def test_eval_reports_accuracy_confusion_and_grad_cam_sheet(
    trained: Path, tmp_path: Path, one_thread: None
) -> None:
    data = tmp_path / "held-out"
    rows = []
    for kind in ("dots", "frame", "blob", "checks"):  # checks: a class the model does not know
        for index in range(3):
            save(data / kind / f"{kind}{index}.png", pattern(kind, 200 + index))
            rows.append({"path": f"{kind}/{kind}{index}.png", "label": 1, "class": [kind]})
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["eval", str(trained), "--data", str(data), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    metrics = report["metrics"]
    assert metrics["n"] == 9
    assert len(metrics["confusion_matrix"]) == 3 and set(metrics["per_class_accuracy"]) == {
        "blob",
        "dots",
        "frame",
    }
    assert len(report["skipped"]) == 3 and "not one the model knows" in report["skipped"][0]["reason"]
    rows_written = (tmp_path / "eval" / "scores.csv").read_text().splitlines()
    assert rows_written[0] == "path,truth,called,similarity,verdict" and len(rows_written) == 10
    calls = [row.split(",") for row in rows_written[1:]]
    assert sum(truth == called for _, truth, called, _, _ in calls) >= 6  # the best class, mostly right
    right = sum(truth == called and verdict != "unknown" for _, truth, called, _, verdict in calls)
    assert metrics["accuracy"] == pytest.approx(right / 9)  # an unknown call is never right
    unknown = sum(verdict == "unknown" for *_, verdict in calls)
    assert metrics["unknown_share"] == pytest.approx(unknown / 9)
    sheet = Image.open(tmp_path / "eval" / "worst.png")
    assert sheet.width > 160 and sheet.height > 160  # image + Grad-CAM tiles under two headers


def test_dihedral_tta_model_exports_with_parity_and_explains(tmp_path: Path, one_thread: None) -> None:
    from defectkit.inference.explain import explain_class
    from defectkit.inference.saved_model import load_model

    # References and the unknown threshold are embedded with TTA at train time.
    model = train_types(tmp_path, tta="dihedral")
    assert read_card(model).model_options["tta"] == "dihedral"
    # export compares onnxruntime with PyTorch and refuses to write a graph that disagrees
    result = runner.invoke(app, ["export", str(model)])
    assert result.exit_code == 0, result.output
    image = pattern("dots", 300)
    scores = [
        load_inspector(model, backend=b).inspect(np.rot90(image, k).copy()).class_scores
        for b in ("torch", "onnx")
        for k in (0, 1)
    ]
    for other in scores[1:]:
        assert other == pytest.approx(scores[0], abs=1e-4)
    network, card = load_model(model)
    heat = explain_class(network, card, image, class_index=0)
    assert heat.shape == image.shape[:2] and cast(Any, network).network.tta == "dihedral"
    # Grad-CAM explains the upright view: the map of the same network without TTA.
    cast(Any, network).network.tta = "none"
    assert np.allclose(explain_class(network, card, image, class_index=0), heat, atol=1e-6)
