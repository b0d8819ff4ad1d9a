"""The two-stage line (paper 002): a trained router, per-surface detectors, verdicts, the CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from conftest import tiny_model, tiny_segdec
from defectkit.cli.main import app
from defectkit.config import RunConfig, load_config
from defectkit.data.io import read_image
from defectkit.data.synthetic import SynthConfig, generate
from defectkit.inference.inspector import load_inspector
from defectkit.inference.line import LineSpec, cascade_verdict, load_line, write_line_spec
from defectkit.inference.saved_model import SavedModelError
from defectkit.training.line import DetectorStageSpec
from defectkit.training.sbad import train_router_model

SEEN = ["Class1", "Class2"]


def router_config(data: Path, **options: object) -> RunConfig:
    """A tiny router on the seen surfaces of generated ``data`` (tiny backbone, few epochs)."""
    return load_config(
        {
            "method": "sbad",
            "data": {"root": str(data), "surfaces": SEEN, "val_fraction": 0.25},
            "input": {"size": [64, 64], "channels": 3, "mean": [0.5], "std": [0.5]},
            "model": {"backbone": "test_efficientnet"},
            "method_options": {"hidden": 16, "ce_epochs": 2, "gan_epochs": 2, "critic_steps": 1, **options},
        }
    )


@pytest.fixture(scope="module")
def line_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A router trained on two of three generated surfaces (tiny backbone, few epochs) and
    random-weight detectors for the two seen surfaces."""
    root = tmp_path_factory.mktemp("line")
    data = root / "data"
    generate(data, SynthConfig(surfaces=3, per_surface=24, size=64, defect_fraction=0.5, test_fraction=0.25))
    train_router_model(router_config(data), root / "router", progress=False)
    detectors = {
        s: str(tiny_segdec(root / "detectors" / s, size=(64, 64), seed=k)) for k, s in enumerate(SEEN)
    }
    write_line_spec(root, LineSpec(router=str(root / "router" / "model"), detectors=detectors))
    return root


def test_cascade_verdict() -> None:
    assert cascade_verdict(True, True, 0.9, 0.5) == "unknown"
    assert cascade_verdict(False, False, 0.9, 0.5) == "unknown"  # no detector may judge it
    assert cascade_verdict(False, True, 0.9, 0.5) == "defect"
    assert cascade_verdict(False, True, 0.1, 0.5) == "ok"


def test_router_card_knows_seen_and_unseen_surfaces(line_dir: Path) -> None:
    line = load_line(line_dir)
    card = line.router.card
    assert card.surface_names == ["Class1", "Class2", "Class3"]  # seen first, then unseen-known
    assert line.router.seen == SEEN
    assert card.thresholds.unknown is not None and card.validation_metrics["n_seen"] == 2
    with pytest.raises(SavedModelError, match="surface router judges no defects"):
        load_inspector(line_dir / "router" / "model")


def test_line_verdicts_follow_router_and_detectors(line_dir: Path) -> None:
    line = load_line(line_dir)
    paths = sorted((line_dir / "data").glob("Class*/Test/*.PNG"))
    images = [read_image(p) for p in paths]
    results = line.inspect_batch(images, [str(p) for p in paths])
    assert len(results) == len(paths)
    routes = line.router.route_batch(images)
    for (inspection, heatmap), route, path in zip(results, routes, paths, strict=True):
        assert inspection.image == str(path)
        assert inspection.unseen_score == pytest.approx(route.unseen_score, rel=1e-5)
        if route.unknown:
            assert inspection.verdict == "unknown" and inspection.surface is None
            assert len(inspection.attributes) == 3 and heatmap is None
            assert inspection.attribute_vector == pytest.approx(route.attributes.tolist(), rel=1e-5)
            assert len(inspection.attribute_vector) == len(line.router.network.attribute_names)
        else:
            detector = line.detectors[route.surface]
            expected = detector.inspect(images[paths.index(path)])
            assert inspection.surface == route.surface
            assert inspection.verdict == expected.verdict and inspection.score == pytest.approx(
                expected.score
            )
    # One image alone gives the same verdict as in the batch.
    alone = line.inspect(paths[0])
    assert alone.verdict == results[0][0].verdict


