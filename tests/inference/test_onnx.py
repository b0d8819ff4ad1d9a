"""ONNX export: the exported graph (pre-processing included) matches PyTorch on any image size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import texture, tiny_model, tiny_segdec
from defectkit.cli.main import app
from defectkit.inference.inspector import load_inspector
from defectkit.inference.saved_model import (
    ONNX_NAME,
    SavedModelError,
)

runner = CliRunner()
# segdec and weak_lnet need input sides divisible by 64 (8 in the trunk, 8 more in the decision
# net), tlu_net by 32 (its encoder's five halvings), aux_net by 64 (its coarsest detection level).
SIZE = (96, 64)
# Heat-map side = input side // stride: segdec and weak_lnet at 1/8, tlu_net's and aux_net's masks
# at full size.
HEATMAP_STRIDE = {"segdec": 8, "weak_lnet": 8, "tlu_net": 1, "aux_net": 1}
# (height, width, channels of the image file): smaller and larger than the model, odd, both layouts.
IMAGES = [
    (100, 40, 1), (257, 131, 1), (64, 32, 1), (96, 64, 1), (31, 17, 1),
    (513, 77, 1), (128, 128, 1), (9, 300, 1), (200, 97, 1), (96, 65, 1),
    (100, 40, 3), (257, 131, 3), (64, 32, 3), (96, 64, 3), (31, 17, 3),
    (513, 77, 3), (128, 128, 3), (9, 300, 3), (200, 97, 3), (2, 2, 3),
]  # fmt: skip


@pytest.fixture(
    scope="module",
    params=[
        ("segdec", 1, SIZE),
        ("segdec", 3, SIZE),
        ("weak_lnet", 1, (128, 64)),
        ("tlu_net", 3, (64, 64)),
        # Judged by its mask peak (image_score): the classifier's path is exported in
        # tests/training/test_aux_net.py, so each aux_net export here covers the other one.
        ("aux_net", 3, (64, 128), {"image_score": "mask_peak"}),
    ],
    ids=["segdec-grey", "segdec-rgb", "weak_lnet-grey", "tlu_net-rgb", "aux_net-rgb-mask_peak"],
)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    method, channels, size, *options = request.param
    directory = tiny_model(
        tmp_path_factory.mktemp("models") / "tiny", method, channels, size=size, seed=channels,
        options=options[0] if options else None,
    )  # fmt: skip
    result = runner.invoke(app, ["export", str(directory), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert (directory / ONNX_NAME).is_file() and "wrote" in result.output
    assert not list(directory.glob(".*tmp"))
    return directory


def test_onnx_matches_torch_on_any_size(exported: Path) -> None:
    torch_inspector = load_inspector(exported)
    onnx_inspector = load_inspector(exported, backend="onnx")
    assert onnx_inspector.backend.name == "onnx"
    # All 20 sizes through each method's first model; a spread of them through segdec's RGB one.
    card = torch_inspector.card
    images = IMAGES if card.input.channels == 1 or card.method != "segdec" else IMAGES[::3]
    score_diff = heatmap_diff = 0.0
    for seed, (height, width, channels) in enumerate(images):
        image = texture(seed, height, width, channels)
        expected, got = torch_inspector.score(image), onnx_inspector.score(image)
        assert expected.heatmap is not None and got.heatmap is not None
        height, width = torch_inspector.card.input.size
        stride = HEATMAP_STRIDE[torch_inspector.card.method]
        assert got.heatmap.shape == expected.heatmap.shape == (height // stride, width // stride)
        score_diff = max(score_diff, abs(expected.score - got.score))
        heatmap_diff = max(heatmap_diff, float(np.abs(expected.heatmap - got.heatmap).max()))
    assert score_diff < 1e-4, score_diff
    assert heatmap_diff < 1e-4, heatmap_diff
    image = texture(99, 140, 70)
    a, b = torch_inspector.inspect(image), onnx_inspector.inspect(image)
    assert (a.verdict, a.threshold) == (b.verdict, b.threshold) and abs(a.score - b.score) < 1e-4
    if card.model_options.get("image_score") == "mask_peak":
        for inspector in (torch_inspector, onnx_inspector):
            scored = inspector.score(image)
            assert scored.heatmap is not None  # the verdict is the heat map's own peak
            assert scored.score == pytest.approx(float(scored.heatmap.max()), abs=1e-6)


def test_batches_score_like_single_images(exported: Path) -> None:
    """A micro-batch (the service's) gives each image the score it gets alone, on both back-ends."""
    channels = load_inspector(exported).card.input.channels
    # Two sizes interleaved: the inspector groups same-size images into one back-end call.
    images = [texture(seed, 80 + 40 * (seed % 2), 60, channels) for seed in range(5)]
    names = [f"image{i}" for i in range(5)]
    for backend in ("torch", "onnx"):
        inspector = load_inspector(exported, backend=backend)
        together = inspector.inspect_batch(images, names)
        for image, name, (inspection, heatmap) in zip(images, names, together, strict=True):
            alone, alone_heatmap = inspector.inspect_with_heatmap(image, name)
            assert inspection.image == name and abs(inspection.score - alone.score) < 1e-5
            assert heatmap is not None and alone_heatmap is not None
            assert heatmap.shape == image.shape[:2]
            assert float(np.abs(heatmap - alone_heatmap).max()) < 1e-5


def test_onnx_backend_needs_export(tmp_path: Path) -> None:
    directory = tiny_segdec(tmp_path / "plain")
    with pytest.raises(SavedModelError, match="defectkit export"):
        load_inspector(directory, backend="onnx")
    result = runner.invoke(
        app, ["predict", str(directory), str(tmp_path), "--out", str(tmp_path / "o"), "--backend", "onnx"]
    )
    assert result.exit_code == 1 and "defectkit export" in result.output and "Traceback" not in result.output


def test_export_errors_are_one_line(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["export", str(tmp_path / "nope")])
    assert missing.exit_code == 1, missing.output
    assert "nope" in missing.output and "Traceback" not in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    directory = tiny_segdec(tmp_path / "model")
    unknown = runner.invoke(app, ["export", str(directory), "--format", "tflite"])
    assert unknown.exit_code == 2 and "tflite" in unknown.output
    assert not (directory / ONNX_NAME).exists()
    # torch.export buries the model's own refusal under its advice: the message is the refusal.
    odd = tiny_model(tmp_path / "odd", "aux_net", 3, size=(64, 96))
    refused = runner.invoke(app, ["export", str(odd)])
    assert refused.exit_code == 1 and "multiples of 64" in refused.output and "64x96" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not (odd / ONNX_NAME).exists()


def test_an_interrupted_export_leaves_no_hidden_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from defectkit.inference import export

    def interrupted(*args: object, **kwargs: object) -> tuple[float, float, float]:
        raise KeyboardInterrupt  # Ctrl-C, or SIGTERM through the CLI, once the graph is written

    monkeypatch.setattr(export, "_parity", interrupted)
    directory = tiny_segdec(tmp_path / "model")
    with pytest.raises(KeyboardInterrupt):
        export.export_onnx(directory)
    assert not (directory / ONNX_NAME).exists() and not list(directory.glob(".*"))


def test_damaged_saved_models_are_one_line_errors(tmp_path: Path) -> None:
    from defectkit.inference.saved_model import CARD_NAME, WEIGHTS_NAME, load_model

    directory = tiny_segdec(tmp_path / "model")
    weights = (directory / WEIGHTS_NAME).read_bytes()
    (directory / WEIGHTS_NAME).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(SavedModelError, match=r"weights.safetensors: not a readable weights file"):
        load_model(directory)
    result = runner.invoke(app, ["export", str(directory)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (directory / WEIGHTS_NAME).write_bytes(weights)
    card = directory / CARD_NAME
    card.write_text(card.read_text().replace("model_options:\n", "model_options:\n  widthz: 3\n", 1))
    with pytest.raises(
        SavedModelError, match=r"model.yaml: model 'segdec': unknown option\(s\) \['widthz'\]"
    ):
        load_model(directory)


def test_parity_counts_a_nan_or_a_one_sided_infinity_as_a_disagreement() -> None:
    from defectkit.inference.export import _largest_difference

    inf, nan = np.inf, np.nan
    # -inf on both sides: a class without references scores so in both backends, and they agree.
    assert _largest_difference(np.array([-inf, 0.5]), np.array([-inf, 0.50001])) == pytest.approx(1e-5)
    for expected, got in (([0.5, 0.2], [0.5, nan]), ([nan], [nan]), ([-inf], [0.0]), ([inf], [-inf])):
        assert _largest_difference(np.array(expected), np.array(got)) == inf


def test_a_graph_older_than_the_weights_beside_it_is_refused(tmp_path: Path) -> None:
    import shutil

    from defectkit.inference.export import export_onnx
    from defectkit.inference.saved_model import WEIGHTS_NAME

    directory = tiny_segdec(tmp_path / "model", seed=1)
    export_onnx(directory)
    assert load_inspector(directory, backend="onnx").backend_name == "onnx"
    # New weights copied in by hand (a backup restored, a retrained model synced) after the export:
    # the old graph would judge under the new name and card.
    other = tiny_segdec(tmp_path / "other", seed=2)
    shutil.copy(other / WEIGHTS_NAME, directory / WEIGHTS_NAME)
    for backend in ("onnx", "auto"):
        with pytest.raises(
            SavedModelError, match=r"model\.onnx: exported from other weights.*defectkit export"
        ):
            load_inspector(directory, backend=backend)
    export_onnx(directory)
    assert load_inspector(directory, backend="auto").backend_name == "onnx"

    # onnxruntime raises types of its own (RuntimeException, Fail), no RuntimeError: predict and a
    # service batch fail that one image on a RuntimeError and go on with the rest.
    class Fail(Exception):
        pass

    class FailingSession:
        def run(self, *_: object) -> list[np.ndarray]:
            raise Fail("bad allocation")

    inspector = load_inspector(directory, backend="onnx")
    inspector.backend.session = FailingSession()  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match=r"model\.onnx: onnxruntime failed \(bad allocation\)"):
        inspector.inspect(texture(0, 96, 64))


def test_export_of_a_file_says_it_wants_the_folder(tmp_path: Path) -> None:
    card = tmp_path / "model.yaml"
    card.write_text("method: segdec\n")
    result = runner.invoke(app, ["export", str(card)])
    assert result.exit_code == 1 and "is a file; give the model's folder" in result.output
