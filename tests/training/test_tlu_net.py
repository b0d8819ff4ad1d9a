"""tlu_net (paper 001) on generated multi-class data: targets, training, multi-label inspection,
overlays, ONNX parity, and the tlu/<dataset> bench on fixtures in the real layouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import defectkit.evaluation.multilabel as multilabel_eval
import defectkit.training.engine as engine
from conftest import with_changes
from defectkit import load_inspector
from defectkit.bench.protocols import BenchRequest, run_protocol
from defectkit.config import load_config
from defectkit.data.masks import rle_encode
from defectkit.data.sample import Batch, Sample, collate
from defectkit.data.synthetic import SynthConfig, generate
from defectkit.evaluation.evaluate import evaluate_model
from defectkit.inference.export import export_onnx_checked
from defectkit.inference.inspector import Inspector
from defectkit.inference.overlay import render_overlay
from defectkit.inference.predict import predict_paths
from defectkit.inference.saved_model import read_card
from defectkit.models import create_model
from defectkit.training.targets import class_targets, mask_targets

SYNTH = {
    "mode": "multiclass",
    "surfaces": 2,
    "per_surface": 16,
    "size": 64,
    "defect_fraction": 0.6,
    "seed": 1,
}

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "method": "tlu_net",
        "seed": 0,
        "data": {"synthetic": SYNTH, "val_fraction": 0.25, "train_split": None},
        "input": {"size": [64, 64], "channels": 3},
        "augment": {"hflip": 0.5, "vflip": 0.5, "antialias": False},
        "model": {"encoder": "tf_efficientnet_lite0", "decoder_channels": [16, 16, 8, 8, 8]},
        "method_options": {"betas": [0.9, 0.999]},
        "trainer": {"epochs": 1, "lr": 0.001, "val_every": 1, "batch_size": 8, "restore_best": True},
    }
    return with_changes(config, **changes)


def test_model_shapes_and_stride() -> None:
    model = create_model("tlu_net", encoder="tf_efficientnet_lite0", num_classes=4).eval()
    with torch.no_grad():
        probabilities, masks = model.inspect(torch.rand(2, 3, 64, 96))
    assert probabilities.shape == (2, 4) and masks.shape == (2, 4, 64, 96)
    assert float(probabilities.min()) >= 0.0 and float(masks.max()) <= 1.0
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 60, 64))


def test_max_pooled_head_sees_one_hot_cell_that_averaging_dilutes() -> None:
    features = torch.zeros(1, 8, 4, 4)
    features[0, :, 1, 2] = 1.0
    scores = {}
    for pooling in ("avg", "max"):
        model = create_model("tlu_net", encoder="tf_efficientnet_lite0", classifier_pooling=pooling)
        pool, flatten = model.decision_head[0], model.decision_head[1]
        scores[pooling] = float(flatten(pool(features)).max())
    assert scores == {"avg": 1 / 16, "max": 1.0}
    with pytest.raises(ValueError, match="classifier_pooling"):
        create_model("tlu_net", encoder="tf_efficientnet_lite0", classifier_pooling="median")


def _batch(samples: list[Sample], k: int) -> Batch:
    return collate(samples, num_classes=k)


def test_targets_from_ids_stacks_and_labels() -> None:
    image = np.zeros((3, 4, 4), np.float32)
    ids = np.zeros((4, 4), np.int64)
    ids[0, 0], ids[1, 1] = 1, 3
    batch = _batch([Sample("a", image, label=1, classes=[1, 3], mask=ids)], 3)
    targets, known = class_targets(batch, 3)
    assert targets.tolist() == [[1.0, 0.0, 1.0]] and known.tolist() == [True]
    stack = mask_targets(batch.mask, 3)
    assert stack.shape == (1, 3, 4, 4) and stack[0, 0, 0, 0] == 1 and stack[0, 2, 1, 1] == 1
    assert float(stack.sum()) == 2.0
    # Multi-label K x H x W masks (Severstal) pass through; one class takes the image label.
    bools = np.zeros((2, 4, 4), bool)
    bools[1, 2, 2] = True
    assert mask_targets(_batch([Sample("b", image, mask=bools)], 2).mask, 2).sum() == 1
    single = _batch([Sample("c", image, label=1), Sample("d", image, label=0)], 0)
    targets, known = class_targets(single, 1)
    assert targets.tolist() == [[1.0], [0.0]] and known.all()


def test_train_inspect_overlay_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The max-pooled head (not the default) must survive saving, loading and ONNX export.
    overrides = ["weights=efficientnet-lite0", "model.classifier_pooling=max"]
    model_dir = engine.train(
        load_config(tiny_config(), overrides=overrides), tmp_path / "run", progress=False
    )
    assert model_dir is not None
    card = read_card(model_dir)
    assert card.multilabel and len(card.class_names) == 4
    assert card.model_options["num_classes"] == 4 and card.init == "efficientnet-lite0"
    assert card.model_options["classifier_pooling"] == "max"
    assert card.thresholds.decision == 0.5 and card.thresholds.rule.startswith("fixed")
    assert card.input.mean[0] != 0.0  # the training set's global mean, not the config's
    assert "val/dice" in (tmp_path / "run" / "logs" / "metrics.csv").read_text()

    inspector = load_inspector(model_dir)
    # Every class "present": regions of each. The inspector's own card (a copy read from disk).
    inspector.card.thresholds.decision = inspector.card.thresholds.pixel = 0.0
    inspection, heatmap = inspector.inspect_with_heatmap(np.full((70, 90), 120, np.uint8), "grey")
    assert heatmap is not None and heatmap.shape == (4, 70, 90)
    assert list(inspection.class_scores) == card.class_names and inspection.verdict == "defect"
    assert {r.class_ for r in inspection.regions} == set(card.class_names)
    assert inspection.defect_class == max(inspection.class_scores, key=lambda n: inspection.class_scores[n])
    picture = render_overlay(np.full((70, 90), 120, np.uint8), inspection, heatmap, 0.0)
    assert picture.height > 70 * picture.width // 90 + 20  # the banner and the class legend

    image_path = tmp_path / "part.png"
    Image.fromarray(np.full((70, 90), 120, np.uint8)).save(image_path)
    report = predict_paths(inspector, [image_path], tmp_path / "predicted", save_heatmaps=True)
    assert report.ok and (tmp_path / "predicted" / "part.png").is_file()
    assert Image.open(tmp_path / "predicted" / "part.heatmap.png").size == (90, 70)

    # `defectkit eval` adds the per-class figures of a multi-label model and its box plot; an
    # image whose classes are unknown is left out of those figures, and the report says so.
    generate(tmp_path / "data", SynthConfig(**{**SYNTH, "per_surface": 6, "seed": 9}), layout="manifest")
    known = multilabel_eval.class_truth
    unknown: list[str] = []

    def first_unknown(sample: Sample, k: int) -> list[int] | None:
        if not unknown or unknown == [sample.path]:
            unknown[:] = [sample.path]
            return None
        return known(sample, k)

    monkeypatch.setattr(multilabel_eval, "class_truth", first_unknown)
    evaluation = evaluate_model(model_dir, tmp_path / "data", split="test", out=tmp_path / "eval")
    reported = [(p.path, p.reason) for p in evaluation.problems]
    assert reported == [(unknown[0], "left out of the per-class figures: its defect classes are not known")]
    skipped = json.loads(evaluation.files["metrics.json"].read_text())["skipped"]
    assert [s["path"] for s in skipped] == unknown
    multilabel = evaluation.metrics["multilabel"]
    assert len(multilabel["per_class"]) == 4 and 0.0 <= multilabel["mla"] <= 1.0
    assert evaluation.files["dice_iou_box.png"] == tmp_path / "eval" / "dice_iou_box.png"
    assert "dice_iou_box.png" in json.loads(evaluation.files["metrics.json"].read_text())["files"]

    result = export_onnx_checked(model_dir)
    assert result.max_score_diff < 1e-3 and result.max_heatmap_diff < 1e-3
    onnx = load_inspector(model_dir, backend="onnx").inspect(np.full((70, 90), 120, np.uint8))
    assert onnx.class_scores.keys() == inspection.class_scores.keys()


def test_bf16_mixed_precision_trains_and_validates(tmp_path: Path) -> None:
    # The validation class probabilities are bfloat16 under bf16-mixed; numpy takes only floats.
    config = load_config(tiny_config(trainer__precision="bf16-mixed"))
    model_dir = engine.train(config, tmp_path / "run", progress=False)
    assert model_dir is not None and "val/dice" in (tmp_path / "run" / "logs" / "metrics.csv").read_text()


def test_missing_encoder_weights_is_a_clear_error(tmp_path: Path) -> None:
    config = load_config(tiny_config(model__encoder="resnet18"), overrides=[f"weights={tmp_path}/none.pth"])
    with pytest.raises(ValueError, match="weights file not found"):
        engine.train(config, tmp_path / "run", progress=False)


def _severstal_fixture(root: Path, count: int = 16) -> Path:
    """A Severstal copy in the real layout (train.csv + train_images/ at 256x1600)."""
    rng = np.random.default_rng(0)
    rows = ["ImageId,ClassId,EncodedPixels"]
    (root / "train_images").mkdir(parents=True)
    for index in range(count):
        image = rng.integers(90, 140, (256, 1600), dtype=np.uint8)
        for class_id in range(1, 5):
            if index % 4 == class_id - 1 or (index % 5 == 0 and class_id == 3):
                mask = np.zeros((256, 1600), bool)
                x = int(rng.integers(0, 1400))
                mask[40:120, x : x + 150] = True
                image[mask] = 40 * class_id
                rows.append(f"{index:04d}.jpg,{class_id},{rle_encode(mask)}")
        Image.fromarray(image).convert("RGB").save(root / "train_images" / f"{index:04d}.jpg", quality=95)
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def test_bench_severstal_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFECTKIT_DATA", str(tmp_path / "data"))
    _severstal_fixture(tmp_path / "data" / "severstal")
    request = BenchRequest(
        profile="cpu",
        supervision="full",
        command="defectkit bench tlu/severstal",
        results_root=tmp_path / "results",
        work_root=tmp_path / "work",
        progress=False,
        variant={"inits": "imagenet,random", "fractions": "1"},
        overrides=["input.size=[64,320]", "trainer.epochs=1", "model.decoder_channels=[16,16,8,8,8]"],
        cells_root=tmp_path / "cells",
    )
    run_protocol("tlu/severstal", request)
    results = sorted((tmp_path / "results").glob("*.json"))
    records = {r["variant"].get("init", "transfer"): r for r in (json.loads(p.read_text()) for p in results)}
    assert set(records) == {"imagenet", "random", "transfer"}
    record = records["imagenet"]
    metrics = record["metrics"]
    assert len(metrics["per_class"]) == 4 and 0.0 <= metrics["mla"] <= 1.0 and record["n_images"] == 2
    assert record["init"] == "efficientnet-lite0" and record["variant"]["fraction"] == 1.0
    # The run's --set options name its rows (as a digest: the list is long), not the profile's.
    assert record["variant"]["set"].startswith("sha1-") and "set-sha1-" in results[0].name
    transfer = [json.loads(p.read_text()) for p in results if "transfer" in p.name]
    assert len(transfer) == 1 and "mla_gain" in transfer[0]["metrics"]
    # The --set run's models and figures are its own: the profile's work folder is left alone.
    assert not (tmp_path / "work" / "tlu-severstal-cpu").exists()
    figures = tmp_path / "work" / f"tlu-severstal-cpu-{record['variant']['set']}" / "figures"
    assert {p.name for p in figures.glob("*.png")} >= {
        "fig4_dice_iou_box.png",
        "fig5_mla_bars.png",
        "fig8_validation_curves.png",
        "fig9_dice_difference_tf_efficientnet_lite0_f1.png",
    }
    # A rerun finds every cell done: nothing trains again.
    monkeypatch.setattr(
        "defectkit.bench.grid.train", lambda *a, **k: pytest.fail("a finished cell was retrained")
    )
    run_protocol("tlu/severstal", request)


def test_box_masks_and_training_fraction(neu_det_root: Path) -> None:
    from defectkit.data.formats import read_dataset
    from defectkit.data.io import load_sample, with_box_masks
    from defectkit.training.data import limit_fraction

    samples = with_box_masks(read_dataset(neu_det_root, "neu-det").samples)
    loaded = {Path(s.path).stem: load_sample(s) for s in samples}
    mask = np.asarray(loaded["scratches_2"].mask)
    assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 2, 6}  # inclusion 2, scratches 6
    assert np.asarray(loaded["crazing_1"].mask)[0:30, 0:40].all()

    config = load_config(tiny_config(data__train_fraction=0.5))
    many = [Sample(f"{i}.png", np.full((4, 4), i, np.uint8), label=i % 2) for i in range(20)]
    kept = limit_fraction(many, config)
    assert len(kept) == 10 and sum(s.label == 1 for s in kept) == 5  # stratified by label
    assert kept == limit_fraction(many, config)  # seeded


def test_grid_is_checked_before_training(tmp_path: Path) -> None:
    from defectkit.bench.tlu import _check_grid, encoder_weights, settings_of, user_weights

    def request(variant: dict[str, str], overrides: list[str] | None = None) -> BenchRequest:
        return BenchRequest("paper", "full", "c", tmp_path, tmp_path, False, variant, overrides or [])

    with pytest.raises(KeyError, match="has no ImageNet weights offline"):
        _check_grid(request({}), ["resnet18", "densenet121"], ["imagenet", "random"])
    with pytest.raises(KeyError, match="not segmentation_models_pytorch encoders"):
        _check_grid(request({}), ["resnet_eighteen"], ["random"])
    with pytest.raises(KeyError, match="each cell sets"):
        _check_grid(request({}, ["weights=/x.pth"]), ["resnet18"], ["random"])
    with pytest.raises(KeyError, match="each cell sets"):
        _check_grid(request({}, ["method_options.threshold=validation"]), ["resnet18"], ["random"])
    chosen = settings_of(request({"threshold": "validation", "betas": "profile"}))
    assert chosen == {"threshold": "validation"}
    with pytest.raises(KeyError, match=r"threshold=0\.3: use paper or validation"):
        settings_of(request({"threshold": "0.3"}))
    given = user_weights("resnet18:/r.pth,densenet121:/d.pth", ["resnet18", "densenet121"])
    assert encoder_weights("densenet121", "imagenet", given) == "/d.pth"
    assert encoder_weights("densenet121", "random", given) is None
    assert user_weights("/w/r.pth", ["resnet18", "tf_efficientnet_lite0"]) == {"resnet18": "/w/r.pth"}
    assert encoder_weights("tf_efficientnet_lite0", "imagenet", {}) == "efficientnet-lite0"


def test_paired_dice_matches_images_by_path() -> None:
    from defectkit.bench.tlu import paired_dice
    from defectkit.evaluation.multilabel import MultilabelScores

    first = MultilabelScores(["a"], ["x", "y"], truth=[[1], [1]], dice=[[0.9], [0.1]])
    second = MultilabelScores(["a"], ["y", "x"], truth=[[1], [1]], dice=[[0.3], [0.5]])
    ours, theirs = paired_dice(first, second)
    assert ours.tolist() == [0.9, 0.1] and theirs.tolist() == [0.5, 0.3]
    with pytest.raises(ValueError, match="different images"):
        paired_dice(first, MultilabelScores(["a"], ["x", "z"], truth=[[1], [1]], dice=[[0.3], [0.5]]))


def test_summary_judges_each_class_at_its_own_threshold() -> None:
    from defectkit.evaluation.multilabel import MultilabelScores, multilabel_summary

    scores = MultilabelScores(
        ["a", "b"], ["x", "y", "z"],
        probabilities=[[0.30, 0.10], [0.10, 0.80], [0.05, 0.60]], truth=[[1, 0], [0, 1], [0, 0]],
        dice=[[1.0, 1.0]] * 3, iou=[[1.0, 1.0]] * 3,
    )  # fmt: skip
    shared = multilabel_summary(scores, 0.5)
    assert shared["mla"] == pytest.approx(4 / 6)  # a missed on x, b false on z
    # The image verdicts (defective = any class called): y caught, x missed, z a false call.
    assert (shared["fp"], shared["fn"]) == (1, 1)
    assert shared["precision"] == shared["recall"] == shared["f1"] == pytest.approx(0.5)
    per_class = multilabel_summary(scores, np.array([0.2, 0.7]))
    assert per_class["mla"] == 1.0 and per_class["fp"] == 0 and per_class["fn"] == 0
    assert per_class["precision"] == per_class["recall"] == per_class["f1"] == 1.0
    pooled = multilabel_summary(scores, np.array([[0.2, 0.7], [0.2, 0.7], [0.5, 0.5]]))
    assert pooled["mla"] == pytest.approx(5 / 6)  # z judged by its own fold's 0.5

    # Image AP ranks the model's image score: x's 0.3 is above a's 0.2, y's 0.6 below b's 0.9.
    ranked = MultilabelScores(
        ["a", "b"], ["x", "y"], probabilities=[[0.30, 0.0], [0.0, 0.60]], truth=[[1, 0], [0, 0]],
        dice=[[1.0, 1.0]] * 2, iou=[[1.0, 1.0]] * 2,
    )  # fmt: skip
    assert multilabel_summary(ranked, 0.5)["ap"] == 0.5
    assert multilabel_summary(ranked, np.array([0.2, 0.9]))["ap"] == 1.0


def test_saved_masks_paint_the_classes_called_at_their_own_thresholds() -> None:
    from defectkit.inference.inspection import Inspection
    from defectkit.inference.predict import _called

    inspection = Inspection(
        image="x", model="m", verdict="defect", score=0.56, threshold=0.5, defect_class="a",
        class_scores={"a": 0.3, "b": 0.6, "c": 0.95}, class_thresholds={"a": 0.2, "b": 0.9, "c": 0.9},
        latency_ms=0.0,
    )  # fmt: skip
    assert _called(inspection) == [True, False, True]
    assert _called(inspection.model_copy(update={"class_thresholds": None})) == [True, True, True]


def test_validation_thresholds_of_several_classes_are_per_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(tiny_config(method_options={"betas": [0.9, 0.999], "threshold": "validation"}))
    data = engine.prepare_data(config)
    calls: list[int] = []
    score = Inspector.score
    monkeypatch.setattr(Inspector, "score", lambda self, image: calls.append(1) or score(self, image))
    model_dir = engine.train(config, tmp_path / "run", progress=False, data=data)
    monkeypatch.undo()
    assert model_dir is not None
    assert len(calls) == len(data.val)  # the class thresholds and the validation metrics share one pass
    thresholds = read_card(model_dir).thresholds
    assert thresholds.per_class is not None and thresholds.decision == 0.5
    assert list(thresholds.per_class) == read_card(model_dir).class_names
    assert thresholds.rule.startswith("best_f1/midpoint per class")
    assert any(t != 0.5 for t in thresholds.per_class.values())  # chosen, not the fallback
    with pytest.raises(ValueError, match=r"judged at decision 0\.5"):
        thresholds.model_validate({**thresholds.model_dump(), "decision": 0.4})

    inspector = load_inspector(model_dir)
    # Thresholds set on either side of each class's probability on a grey image.
    inspection = inspector.inspect(np.full((64, 64), 120, np.uint8), "grey")
    probabilities = np.array(list(inspection.class_scores.values()))
    names = list(inspection.class_scores)
    for flip in (False, True):
        # Alternate classes just below and just above their probability: those below are present.
        steps = [(-1e-3 if (i % 2 == 0) != flip else 1e-3) for i in range(len(names))]
        per_class = {n: float(p) + d for n, p, d in zip(names, probabilities, steps, strict=True)}
        inspector.card.thresholds.per_class = per_class
        judged = inspector.inspect(np.full((64, 64), 120, np.uint8), "grey")
        present = [n for n, p in judged.class_scores.items() if p >= per_class[n]]
        assert judged.verdict == "defect" and (judged.score >= 0.5) and judged.defect_class in present
        assert judged.class_thresholds == per_class
    above = {n: min(1.0, float(p) + 1e-3) for n, p in zip(names, probabilities, strict=True)}
    inspector.card.thresholds.per_class = above
    judged = inspector.inspect(np.full((64, 64), 120, np.uint8), "grey")
    assert judged.verdict == "ok" and judged.score < 0.5 and judged.regions == []


def test_transfer_verdict_says_whether_the_gap_grows() -> None:
    from defectkit.bench.tlu import transfer_verdict

    gains = {1.0: {"mla_gain": 0.02, "dice_gain_rel": 0.05}, 0.5: {"mla_gain": 0.04, "dice_gain_rel": -0.01}}
    assert transfer_verdict(gains, 1.0) == (
        "ImageNet beats random in MLA (+0.0200) and beats it in per-image Dice (+5.0%)"
    )
    assert transfer_verdict(gains, 0.5).endswith("versus 100 % of the data the gap grows in MLA")
    assert "loses to it in per-image Dice (-1.0%)" in transfer_verdict(gains, 0.5)


def test_transfer_verdict_names_image_ap_where_both_runs_have_it() -> None:
    from defectkit.bench.tlu import transfer_verdict

    gains = {
        1.0: {"mla_gain": 0.4, "ap_gain": 0.7, "dice_gain_rel": 1.2},
        0.1: {"mla_gain": -0.3, "ap_gain": 0.07, "dice_gain_rel": 4.0},
    }
    assert transfer_verdict(gains, 0.1) == (
        "ImageNet loses to random in MLA (-0.3000), beats it in image AP (+0.0700) and beats it in "
        "per-image Dice (+400.0%); versus 100 % of the data the gap grows in per-image Dice"
    )


def test_dice_nonempty_does_not_reward_empty_predictions() -> None:
    from defectkit.metrics import SegmentationMeter
    from defectkit.training.tlu_net import dice_nonempty

    truth = np.zeros((4, 8, 8), bool)
    truth[0, 2:5, 2:5] = True  # one defective image, three good ones
    meter = SegmentationMeter(1)
    meter.update(np.zeros_like(truth), truth)  # predicts nothing anywhere
    assert meter.compute()["dice"] == 0.75 and dice_nonempty(meter) == 0.0
    meter.reset()
    meter.update(truth, truth)
    assert dice_nonempty(meter) == 1.0


def test_balanced_sampling_draws_rare_defects_as_often_as_good_images() -> None:
    from defectkit.registry import get_method

    labels: list[int | None] = [1] * 12 + [0] * 88  # about KolektorSDD's share of defective images (13 %)
    method = get_method("tlu_net")
    assert method.train_sampler(labels, load_config(tiny_config())) is None  # the paper: a shuffle
    balanced = load_config(tiny_config(method_options__sampling="balanced"))
    sampler = method.train_sampler(labels, balanced)
    assert sampler is not None
    first, second = list(sampler), list(sampler)
    drawn = [labels[i] for i in first]
    assert len(drawn) == len(labels)  # the epoch keeps its length
    assert 0.35 < float(np.mean(drawn)) < 0.65
    assert first != second  # each epoch draws afresh ...
    again = method.train_sampler(labels, balanced)
    assert again is not None and list(again) == first  # ... and a rerun repeats the run
    reseeded = method.train_sampler(
        labels, load_config(tiny_config(seed=1, method_options__sampling="balanced"))
    )
    assert reseeded is not None and list(reseeded) != first
    with pytest.raises(ValueError, match="two classes"):
        method.train_sampler([1] * 20, balanced)  # NEU-DET: every image defective
    with pytest.raises(ValueError, match="sampling"):
        method.train_sampler(labels, load_config(tiny_config(method_options__sampling="oversample")))