def test_an_unknown_carries_its_attribute_vector_and_words(line_dir: Path) -> None:
    line = load_line(line_dir)
    line.router.threshold = float("-inf")  # every image raises the unseen alert
    paths = sorted((line_dir / "data").glob("Class*/Test/*.PNG"))[:4]
    images = [read_image(p) for p in paths]
    routes = line.router.route_batch(images)
    judged = line.inspect_batch(images, [str(p) for p in paths])
    for (inspection, heatmap), route in zip(judged, routes, strict=True):
        assert inspection.verdict == "unknown" and inspection.surface is None and heatmap is None
        assert inspection.attribute_vector == pytest.approx(route.attributes.tolist(), rel=1e-5)
        assert len(inspection.attribute_vector) == len(line.router.network.attribute_names)
        assert inspection.attributes == line.router.describe(route)


def test_line_without_a_detector_for_a_surface_calls_it_unknown(line_dir: Path, tmp_path: Path) -> None:
    spec = LineSpec(
        router=str(line_dir / "router" / "model"),
        detectors={"Class1": str(line_dir / "detectors" / "Class1")},
    )
    write_line_spec(tmp_path, spec)
    line = load_line(tmp_path)
    paths = sorted((line_dir / "data" / "Class2" / "Test").glob("*.PNG"))
    for inspection in (line.inspect(p) for p in paths):
        if inspection.surface == "Class2" or inspection.surface is None:
            assert inspection.verdict == "unknown"
    ran = CliRunner().invoke(app, ["line", "run", str(tmp_path), str(paths[0]), "-o", str(tmp_path / "out")])
    assert ran.exit_code == 0 and "no detector for seen surface(s) Class2" in ran.output, ran.output
    bad = LineSpec(router=spec.router, detectors={"Steel": spec.detectors["Class1"]})
    write_line_spec(tmp_path, bad)
    with pytest.raises(SavedModelError, match="Steel"):
        load_line(tmp_path)


def test_a_lines_name_changes_with_any_of_its_models(line_dir: Path, tmp_path: Path) -> None:
    import shutil

    detector = shutil.copytree(line_dir / "detectors" / "Class1", tmp_path / "elsewhere" / "Class1")
    spec = LineSpec(router=str(line_dir / "router" / "model"), detectors={"Class1": str(detector)})
    write_line_spec(tmp_path / "line", spec)
    before = load_line(tmp_path / "line").name
    card = detector / "model.yaml"
    card.write_text(card.read_text().replace("decision: 0.5", "decision: 0.6"))
    # The detector lives outside the line's folder, and line.yaml did not change.
    assert before.startswith("line@") and load_line(tmp_path / "line").name != before


def test_a_nearest_seen_router_saves_its_memory_and_scores_with_it(line_dir: Path, tmp_path: Path) -> None:
    config = router_config(line_dir / "data", unseen_score="nearest_seen", memory_size=10)
    train_router_model(config, tmp_path / "router", progress=False)
    detectors = {s: str(line_dir / "detectors" / s) for s in SEEN}
    write_line_spec(tmp_path, LineSpec(router=str(tmp_path / "router" / "model"), detectors=detectors))
    line = load_line(tmp_path)
    card = line.router.card
    assert card.model_options["unseen_score"] == "nearest_seen" and card.model_options["memory_size"] == 10
    memory = line.router.network.router.memory  # the trained rows, not the card's placeholder
    assert memory.shape[0] == 10 and torch.allclose(memory.norm(dim=1), torch.ones(10))
    assert not torch.allclose(memory[0], memory[1])
    paths = sorted((line_dir / "data").glob("Class*/Test/*.PNG"))
    scores = [line.inspect(p).unseen_score for p in paths]
    assert all(s is not None and 0.0 <= s <= 2.0 for s in scores)  # one minus a cosine similarity
    assert card.thresholds.unknown is not None and 0.0 <= card.thresholds.unknown <= 2.0


def test_a_router_whose_backbone_learnt_the_seen_attributes_trains_and_loads(
    line_dir: Path, tmp_path: Path
) -> None:
    config = router_config(line_dir / "data", backbone_epochs=1, backbone_target="attributes")
    model = train_router_model(config, tmp_path / "router", progress=False)
    write_line_spec(tmp_path, LineSpec(router=str(model), detectors={}))
    route = load_line(tmp_path).router.route_batch(
        [read_image(next((line_dir / "data").glob("Class1/Test/*.PNG")))]
    )
    assert len(route) == 1 and np.isfinite(route[0].unseen_score)


def test_a_router_on_stage_statistics_trains_saves_and_loads(line_dir: Path, tmp_path: Path) -> None:
    config = router_config(line_dir / "data")
    config = config.model_copy(update={"model": {**config.model, "pooling": "stages"}})
    model = train_router_model(config, tmp_path / "router", progress=False)
    write_line_spec(tmp_path, LineSpec(router=str(model), detectors={}))
    router = load_line(tmp_path).router
    backbone = router.network.backbone
    assert router.card.model_options["pooling"] == "stages" and backbone.pooling == "stages"
    assert router.card.model_options["feature_dim"] == backbone.dim != backbone.network.num_features
    route = router.route_batch([read_image(next((line_dir / "data").glob("Class1/Test/*.PNG")))])
    assert len(route) == 1 and np.isfinite(route[0].unseen_score)


def test_line_run_cli_writes_results_with_surfaces(line_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    images = str(line_dir / "data" / "Class1" / "Test" / "*.PNG")
    result = CliRunner().invoke(
        app, ["line", "run", str(line_dir), images, str(broken), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 1, result.output  # the broken file is reported, the rest written
    assert "broken.png" in result.output
    with open(tmp_path / "out" / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    judged = [r for r in rows if r["verdict"]]
    assert len(judged) == len(list((line_dir / "data" / "Class1" / "Test").glob("*.PNG")))
    for row in judged:
        record = json.loads((tmp_path / "out" / row["output"]).read_text())
        assert (row["surface"] or None) == record["surface"]
        assert (tmp_path / "out" / row["output"].replace(".json", ".png")).is_file()
    missing = CliRunner().invoke(app, ["line", "run", str(tmp_path), images, "--out", str(tmp_path / "o2")])
    assert missing.exit_code != 0 and "line.yaml" in missing.output
    for row in judged:  # an unknown was judged by no detector: its score is left blank
        assert np.isfinite(float(row["unseen_score"]))
        assert (row["score"] == "") == (row["verdict"] == "unknown")


def test_the_service_serves_a_whole_line(line_dir: Path, tmp_path: Path) -> None:
    """`defectkit serve LINE_DIR`: each upload routed and judged as load_line judges it, recorded
    with its surface; an unseen surface's alert keeps its attributes."""
    pytest.importorskip("fastapi", reason="the service needs the serve extra")
    pytest.importorskip("sqlalchemy", reason="the service needs the serve extra")
    from fastapi.testclient import TestClient

    from defectkit.serve import ServeSettings, create_app

    paths = sorted((line_dir / "data").glob("Class*/Test/*.PNG"))
    assert {p.parts[-3] for p in paths} == {*SEEN, "Class3"}  # the unseen surface is uploaded too
    expected = load_line(line_dir).inspect_batch([read_image(p) for p in paths], [p.name for p in paths])
    settings = ServeSettings(model_dir=line_dir, data_dir=tmp_path / "serve", max_wait_ms=2.0, durable=False)
    with TestClient(create_app(settings)) as client:
        described = client.get("/v1/models").json()[0]
        assert described["method"] == "line" and described["surfaces"] == SEEN
        assert sorted(described["detectors"]) == SEEN
        assert client.get("/v1/health").json()["backend"].startswith("line/")
        # One batch request: seen and unseen surfaces in the same micro-batches.
        files = [("files", (path.name, path.read_bytes(), "image/png")) for path in paths]
        items = client.post("/v1/inspect/batch", files=files).json()["items"]
        for item, (want, _) in zip(items, expected, strict=True):
            body = item["inspection"]
            assert (body["image"], body["verdict"], body["surface"]) == (
                want.image,
                want.verdict,
                want.surface,
            )
            assert body["score"] == pytest.approx(want.score, abs=1e-5)
            assert body["attributes"] == want.attributes
        # Overlays not asked for at inspection are rendered on demand, routed again.
        assert all(client.get(item["inspection"]["overlay_url"]).status_code == 200 for item in items)
        listed = client.get("/v1/inspections", params={"surface": "Class1", "limit": 100}).json()
        assert listed["total"] == sum(want.surface == "Class1" for want, _ in expected)


def test_line_train_cli_trains_router_and_detectors_and_resumes(line_dir: Path, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    spec = tmp_path / "line.yaml"
    spec.write_text(
        f"""data_root: {line_dir / "data"}
surfaces: [Class1, Class2]
router:
  config: {repo / "configs/sbad/dagm-mix.yaml"}
  set: [model.backbone=test_efficientnet, weights=null, "input.size=[64,64]", method_options.hidden=16,
        method_options.ce_epochs=1, method_options.gan_epochs=1, method_options.critic_steps=1]
detector:
  config: {repo / "configs/segdec/synthetic.yaml"}
  set: [trainer.epochs=1, trainer.val_every=1, "input.size=[64,64]", "model.widths=[8,8,8]",
        model.volume_channels=16, "model.decision_widths=[4,4,4]"]
  per_surface: {{Class2: ["input.size=[72,72]"]}}
"""
    )
    out = tmp_path / "line"
    stranger = tmp_path / "stranger.yaml"
    stranger.write_text(spec.read_text().replace("{Class2:", "{Class9:"))
    refused = CliRunner().invoke(app, ["line", "train", str(stranger), "--out", str(out), "-q"])
    assert refused.exit_code != 0 and "names Class9, which the data has no" in refused.output, refused.output
    assert not out.exists()  # refused before anything trained
    result = CliRunner().invoke(app, ["line", "train", str(spec), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    line = load_line(out)
    assert sorted(line.detectors) == SEEN and line.router.seen == SEEN
    sizes = {s: load_inspector(out / "detectors" / s / "model").card.input.size for s in SEEN}
    assert sizes == {"Class1": (64, 64), "Class2": (72, 72)}  # Class2's own override
    assert line.inspect(next((line_dir / "data" / "Class1" / "Test").glob("*.PNG"))).verdict in (
        "ok",
        "defect",
        "unknown",
    )
    (out / "line.yaml").write_text(
        (out / "line.yaml").read_text().replace("attributes_top: 3", "attributes_top: 5")
    )
    again = CliRunner().invoke(app, ["line", "train", str(spec), "--out", str(out), "-q"])
    assert again.exit_code == 0 and again.output.count("kept") == 4, again.output
    assert load_line(out).attributes_top == 5  # a hand edit the training file does not contradict
    original = spec.read_text()
    spec.write_text(original.replace("input.size=[72,72]", "input.size=[80,80]"))
    resized = CliRunner().invoke(app, ["line", "train", str(spec), "--out", str(out), "-q"])
    assert resized.exit_code != 0 and "Class2/model: a detector trained with other input" in resized.output
    spec.write_text(
        original.replace("critic_steps=1]", "critic_steps=1, method_options.unseen_score=nearest_seen]")
    )
    rescored = CliRunner().invoke(app, ["line", "train", str(spec), "--out", str(out), "-q"])
    assert rescored.exit_code != 0 and "'nearest_seen'" in rescored.output, rescored.output
    spec.write_text(original.replace("surfaces: [Class1, Class2]", "surfaces: [Class1, Class3]"))
    changed = CliRunner().invoke(app, ["line", "train", str(spec), "--out", str(out), "-q"])
    assert changed.exit_code != 0 and "remove" in changed.output


def test_line_train_refuses_mistakes_before_training(
    line_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from defectkit.training import line as line_training

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained although the line file was refused")

    monkeypatch.setattr("defectkit.training.sbad.train_router_model", no_training)
    repo = Path(__file__).resolve().parents[2]
    good = f"""data_root: {line_dir / "data"}
router:
  config: {repo / "configs/sbad/dagm-mix.yaml"}
  set: [model.backbone=test_efficientnet, weights=null]
detector:
  config: {repo / "configs/segdec/synthetic.yaml"}
"""
    cases = {
        # '#' would start a YAML comment inside a --set value: the folder is taken as written.
        "hash": (
            good.replace(f"data_root: {line_dir / 'data'}", f'data_root: "{line_dir / "data #1"}"'),
            "data #1",
        ),
        "empty surfaces": (good + "surfaces: []\n", "surfaces: List should have at least 1 item"),
        "detector": (good.replace("segdec/synthetic.yaml", "scl_arcface/neu-cls.yaml"), "no OK/NG decision"),
        "classifier": (good + "classifier: types/model\n", "types/model/model.yaml: not found"),
        "typo": (good + "attribute_top: 5\n", "attribute_top: Extra inputs are not permitted"),
        "no attributes": (good + "attributes_top: 0\n", "attributes_top: Input should be greater than"),
    }
    for name, (text, expected) in cases.items():
        spec = tmp_path / f"{name.replace(' ', '-')}.yaml"
        spec.write_text(text)
        out = tmp_path / f"out-{spec.stem}"
        result = CliRunner().invoke(app, ["line", "train", str(spec), "--out", str(out), "-q"])
        assert result.exit_code in (1, 2) and "Traceback" not in result.output, (name, result.output)
        assert expected in " ".join(result.output.split()), (name, result.output)
        assert len(result.output.strip().splitlines()) <= 2 and not out.exists(), name
    spec = tmp_path / "good.yaml"
    spec.write_text(good)
    (tmp_path / "afile").write_text("")
    in_the_way = CliRunner().invoke(app, ["line", "train", str(spec), "--out", str(tmp_path / "afile"), "-q"])
    assert in_the_way.exit_code == 1 and "afile" in in_the_way.output
    # A stage config is found beside the line file, whatever the working folder holds.
    (tmp_path / "lines").mkdir()
    (tmp_path / "lines" / "router.yaml").write_text("")
    (tmp_path / "router.yaml").write_text("")
    monkeypatch.chdir(tmp_path)
    assert line_training._config_path("router.yaml", tmp_path / "lines") == tmp_path / "lines" / "router.yaml"


def test_line_files_name_their_mistakes_on_one_line(line_dir: Path, tmp_path: Path) -> None:
    shutil.copy(line_dir / "line.yaml", tmp_path / "line.yaml")
    text = (tmp_path / "line.yaml").read_text()
    (tmp_path / "line.yaml").write_text(text + "attribute_top: 5\n")
    with pytest.raises(SavedModelError, match=r"line.yaml: attribute_top: Extra inputs are not permitted$"):
        load_line(tmp_path)
    (tmp_path / "line.yaml").write_bytes("# r\xe9sum\xe9\n".encode("latin-1") + text.encode())
    with pytest.raises(SavedModelError, match=r"line\.yaml: not UTF-8"):
        load_line(tmp_path)
    # A defect-type classifier as a detector would call every image of its surface defect.
    typed = tmp_path / "typed"
    shutil.copytree(line_dir / "detectors" / "Class1", typed)
    card = typed / "model.yaml"
    card.write_text(card.read_text().replace("  unknown: null\n", "  unknown: 0.5\n", 1))
    detectors = {"Class1": str(typed), "Class2": str(line_dir / "detectors" / "Class2")}
    write_line_spec(tmp_path, LineSpec(router=str(line_dir / "router" / "model"), detectors=detectors))
    with pytest.raises(SavedModelError, match=r"detectors\.Class1: .* gives no OK/NG decision"):
        load_line(tmp_path)


def test_a_refused_line_eval_leaves_no_report_folder(
    line_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise ValueError("no surface")

    monkeypatch.setattr("defectkit.evaluation.line.evaluate_line", refused)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["line", "eval", str(line_dir), "--data", str(line_dir / "data"), "--out", str(out)]
    )
    assert result.exit_code == 1 and "no surface" in result.output and not out.exists()


def test_per_surface_overrides_follow_the_profile_and_leave_data_alone() -> None:
    stage = DetectorStageSpec(
        config="segdec.yaml",
        per_surface={"Class3": ["input.size=[192,192]"], "Class8": {"cpu": ["trainer.epochs=40"]}},
    )
    assert stage.overrides("Class3", None) == stage.overrides("Class3", "paper") == ["input.size=[192,192]"]
    assert stage.overrides("Class8", "cpu") == ["trainer.epochs=40"]
    assert stage.overrides("Class8", "paper") == stage.overrides("Class8", None) == []
    assert stage.overrides("Class1", "cpu") == []
    with pytest.raises(ValidationError, match="would change its data"):
        DetectorStageSpec(config="segdec.yaml", per_surface={"Class3": {"cpu": ["data.surface=Class4"]}})


def test_line_eval_scores_every_test_image_end_to_end(line_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app, ["line", "eval", str(line_dir), "--data", str(line_dir / "data"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "routing_accuracy" in result.output and (out / "confusion.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    counts = np.asarray(metrics["confusion"]["counts"])
    tests = sorted((line_dir / "data").glob("Class*/Test/*.PNG"))
    assert metrics["n_images"] == counts.sum() == len(tests) and metrics["seen_surfaces"] == SEEN
    assert counts[2].sum() == sum(p.parts[-3] == "Class3" for p in tests)  # the unseen row
    assert 0.0 <= metrics["alert_auroc"] <= 1.0 and metrics["failures"] == []


def test_line_eval_exits_1_when_an_image_cannot_be_judged(line_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(line_dir / "data", data)
    broken = sorted(data.glob("Class1/Test/*.PNG"))[0]
    broken.write_bytes(b"not an image")
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["line", "eval", str(line_dir), "--data", str(data), "--out", str(out)])
    assert result.exit_code == 1 and "1 image(s) could not be judged" in result.output
    assert (out / "metrics.json").is_file()  # the report covers the rest


def test_a_line_takes_any_detector_and_asks_its_classifier_the_type_of_a_defect(
    line_dir: Path, tmp_path: Path
) -> None:
    # Decision 0: every part these two call defective, so each routed part reaches the classifier.
    weak = tiny_model(tmp_path / "weak", "weak_lnet", size=(128, 64), decision=0.0)
    types = tiny_model(
        tmp_path / "types",
        "tlu_net",
        size=(64, 64),
        decision=0.0,
        options={"num_classes": 2},
        class_names=["scratch", "pit"],
    )
    spec = LineSpec(
        router=str(line_dir / "router" / "model"),
        detectors={"Class1": str(weak), "Class2": str(line_dir / "detectors" / "Class2")},
        classifier=str(types),
    )
    write_line_spec(tmp_path, spec)
    line = load_line(tmp_path)
    classifier = load_inspector(types)
    routed = 0
    for path in sorted((line_dir / "data" / "Class1" / "Test").glob("*.PNG")):
        inspection = line.inspect(path)
        if inspection.surface == "Class1" and inspection.verdict != "unknown":
            routed += 1
            expected = classifier.inspect(read_image(path), str(path))
            assert inspection.verdict == "defect" and inspection.model.endswith("/Class1")
            assert inspection.defect_class == expected.defect_class is not None
            assert inspection.class_scores == expected.class_scores
        elif inspection.verdict == "ok":
            assert inspection.defect_class is None
    assert routed > 0


def test_load_line_is_part_of_the_package_api() -> None:
    import defectkit

    assert defectkit.load_line is load_line and "load_line" in defectkit.__all__


def _edit_card(model: Path, edit: object) -> None:
    import yaml

    card = yaml.safe_load((model / "model.yaml").read_text())
    edit(card)  # type: ignore[operator]
    (model / "model.yaml").write_text(yaml.safe_dump(card, sort_keys=False))


def test_a_line_refuses_models_that_would_judge_wrongly(line_dir: Path, tmp_path: Path) -> None:
    """Each of these loaded before and judged without a word: a detector of another surface, a
    NaN threshold (every score passes as ok), a router card naming fewer surfaces than it
    routes to, and an OK/NG model listed as the defect-type classifier."""
    router = str(line_dir / "router" / "model")
    class2 = shutil.copytree(line_dir / "detectors" / "Class2", tmp_path / "class2")
    _edit_card(class2, lambda card: card["config"].setdefault("data", {}).update(surface="Class2"))
    swapped = {"Class1": str(class2), "Class2": str(line_dir / "detectors" / "Class1")}
    write_line_spec(tmp_path, LineSpec(router=router, detectors=swapped))
    with pytest.raises(
        SavedModelError, match=r"detectors\.Class1: .* trained on surface 'Class2', not 'Class1'"
    ):
        load_line(tmp_path)

    nan = shutil.copytree(line_dir / "detectors" / "Class1", tmp_path / "nan")
    (nan / "model.yaml").write_text(
        (nan / "model.yaml").read_text().replace("decision: 0.5", "decision: .nan")
    )
    write_line_spec(tmp_path, LineSpec(router=router, detectors={"Class1": str(nan)}))
    with pytest.raises(SavedModelError, match=r"thresholds\.decision: .*finite number, not nan\)$"):
        load_line(tmp_path)

    short = shutil.copytree(line_dir / "router" / "model", tmp_path / "router")
    _edit_card(short, lambda card: card.update(surface_names=card["surface_names"][:1]))
    detectors = {s: str(line_dir / "detectors" / s) for s in SEEN}
    write_line_spec(tmp_path, LineSpec(router=str(short), detectors=detectors))
    with pytest.raises(SavedModelError, match="routes to 2 seen surfaces but its model card names 1"):
        load_line(tmp_path)

    as_classifier = LineSpec(router=router, detectors=detectors, classifier=detectors["Class1"])
    write_line_spec(tmp_path, as_classifier)
    with pytest.raises(
        SavedModelError, match=r"classifier: .* gives an OK/NG decision and names no defect types"
    ):
        load_line(tmp_path)


def test_a_router_that_gives_nan_judges_nothing(line_dir: Path, tmp_path: Path) -> None:
    """NaN compares false with the alert threshold and argmax takes the first surface: the image
    went to Class1's detector, whatever its surface."""
    from defectkit.inference.inspector import NonFiniteScoreError

    line = load_line(line_dir)
    with torch.no_grad():
        for parameter in line.router.network.parameters():
            parameter.fill_(float("nan"))
    image = sorted((line_dir / "data" / "Class2" / "Test").glob("*.PNG"))[0]
    with pytest.raises(NonFiniteScoreError, match="surface router gave a non-finite score"):
        line.inspect(image)


def test_an_array_in_channels_first_layout_is_refused_not_misread(line_dir: Path) -> None:
    line = load_line(line_dir)
    image = read_image(sorted((line_dir / "data" / "Class1" / "Test").glob("*.PNG"))[0])
    colour = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    assert line.inspect(colour).verdict in ("ok", "defect", "unknown")
    for bad in (colour.transpose(2, 0, 1), colour[:0], colour[None]):
        with pytest.raises(ValueError, match=r"HxW \(grey\) or HxWxC .* got shape"):
            line.inspect(bad)


def test_line_eval_keeps_a_users_files_and_names_mismatched_surfaces(line_dir: Path, tmp_path: Path) -> None:
    from defectkit.data.formats import read_dataset
    from defectkit.evaluation.line import evaluate_line

    out = tmp_path / "notes"
    out.mkdir()
    (out / "metrics.json").write_text('{"my": "notes"}')
    args = ["line", "eval", str(line_dir), "--data", str(line_dir / "data"), "--out", str(out)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "no defectkit report wrote" in refused.output
    assert (out / "metrics.json").read_text() == '{"my": "notes"}'
    report = tmp_path / "report"
    for _ in range(2):  # a rerun writes over its own earlier report
        again = CliRunner().invoke(app, [*args[:-1], str(report)])
        assert again.exit_code == 0, again.output

    samples = read_dataset(line_dir / "data").samples
    lower = [s.replace(surface=str(s.surface).lower()) for s in samples]
    with pytest.raises(ValueError, match=r"none of the images' surfaces \(class1, class2, class3\)"):
        evaluate_line(load_line(line_dir), lower)
    unseen_only = [s for s in samples if s.surface == "Class3"][:4]  # a fair test of the alert alone
    assert evaluate_line(load_line(line_dir), unseen_only).n_images == 4


def test_a_card_with_a_mistake_is_named_on_one_line(line_dir: Path, tmp_path: Path) -> None:
    from defectkit.inference.saved_model import read_card

    model = shutil.copytree(line_dir / "detectors" / "Class1", tmp_path / "model")
    text = (model / "model.yaml").read_text()
    (model / "model.yaml").write_text(text + "treshold: 0.3\n")
    with pytest.raises(SavedModelError) as typo:
        read_card(model)
    assert "treshold: Extra inputs are not permitted" in str(typo.value) and "\n" not in str(typo.value)
    (model / "model.yaml").write_text(text + "method: segdec\n")
    with pytest.raises(SavedModelError, match=r"not YAML: line \d+, column 1: key 'method' appears twice"):
        read_card(model)
    (model / "model.yaml").write_text(text + "thresholds: [0.3\n")
    with pytest.raises(SavedModelError, match=r"not YAML: line \d+, column \d+: ") as broken:
        read_card(model)
    assert "\n" not in str(broken.value)


def test_a_kept_detector_of_another_surface_is_refused(line_dir: Path, tmp_path: Path) -> None:
    """On macOS and Windows detectors/class2 and detectors/Class2 are one folder: a detector kept
    for one surface may be another's."""
    from defectkit.config import ConfigError
    from defectkit.training.line import check_detector

    model = shutil.copytree(line_dir / "detectors" / "Class2", tmp_path / "model")
    _edit_card(model, lambda card: card["config"].setdefault("data", {}).update(surface="class2"))
    data = {"root": str(line_dir / "data"), "surface": "Class2"}
    config = load_config({"method": "segdec", "data": data, "input": {"size": [64, 64]}})
    with pytest.raises(ConfigError, match="trained on surface 'class2', not 'Class2'; remove it to retrain"):
        check_detector(model, config)
