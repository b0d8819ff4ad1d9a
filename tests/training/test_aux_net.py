"""aux_net (paper 000): attention encoder, anchors, losses over mixed label levels, weights."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from defectkit.data.sample import Sample, collate
from defectkit.models.aux_net import (
    AuxNet,
    DecodeConfig,
    anchor_coverage,
    decode_boxes,
    detection_anchors,
    encode_boxes,
    fit_aspect_ratios,
    image_judge,
    match_anchors,
    select_detections,
)
from defectkit.models.aux_net.model import TASKS
from defectkit.training.aux_net import (
    DEFAULT_OPTIONS,
    AuxNetMethod,
    AuxNetRecipe,
    box_regression_loss,
    load_imagenet_encoder,
    options_of,
    segmentation_loss,
    training_boxes,
)

pytestmark = pytest.mark.usefixtures("one_thread")


TINY: dict[str, object] = {
    "backbone": "tf_efficientnet_lite0",
    "num_classes": 2,
    "pyramid_channels": 32,
    "segmentation_channels": 16,
    "anchor_sizes": [16, 32, 64, 128],
}


def tiny(**options: object) -> AuxNet:
    torch.manual_seed(0)
    return AuxNet(**{**TINY, **options})  # type: ignore[arg-type]


def synthetic_run(
    model: dict[str, object], size: list[int] | None = None, per_surface: int = 16, batch_size: int = 8
) -> dict[str, object]:
    """A one-epoch Lite0 training config on the generator's multi-class images."""
    return {
        "method": "aux_net",
        "seed": 0,
        "data": {
            "synthetic": {
                "mode": "multiclass",
                "surfaces": 1,
                "per_surface": per_surface,
                "size": 64,
                "seed": 2,
            },
            "val_fraction": 0.25,
            "train_split": None,
        },
        "input": {"size": size or [64, 64], "channels": 3, "mean": [0.5], "std": [0.5]},
        "model": {"backbone": "tf_efficientnet_lite0", **model},
        "trainer": {"epochs": 1, "batch_size": batch_size, "lr": 0.001, "val_every": 1},
    }


@pytest.mark.parametrize(("attention", "paper"), [("none", 33.2), ("se", 35.7), ("se+sa", 36.2)])
def test_resnet50_parameter_counts_match_table_iv(attention: str, paper: float) -> None:
    model = AuxNet("resnet50", attention=attention, pyramid_channels=256, segmentation_channels=128)  # type: ignore[arg-type]
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(millions - paper) < 0.5  # SA's extra 0.3 M in the paper is not a 7x7 conv's 1.6 K


def test_anchors_match_encode_and_decode() -> None:
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0], [0.0, 0.0, 100.0, 100.0]])
    boxes = torch.tensor([[21.0, 19.0, 41.0, 42.0]])
    matched = match_anchors(anchors, boxes)
    assert matched.tolist() == [-1, 0, -1]
    goal = encode_boxes(boxes[matched[1:2]], anchors[1:2])
    assert torch.allclose(decode_boxes(goal, anchors[1:2]), boxes, atol=1e-4)
    assert (match_anchors(anchors, torch.zeros(0, 4)) == -1).all()

    probabilities = torch.full((3, 2), 0.01)
    probabilities[1, 1] = 0.9  # anchor 1, class 2
    decoded = decode_boxes(torch.zeros(3, 4), anchors)
    decoded[1] = decode_boxes(goal, anchors[1:2])[0]
    found = select_detections(probabilities, decoded, DecodeConfig(score_threshold=0.5))
    assert found.labels.tolist() == [2] and torch.allclose(
        found.boxes, torch.tensor([[21.0, 19.0, 41.0, 42.0]]), atol=1e-3
    )


def flat_boxes(count: int, ratio: float, seed: int = 0) -> np.ndarray:
    """``count`` boxes (xyxy) of height / width about ``ratio``, 40-120 px wide, inside 192x448."""
    rng = np.random.default_rng(seed)
    width = rng.uniform(40, 120, count)
    height = width * ratio * np.exp(rng.normal(0, 0.3, count))
    x0, y0 = rng.uniform(0, 192 - width), rng.uniform(0, 448 - height)
    return np.stack([x0, y0, x0 + width, y0 + height], axis=1)


def test_fitted_aspect_ratios_give_flat_defects_positive_anchors() -> None:
    boxes = flat_boxes(200, 0.17)
    fitted = fit_aspect_ratios(boxes)
    # Each ratio stands for a third of the boxes: it sits at the centre of its share.
    ratios = (boxes[:, 3] - boxes[:, 1]) / (boxes[:, 2] - boxes[:, 0])
    below = [float((ratios < fit).mean()) for fit in fitted]
    assert below == pytest.approx([1 / 6, 1 / 2, 5 / 6], abs=0.02)
    levels, sizes = ("p3", "p4", "p5", "p6"), (32, 64, 128, 256)
    truth = torch.as_tensor(boxes, dtype=torch.float32)

    def covered(ratios: tuple[float, ...]) -> float:
        return anchor_coverage(truth, detection_anchors((448, 192), levels, sizes, ratios))

    # RetinaNet's ratios leave most such boxes to low-quality matches; the fitted ones do not.
    assert covered((0.5, 1.0, 2.0)) < 0.5 < 0.75 < covered(fitted)
    # The anchors placed without the network are the network's own.
    network = tiny(anchor_sizes=list(sizes), aspect_ratios=fitted, tasks=["detection"]).eval()
    with torch.no_grad():
        placed = network(torch.zeros(1, 3, 448, 192)).anchors
    assert torch.equal(placed, detection_anchors((448, 192), levels, sizes, fitted))
    with pytest.raises(ValueError, match="need one anchor size each"):
        detection_anchors((448, 192), ("p3", "p9"), (32, 64), fitted)
    with pytest.raises(ValueError, match="multiples of 64"):
        detection_anchors((440, 192), levels, sizes, fitted)
    with pytest.raises(ValueError, match="no box"):
        fit_aspect_ratios(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="'auto' is fitted to the training boxes"):
        tiny(aspect_ratios="auto")
    assert tiny(aspect_ratios="auto", tasks=["classification"]).anchor_generator is None  # no anchor


def test_auto_anchors_are_fitted_to_training_boxes_only() -> None:
    from defectkit.config import load_config
    from defectkit.data.sample import DatasetInfo
    from defectkit.training.data import PreparedData

    # Images are 3 times the input's width and twice its height: boxes are fitted at the input.
    scale = np.array([3.0, 2.0, 3.0, 2.0])
    blank = np.zeros((896, 576), np.uint8)

    def sample(index: int, boxes: np.ndarray) -> Sample:
        return Sample(
            f"{index}.png",
            image=blank,
            label=1,
            boxes=boxes * scale,
            box_classes=np.ones(len(boxes), np.int64),
        )

    # A mask without boxes gives one box per region: rows 200-219, columns 90-389 -> 30-130 x 100-110.
    mask = np.zeros((896, 576), np.uint8)
    mask[200:220, 90:390] = 1
    masked = Sample("mask.png", image=blank, label=1, mask=mask)
    flat, tall = flat_boxes(60, 0.17), flat_boxes(60, 0.17)[:, [1, 0, 3, 2]]
    good = Sample("good.png", image=blank, label=0)
    data = PreparedData(
        DatasetInfo("d", "f", "/", class_names=["crack"]),
        train=[sample(i, flat[i : i + 3]) for i in range(0, 60, 3)] + [masked, good],
        val=[sample(100 + i, tall[i : i + 3]) for i in range(0, 60, 3)],
    )
    expected = np.concatenate([flat, [[30.0, 100.0, 130.0, 110.0]]])
    assert np.allclose(training_boxes(data.train, (448, 192), from_masks=True), expected)
    assert np.allclose(training_boxes(data.train, (448, 192), from_masks=False), flat)

    def adapted(model: dict[str, object], **options: object) -> dict[str, object]:
        config = load_config(
            {
                "method": "aux_net",
                "data": {"root": "."},
                "input": {"size": [448, 192], "channels": 1},
                "model": model,
                "method_options": options,
            }
        )
        return dict(AuxNetMethod.adapt_config(config, data).model)

    with pytest.warns(UserWarning, match="only .* of the 61 training boxes have an anchor"):
        assert "aspect_ratios" not in adapted({})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fitted anchors cover these boxes: no warning
        fitted = adapted({"aspect_ratios": "auto"})["aspect_ratios"]
    assert fitted == list(fit_aspect_ratios(expected))  # the validation images' tall boxes are not read
    assert adapted({"aspect_ratios": "auto"}, boxes_from_masks=False)["aspect_ratios"] == list(
        fit_aspect_ratios(flat)
    )
    # The warning measures the anchors configured: larger ones miss these boxes even when fitted.
    with pytest.warns(UserWarning, match=r"sizes \[256, 512, 1024, 2048\].*try other anchor_sizes"):
        adapted({"aspect_ratios": "auto", "anchor_sizes": [256, 512, 1024, 2048]})
    # A network that does not detect places no anchor: nothing is fitted or read.
    assert adapted({"aspect_ratios": "auto", "tasks": ["classification"]})["aspect_ratios"] == "auto"


@pytest.mark.parametrize("kind", ["smooth_l1", "giou", "diou", "ciou"])
def test_box_losses_vanish_on_the_goal_and_pull_towards_it(kind: str) -> None:
    anchors = torch.tensor([[20.0, 20.0, 40.0, 40.0], [0.0, 0.0, 64.0, 32.0]])
    goal_boxes = torch.tensor([[21.0, 19.0, 41.0, 42.0], [4.0, 2.0, 50.0, 30.0]])
    exact = encode_boxes(goal_boxes, anchors)
    assert float(box_regression_loss(exact, anchors, goal_boxes, kind, 1 / 9)) < 1e-4
    deltas = (exact + torch.tensor([0.3, -0.2, 0.4, -0.5])).requires_grad_()
    loss = box_regression_loss(deltas, anchors, goal_boxes, kind, 1 / 9)
    assert float(loss) > 0.05
    loss.backward()
    stepped = deltas.detach() - 0.1 * deltas.grad  # type: ignore[operator]
    assert float(box_regression_loss(stepped, anchors, goal_boxes, kind, 1 / 9)) < float(loss)
    with pytest.raises(ValueError, match="box_loss"):
        options_of({"method_options": {"box_loss": "l2"}})


def test_classifier_guidance_empties_the_mask_of_a_rejected_class() -> None:
    """mask_guidance=classifier (the paper's undefined "classification-guidance module", as gating):
    no pixel of a class passes a threshold the classification head's probability does not."""
    image = torch.rand(2, 3, 64, 64)
    plain, guided = tiny().eval(), tiny(mask_guidance="classifier").eval()
    guided.load_state_dict(plain.state_dict())
    with torch.no_grad():
        guided.decision_head.linear.bias.copy_(torch.tensor([-30.0, 30.0]))  # type: ignore[union-attr]
        classes, masks = guided.inspect(image)
        _, raw = plain.inspect(image)
    assert masks is not None and raw is not None
    assert float(masks[:, 0].max()) <= float(classes[:, 0].max()) < 1e-6  # rejected: empty at any threshold
    assert torch.equal(masks[:, 1], raw[:, 1])  # accepted: the segmentation head's mask as it is
    assert torch.all(masks <= classes[:, :, None, None])
    with pytest.raises(ValueError, match="needs tasks classification and segmentation"):
        tiny(tasks=["segmentation"], mask_guidance="classifier")
    with pytest.raises(ValueError, match="use one of"):
        tiny(mask_guidance="boxes")
    for other in ({"class_activation": "softmax", "num_classes": 2}, {"image_score": "mask_peak"}):
        with pytest.raises(ValueError, match="takes class_activation=sigmoid and image_score=classifier"):
            tiny(mask_guidance="classifier", **other)


def test_every_label_level_trains_its_own_heads() -> None:
    model = tiny()
    recipe = AuxNetRecipe(model, 1e-3, 0.0, dict(DEFAULT_OPTIONS))
    image = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    mask = np.zeros((64, 64), np.int64)
    mask[10:30, 12:40] = 2
    only_label = Sample("c", image, label=1, classes=[1])
    batch = collate(
        [
            Sample("a", image, label=1, classes=[2], mask=mask),  # mask: boxes derived from it
            Sample("b", image, label=1, boxes=np.array([[5.0, 5.0, 40.0, 30.0]]), box_classes=np.array([1])),
            only_label,
        ],
        num_classes=2,
    )
    terms, _ = recipe.losses(batch)
    assert all(bool(torch.isfinite(v)) and float(v.detach()) > 0 for v in terms.values())

    # An image with only an image label trains the classification head, through the encoder only.
    model.zero_grad()
    terms, _ = recipe.losses(collate([only_label], num_classes=2))
    recipe.total(terms).backward()
    assert float(terms["seg"].detach()) == 0.0 and float(terms["focal"].detach()) == 0.0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.fpn.parameters())


def test_a_few_steps_fit_one_image() -> None:
    model = tiny()
    recipe = AuxNetRecipe(model, 3e-3, 0.0, {**DEFAULT_OPTIONS, "focal_gamma": 2.0})
    image = np.random.default_rng(1).random((3, 64, 64)).astype(np.float32)
    mask = np.zeros((64, 64), np.int64)
    mask[16:48, 8:40] = 1
    batch = collate([Sample("a", image, label=1, classes=[1], mask=mask)], num_classes=2)
    optimiser = recipe.configure_optimizers()
    model.train()
    losses = []
    for _ in range(25):
        optimiser.zero_grad()
        terms, _ = recipe.losses(batch)
        loss = recipe.total(terms)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_one_cycle_schedule_warms_up_to_the_rate_then_anneals() -> None:
    import lightning as L
    from torch.utils.data import DataLoader

    options = options_of({"method_options": {"lr_schedule": "one_cycle", "warmup_fraction": 0.25}})
    recipe = AuxNetRecipe(tiny(), 1e-3, 0.0, options)
    image = np.random.default_rng(2).random((3, 64, 64)).astype(np.float32)
    samples = [Sample(str(i), image, label=0) for i in range(4)]
    loader = DataLoader(samples, batch_size=1, collate_fn=lambda chunk: collate(chunk, num_classes=2))
    rates: list[float] = []

    class RecordRate(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[RecordRate()],
    ).fit(recipe, loader)  # fmt: skip
    assert len(rates) == 8  # stepped per batch, across epochs
    peak = int(np.argmax(rates))
    assert 0 < peak < 4 and rates[peak] == pytest.approx(1e-3, rel=0.05)
    assert rates[0] < 1e-4 and rates[-1] < rates[peak] / 10
    with pytest.raises(ValueError, match="lr_schedule"):
        options_of({"method_options": {"lr_schedule": "cosine"}})


def test_segmentation_losses() -> None:
    truth = torch.zeros(1, 1, 8, 8)
    truth[..., 2:6, 2:6] = 1.0
    perfect = truth * 40 - 20
    for kind in ("dice", "jaccard", "bce", "dice+bce", "jaccard+bce"):
        assert float(segmentation_loss(perfect, truth, kind)) < 0.05
        assert float(segmentation_loss(-perfect, truth, kind)) > 0.5


def test_batch_reduction_weighs_each_pixel_once() -> None:
    """Two stray pixels on a good image cost a third of the per-image Dice, but little pooled."""
    truth = torch.zeros(2, 1, 8, 8)
    truth[0, :, 2:6, 2:6] = 1.0  # 16 defect pixels; image 1 is good
    prediction = truth.clone()
    prediction[1, :, 0, :2] = 1.0
    logits = prediction * 40 - 20
    per_image = float(segmentation_loss(logits, truth, "dice", "image"))
    pooled = float(segmentation_loss(logits, truth, "dice", "batch"))
    assert per_image == pytest.approx((0.0 + (1 - 1 / 3)) / 2, abs=1e-3)
    assert pooled == pytest.approx(1 - 33 / 35, abs=1e-3)
    with pytest.raises(ValueError, match="seg_reduction"):
        options_of({"method_options": {"seg_reduction": "pixel"}})


def test_packaged_lite_weights_load_into_the_encoder() -> None:
    from defectkit.models.pretrained import read_state_dict, weights_file

    model = tiny(attention="se+sa")
    path = weights_file("efficientnet-lite0")
    load_imagenet_encoder(model, read_state_dict(path), str(path))
    stem = model.encoder.body.conv_stem.weight
    import timm

    from defectkit.models.pretrained import load_by_position

    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_by_position(reference, read_state_dict(path), "lite0")
    assert torch.equal(stem, reference.conv_stem.weight)


def test_train_save_and_inspect(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import defectkit.training.engine as engine
    from defectkit import load_inspector
    from defectkit.config import load_config
    from defectkit.inference.saved_model import read_card

    config = load_config(
        synthetic_run({"pyramid_channels": 32, "segmentation_channels": 16, "aspect_ratios": "auto"})
    )
    model_dir = engine.train(config, tmp_path / "run", progress=False)
    assert model_dir is not None
    card = read_card(model_dir)
    assert card.multilabel and len(card.class_names) == 4 and card.model_options["num_classes"] == 4
    # The fitted anchors are saved as numbers: the Inspector and the ONNX graph below rebuild them.
    fitted = card.model_options["aspect_ratios"]
    assert len(fitted) == 3 and all(isinstance(r, float) and r > 0 for r in fitted)
    assert card.thresholds.box == 0.3
    assert "val/focal_loss" in (tmp_path / "run" / "logs" / "metrics.csv").read_text()
    inspector = load_inspector(model_dir)
    inspector.card.thresholds.decision = inspector.card.thresholds.box = 0.0  # report every box
    image = np.random.default_rng(3).integers(0, 255, (70, 90), dtype=np.uint8)
    inspection = inspector.inspect(image)
    assert list(inspection.class_scores) == card.class_names and inspection.verdict == "defect"
    assert inspection.regions and all(r.class_ in card.class_names for r in inspection.regions)
    x0, y0, x1, y1 = inspection.regions[0].box
    assert 0 <= x0 <= x1 <= 90 and 0 <= y0 <= y1 <= 70  # scaled back to the original image
    # The saved decoding options bound the boxes the Inspector reports.
    assert len(inspection.regions) > 1
    trained_options = inspector.card.config.get("method_options", {})
    inspector.card.config["method_options"] = {**trained_options, "max_detections": 1}
    try:
        assert len(inspector.inspect(image).regions) == 1
    finally:
        inspector.card.config["method_options"] = trained_options
    # What `defectkit predict` writes: boxes with classes, the mask and the verdict in one
    # Inspection file and one overlay.
    from PIL import Image

    from defectkit.inference.overlay import VERDICT_COLOURS
    from defectkit.inference.predict import predict_paths

    Image.fromarray(image).save(tmp_path / "part.png")
    pixel_threshold, inspector.card.thresholds.pixel = inspector.card.thresholds.pixel, 0.0
    try:  # every pixel a defect pixel: the mask cannot be empty
        report = predict_paths(inspector, [tmp_path / "part.png"], tmp_path / "out", save_masks=True)
    finally:
        inspector.card.thresholds.pixel = pixel_threshold
    written = json.loads((tmp_path / "out" / "part.json").read_text())
    assert not report.failures and written["verdict"] == "defect"
    assert written["regions"] and all(r["class"] in card.class_names for r in written["regions"])
    mask = np.asarray(Image.open(written["mask"]))
    assert mask.shape == (70, 90) and 1 <= mask.min() <= mask.max() <= len(card.class_names)
    overlay = np.asarray(Image.open(tmp_path / "out" / "part.png").convert("RGB"))
    assert tuple(overlay[1, 1]) == VERDICT_COLOURS["defect"]

    from defectkit.data.synthetic import SynthConfig, synthetic_dataset
    from defectkit.evaluation.multilabel import multilabel_summary, score_multilabel

    samples = synthetic_dataset(
        SynthConfig(mode="multiclass", surfaces=1, per_surface=6, size=64, seed=5)
    ).samples
    scores = score_multilabel(inspector, samples, 3)
    assert len(scores.detections) == len(samples) == len(scores.box_truth)
    assert any(truth["boxes"] for truth in scores.box_truth)  # boxes from the masks' regions
    summary = multilabel_summary(scores, 0.5)
    assert 0.0 <= summary["map50"] <= 1.0 and "per_class_ap50" in summary

    from defectkit.inference.export import export_onnx_checked

    result = export_onnx_checked(model_dir)
    assert result.max_score_diff < 1e-3 and result.max_box_diff < 0.05
    onnx = load_inspector(model_dir, backend="onnx")
    onnx.card.thresholds.decision = onnx.card.thresholds.box = 0.0
    again = onnx.inspect(image)
    assert again.class_scores == pytest.approx(inspection.class_scores, abs=1e-3)
    assert len(again.regions) == len(inspection.regions)


def test_single_task_networks_and_the_efficiency_protocol(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from defectkit.bench.protocols import BenchRequest, run_protocol

    image = torch.rand(1, 3, 64, 64)
    for task in ("classification", "segmentation", "detection"):
        single = tiny(tasks=[task]).eval()
        with torch.no_grad():
            out = single(image)
        assert out.class_logits.shape == (1, 2) and out.mask_logits.shape == (1, 2, 64, 64)
        assert (out.box_logits.shape[1] > 0) == (task == "detection") and single.detects == (
            task == "detection"
        )
    request = BenchRequest(
        "cpu", "full", "defectkit bench aux/efficiency", tmp_path, tmp_path, False, {"repeats": "2"},
        ["input.size=[64,64]", "model.pyramid_channels=32", "model.segmentation_channels=16"],
    )  # fmt: skip
    record = json.loads(run_protocol("aux/efficiency", request).read_text())
    metrics = record["metrics"]
    assert 0.0 < metrics["params_reduction"] < 1.0 and metrics["ms_multitask"] > 0
    assert record["paper"]["params_reduction"] == 0.571
    assert "ms_multitask" not in record["paper"]  # Table VI's ResNet-50 figures: paper profile only


def test_table_vi_as_transcribed_adds_up_to_the_papers_reductions() -> None:
    from defectkit.bench.aux import PAPER_TABLE_VI as vi

    for unit in ("params_m", "ms"):
        parts = sum(vi[f"{unit}_{task}"] for task in ("classification", "segmentation", "detection"))
        assert parts == pytest.approx(vi[f"{unit}_single_total"])
    assert 1 - vi["params_m_multitask"] / vi["params_m_single_total"] == pytest.approx(0.571, abs=5e-4)
    assert 1 - vi["ms_multitask"] / vi["ms_single_total"] == pytest.approx(0.455, abs=1e-3)


def synthetic_bench(tmp_path, variant: dict[str, str], per_surface: int = 6):  # type: ignore[no-untyped-def]
    """``aux/synthetic`` run once with ``variant`` at one epoch on small images: its request and
    every results record it wrote."""
    from defectkit.bench.protocols import BenchRequest, run_protocol

    request = BenchRequest(
        "cpu", "full", "defectkit bench aux/synthetic", tmp_path / "results", tmp_path / "work", False,
        variant,
        [f"data.synthetic.per_surface={per_surface}", "data.synthetic.size=64", "input.size=[64,64]",
         "trainer.epochs=1", "model.pyramid_channels=32", "model.segmentation_channels=16", "weights=null"],
        cells_root=tmp_path / "cells",
    )  # fmt: skip
    run_protocol("aux/synthetic", request)
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("*.json"))]
    return request, records


def test_aux_bench_on_generated_data(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from defectkit.bench.protocols import run_protocol

    variant = {"tasks": "all,detection", "attention": "se+sa", "seg_reduction": "image,batch"}
    request, records = synthetic_bench(tmp_path, variant, per_surface=10)
    every_cell = [r for r in records if r["protocol"] == "aux/synthetic"]
    pooled = [r for r in every_cell if r["variant"].get("seg_reduction") == "batch"]
    cells = [r for r in every_cell if "seg_reduction" not in r["variant"]]  # the default stays unnamed
    # The detector never reads the mask loss: one cell, under the default loss, serves both records.
    assert [r["variant"]["tasks"] for r in pooled] == ["all"]
    assert len(list((tmp_path / "cells").rglob("*.json"))) == 3
    assert sorted(r["variant"]["tasks"] for r in cells) == ["all", "detection"]
    assert {"mla", "dice", "map50", "map"} <= set(cells[0]["metrics"])
    assert cells[0]["variant"]["fraction"] == 1.0
    every_versus = [r for r in records if r["protocol"] == "aux/synthetic/multitask"]
    (versus,) = [r for r in every_versus if "seg_reduction" not in r["variant"]]
    (pooled_versus,) = [r for r in every_versus if r["variant"].get("seg_reduction") == "batch"]
    by_tasks = {r["variant"]["tasks"]: r["metrics"] for r in cells}
    assert versus["metrics"]["map50_multitask"] == by_tasks["all"]["map50"]
    assert versus["metrics"]["map50_single"] == by_tasks["detection"]["map50"]
    assert pooled_versus["metrics"]["map50_multitask"] == pooled[0]["metrics"]["map50"]
    assert pooled_versus["metrics"]["map50_single"] == by_tasks["detection"]["map50"]
    assert versus["variant"]["tasks"] == "all vs detection" and versus["paper"] == {"map50_gain_rel": 0.1795}
    # A reduction given by --set reaches every cell's config, and the pair is still matched.
    as_set = replace(
        request,
        variant={"tasks": "all,detection", "seg_loss": "bce"},
        overrides=[*request.overrides, "method_options.seg_reduction=batch"],
    )
    last = json.loads(run_protocol("aux/synthetic", as_set).read_text())
    assert last["protocol"] == "aux/synthetic/multitask"
    assert (last["variant"]["seg_loss"], last["variant"]["seg_reduction"]) == ("bce", "batch")


def test_aux_bench_trains_table_ii_decoders_as_segmenters_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from defectkit.bench.protocols import run_protocol

    request, records = synthetic_bench(tmp_path, {"tasks": "all,segmentation", "decoders": "fpn,linknet"})
    cells = {(r["variant"]["tasks"], r["variant"].get("decoder")): r for r in records}
    # The multitask network keeps the FPN: three cells, the FPN's named as before.
    assert set(cells) == {
        ("all", None),
        ("segmentation", None),
        ("segmentation", "linknet"),
        ("all vs segmentation", None),
    }
    assert len(list((tmp_path / "cells").rglob("*.json"))) == 3
    versus = cells[("all vs segmentation", None)]["metrics"]
    assert versus["dice_single"] == cells[("segmentation", None)]["metrics"]["dice"]
    # Without fpn among the decoders the other networks still run (the multitask cell resumes here),
    # but no multitask record is written without its FPN segmenter.
    pspnet = replace(request, variant={"tasks": "all,classification,segmentation", "decoders": "pspnet"})
    assert "decoder-pspnet" in run_protocol("aux/synthetic", pspnet).name
    assert len(list((tmp_path / "cells").rglob("*.json"))) == 5
    assert not list((tmp_path / "results").glob("*vs-classification-cpu.json"))
    with pytest.raises(KeyError, match="decoders"):
        run_protocol("aux/synthetic", replace(request, variant={"tasks": "all", "decoders": "unet"}))
    by_set = [*request.overrides, "model.segmentation_decoder=unet"]
    with pytest.raises(KeyError, match="builds segmenters alone"):
        run_protocol("aux/synthetic", replace(request, variant={"tasks": "all"}, overrides=by_set))
    both = {"tasks": "segmentation", "decoders": "linknet"}
    with pytest.raises(KeyError, match="not both"):
        run_protocol("aux/synthetic", replace(request, variant=both, overrides=by_set))
    # A decoder given by --set names the cell as -V would.
    alone = replace(request, variant={"tasks": "segmentation"}, overrides=by_set)
    assert "decoder-unet" in run_protocol("aux/synthetic", alone).name
    with pytest.raises(KeyError, match="decoders"):
        run_protocol(
            "aux/synthetic", replace(request, variant={"tasks": "segmentation", "decoders": "deeplab"})
        )
    # A mask guided by the classifier is refused before training where a network lacks either.
    guided = [*request.overrides, "model.mask_guidance=classifier"]
    with pytest.raises(KeyError, match="every tasks entry needs both heads"):
        run_protocol("aux/synthetic", replace(request, variant={"tasks": "all,singles"}, overrides=guided))


@pytest.mark.slow
def test_one_training_serves_every_scoring_option(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    import defectkit.bench.aux as aux_bench
    from defectkit.bench.protocols import BenchRequest, run_protocol
    from defectkit.inference.saved_model import read_card

    overrides = ["data.synthetic.per_surface=8", "data.synthetic.size=64", "input.size=[64,64]",
                 "trainer.epochs=1", "model.pyramid_channels=32", "model.segmentation_channels=16",
                 "weights=null"]  # fmt: skip
    request = BenchRequest(
        "cpu", "full", "defectkit bench aux/synthetic", tmp_path / "results", tmp_path / "work", False,
        {"image_score": "classifier,mask_peak"}, overrides, cells_root=tmp_path / "cells",
    )  # fmt: skip

    def cells(excluding: frozenset[str] = frozenset()) -> list[dict[str, object]]:
        found = sorted(p for p in (tmp_path / "cells").rglob("*.json") if p.name not in excluding)
        return [json.loads(p.read_text())["value"] for p in found]

    def names() -> frozenset[str]:
        return frozenset(p.name for p in (tmp_path / "cells").rglob("*.json"))

    # Values are checked before anything trains; two options after one -V are one option's values.
    wrong = [
        ({"seg_loss": "dice+bce,image_score=mask_peak"}, "seg_loss"),
        ({"attention": "se,cbam"}, "attention"),
        ({"tasks": "detection", "image_score": "mask_peak"}, "mask_peak needs the segmentation head"),
        ({"tasks": "all,singles", "mask_guidance": "classifier"}, "every tasks entry needs both heads"),
        ({"image_score": "mask_peak", "mask_guidance": "classifier"}, "ungated mask"),
        ({"mask_guidance": "boxes"}, "mask_guidance"),
    ]
    for variant, named in wrong:
        with pytest.raises(KeyError, match=named):
            run_protocol("aux/synthetic", replace(request, variant=variant))
    softmax = [*overrides, "model.class_activation=softmax"]
    with pytest.raises(KeyError, match="needs sigmoid classes"):
        run_protocol(
            "aux/synthetic", replace(request, variant={"mask_guidance": "classifier"}, overrides=softmax)
        )
    assert not (tmp_path / "work").exists()
    run_protocol("aux/synthetic", request)
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("*.json"))]
    by_score = {r["variant"].get("image_score", "classifier"): r for r in records}
    assert sorted(by_score) == ["classifier", "mask_peak"]
    assert "peak mask probability" in by_score["mask_peak"]["notes"]
    assert "folds scored the model trained" in by_score["mask_peak"]["notes"]
    assert "peak mask" not in by_score["classifier"]["notes"]
    (peak,) = [c for c in cells() if "scored_from" in c]
    (trained,) = [c for c in cells() if "scored_from" not in c]
    assert peak["train_s"] == 0.0 and isinstance(trained["train_s"], float) and trained["train_s"] > 0.0
    assert peak["dice"] == trained["dice"] and peak["probabilities"] != trained["probabilities"]
    assert peak["commit"] == trained["commit"] and "scored_commit" in peak  # the weights' code
    # The smoke --set options give the run a work folder of its own (scoring options do not).
    work = request.work_folder("aux-synthetic-cpu", exclude=aux_bench.NAMED_BY_FIELDS)
    assert work.parent == tmp_path / "work" and work.name.startswith("aux-synthetic-cpu-sha1-")
    versioned = work / f"v{aux_bench.CELL_VERSION}"
    rescored = versioned / f"{peak['scored_from']}-mask_peak" / "model"
    assert read_card(rescored).model_options["image_score"] == "mask_peak"
    # --set names the cell by the score in force, as -V does: the same cell, already done.
    as_set = replace(request, variant={}, overrides=[*overrides, "model.image_score=mask_peak"])
    run_protocol("aux/synthetic", as_set)
    assert len(cells()) == 2
    # The default guidance, asked for, is the cell already done.
    done = names()
    run_protocol("aux/synthetic", replace(request, variant={"mask_guidance": "none"}))
    assert names() == done
    # The classifier's cap on the mask is read at inference only: the same model, re-scored.
    guided = json.loads(
        run_protocol("aux/synthetic", replace(request, variant={"mask_guidance": "classifier"})).read_text()
    )
    assert guided["variant"]["mask_guidance"] == "classifier" and "capped" in guided["notes"]
    (gated,) = cells(excluding=done)
    assert gated["train_s"] == 0.0 and gated["probabilities"] == trained["probabilities"]
    guided_model = versioned / f"{gated['scored_from']}-guided-by-classifier" / "model"
    guided_card = read_card(guided_model)
    assert (
        guided_card.model_options["mask_guidance"]
        == guided_card.config["model"]["mask_guidance"]
        == "classifier"
    )
    # Another config trains (mask_peak first); the classifier cell then re-scores that model.
    other = [*overrides, "trainer.lr=0.002"]
    for score, trains in (("mask_peak", True), ("classifier", False)):
        done = names()
        run_protocol("aux/synthetic", replace(request, variant={"image_score": score}, overrides=other))
        (new,) = cells(excluding=done)
        assert ("scored_from" not in new) is trains
    # Other training images (another split) never lend their model: the cell trains.
    monkeypatch.setattr(aux_bench, "SPLIT_SEED", 1)
    run_protocol("aux/synthetic", replace(request, variant={"image_score": "classifier"}, overrides=other))
    assert len(cells()) == 6 and sum("scored_from" in c for c in cells()) == 3


def test_paper_tables_stand_beside_the_matching_cells_only() -> None:
    from defectkit.bench.aux import paper_figures

    full = {"tasks": "all", "attention": "se+sa", "seg_loss": "dice", "fraction": 1.0}
    table_iii = {"recall": 0.887, "precision": 0.939, "f1": 0.912}
    assert paper_figures(full) == {"iou": 0.903, "dice": 0.926, "accuracy": 0.971, **table_iii}
    assert paper_figures({**full, "seg_loss": "bce"}) == {"iou": 0.892, "dice": 0.911}
    assert paper_figures({**full, "attention": "se"}) == {"accuracy": 0.968}
    assert paper_figures({**full, "attention": "se", "seg_loss": "bce"}) == {}
    assert paper_figures({**full, "tasks": "detection"}) == {} == paper_figures({**full, "fraction": 0.5})
    # Single-task baselines at the paper's settings: Table II's FPN, Table III's SEResNet-50.
    assert paper_figures({**full, "tasks": "segmentation"}) == {"iou": 0.881, "dice": 0.902}
    se_resnet = {"recall": 0.803, "precision": 0.968, "f1": 0.878, "accuracy": 0.955}
    assert paper_figures({**full, "tasks": "classification"}) == se_resnet
    assert paper_figures({**full, "tasks": "classification", "seg_loss": "bce"}) == se_resnet  # no mask
    assert paper_figures({**full, "tasks": "segmentation", "attention": "none"}) == {}
    # Table II's other segmenters, by decoder; Table III's classifiers without attention, by backbone.
    unet = {**full, "tasks": "segmentation", "decoder": "unet"}
    assert paper_figures(unet) == {"iou": 0.832, "dice": 0.856}
    assert paper_figures({**unet, "seg_loss": "bce"}) == {} == paper_figures({**unet, "fraction": 0.5})
    plain = {**full, "tasks": "classification", "attention": "none"}
    efficientnet_b0 = {"recall": 0.858, "precision": 0.928, "f1": 0.892, "accuracy": 0.958}
    assert paper_figures(plain, "tf_efficientnet_lite0") == efficientnet_b0
    assert paper_figures(plain, "resnet50")["accuracy"] == 0.949
    assert (
        paper_figures(plain, "convnext_tiny") == {} == paper_figures({**plain, "attention": "se"}, "resnet50")
    )
    # The image verdict's figures stand only beside cells judged by the classification head.
    peak = {**full, "image_score": "mask_peak"}
    assert paper_figures(peak) == {"iou": 0.903, "dice": 0.926}
    assert paper_figures({**peak, "tasks": "classification"}) == {}


def test_paper_gains_stand_beside_matching_multitask_records_only() -> None:
    from defectkit.bench.aux import paper_gains

    full = {"attention": "se+sa", "seg_loss": "dice", "fraction": 1.0}
    every = ["classification", "detection", "segmentation"]
    assert paper_gains("ksdd", full, every) == {
        "accuracy_gain": pytest.approx(0.016),
        "map50_gain_rel": 0.1795,
        "dice_gain_rel": pytest.approx(0.926 / 0.902 - 1),
    }
    # Elsewhere, or at other settings, only section H's relative mAP gain stands beside ours.
    assert paper_gains("neu-det", full, every) == {"map50_gain_rel": 0.1795}
    assert paper_gains("ksdd", {**full, "seg_loss": "bce"}, every) == {"map50_gain_rel": 0.1795}
    assert paper_gains("ksdd", {**full, "fraction": 0.5}, ["classification"]) == {}


@pytest.mark.parametrize(
    ("overrides", "noted"),
    [
        ([], True),
        (["method_options.seg_loss=jaccard"], True),
        (["method_options.seg_loss=dice+bce"], False),
        (["method_options.seg_reduction=batch"], False),
        (["model.tasks=[classification]"], False),  # no mask head: the loss is never read
    ],
)
def test_ksdd_empty_mask_note_only_on_overlap_losses_per_image(overrides: list[str], noted: bool) -> None:
    from defectkit.bench.aux import AUX_TRIED_CPU, _notes
    from defectkit.bench.protocols import REPO_ROOT
    from defectkit.config import load_config

    config = load_config(REPO_ROOT / "configs/aux_net/kolektorsdd.yaml", "cpu", overrides)
    assert (AUX_TRIED_CPU["ksdd"] in _notes("ksdd", config, True, {}, "cpu")) is noted
    assert AUX_TRIED_CPU["ksdd"] not in _notes("ksdd", config, True, {}, "paper")


@pytest.mark.parametrize(
    ("tasks", "score", "judge"),
    [("[segmentation]", "classifier", "peak mask"), ("[detection]", "classifier", "best anchor"),
     ("[segmentation,detection]", "classifier", "best anchor"), ("[classification]", "classifier", None),
     ("[classification,segmentation,detection]", "classifier", None),
     ("[segmentation,detection]", "mask_peak", "peak mask probability (image_score=mask_peak)")],
)  # fmt: skip
def test_notes_say_what_judges_a_network_without_a_classifier(
    tasks: str, score: str, judge: str | None
) -> None:
    from defectkit.bench.aux import _notes
    from defectkit.bench.protocols import REPO_ROOT
    from defectkit.config import load_config

    overrides = [f"model.tasks={tasks}", f"model.image_score={score}", "model.class_activation=softmax"]
    notes = _notes(
        "ksdd",
        load_config(REPO_ROOT / "configs/aux_net/kolektorsdd.yaml", "cpu", overrides),
        False,
        {},
        "cpu",
    )
    assert ("no classification head" in notes) is (judge is not None)
    assert judge is None or f"each class's {judge}" in notes
    # Only a classification head reads the activation.
    assert ("softmax classes" in notes) is (judge is None)


def test_notes_name_the_schedule_and_any_reduced_precision() -> None:
    from defectkit.bench.aux import _notes
    from defectkit.bench.protocols import REPO_ROOT
    from defectkit.config import load_config

    path = REPO_ROOT / "configs/aux_net/kolektorsdd.yaml"
    plain = _notes("ksdd", load_config(path, "cpu"), True, {}, "cpu")
    assert "constant rate" in plain and "precision" not in plain
    changed = ["method_options.lr_schedule=one_cycle", "trainer.precision=bf16-mixed"]
    notes = _notes("ksdd", load_config(path, "cpu", changed), True, {}, "cpu")
    assert "one cycle rate" in notes and "precision bf16-mixed" in notes
    # A classifier without attention stands beside Table III's classifier of its family, and says so.
    classifier = ["model.tasks=[classification]", "model.attention=none"]
    notes = _notes("ksdd", load_config(path, "cpu", classifier), True, {}, "cpu")
    assert "Table III's EfficientNet-B0 classifier" in notes and "headline" not in notes
    assert "Severstal rows are not run" in notes and "Severstal" not in plain
    assert "Table III" not in plain and "headline" in plain
    segmenter = ["model.tasks=[segmentation]", "model.segmentation_decoder=unet"]
    assert "Table II's U-Net segmenter" in _notes(
        "ksdd", load_config(path, "cpu", segmenter), True, {}, "cpu"
    )


def test_multitask_metrics_set_each_single_task_model_beside_the_multitask_one() -> None:
    from defectkit.bench.aux import multitask_metrics

    multitask = {"metrics": {"map50": 0.6, "map": 0.3, "mla": 0.99, "dice": 0.945, "dice_pos": 0.58}}
    classifier = {"metrics": {"mla": 0.98}}
    segmenter = {"metrics": {"mla": 0.985, "dice": 0.936, "dice_pos": 0.573}}
    metrics = multitask_metrics(multitask, {"classification": classifier, "segmentation": segmenter})
    assert metrics["accuracy_gain"] == pytest.approx(0.01)
    assert metrics["dice_gain_rel"] == pytest.approx(0.945 / 0.936 - 1.0)
    assert (metrics["dice_pos_multitask"], metrics["dice_pos_single"]) == (0.58, 0.573)
    assert "map50_single" not in metrics  # no detector, no mAP gain
    no_positives = {"metrics": {"mla": 0.9, "dice": 0.9}}
    assert "dice_pos_single" not in multitask_metrics(multitask, {"segmentation": no_positives})


def test_multitask_record_names_each_runs_machine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from defectkit.bench.aux import _write_multitask
    from defectkit.bench.protocols import BenchRequest

    def run(cpu: str, wall_s: float) -> dict[str, object]:
        # Cells stored before cells recorded their machine: only the run's results name it.
        cells = [{"wall_s": wall_s, "commit": "c0ffee"}]
        return {"metrics": {"mla": 0.9, "dice": 0.9}, "scores": SimpleNamespace(paths=["a.png", "b.png"]),
                "cells": cells, "machine": {"cpu": cpu}}  # fmt: skip

    dataset = SimpleNamespace(name="ksdd", info=SimpleNamespace(name="KolektorSDD"))
    request = BenchRequest("cpu", "full", "defectkit bench aux/ksdd", tmp_path, tmp_path, commit="c0ffee")
    variant = {"attention": "se+sa", "seg_loss": "dice", "fraction": 1.0}
    path = _write_multitask(
        "aux/ksdd",
        dataset,
        request,
        variant,
        run("Intel Xeon", 2.0),
        {"classification": run("AMD EPYC", 3.0)},
    )  # type: ignore[arg-type]
    record = json.loads(path.read_text())
    assert record["machine"] == {"cpu": "Intel Xeon / AMD EPYC"}
    assert record["commit"] == "c0ffee" and record["wall_time_s"] == 5.0
    assert record["variant"]["tasks"] == "all vs classification"
    assert "Dice comparison is void" not in record["notes"]
    assert "Table III's ResNet-50 and EfficientNet-B0" in record["notes"]  # KolektorSDD for TekErreka
    assert "LinkNet" not in record["notes"]  # no single-task segmenter in this record
    collapsed = {**run("AMD EPYC", 1.0), "metrics": {"mla": 0.9, "dice": 0.87, "dice_pos": 0.0}}
    path = _write_multitask("aux/ksdd", dataset, request, variant, collapsed, {"segmentation": collapsed})  # type: ignore[arg-type]
    notes = json.loads(path.read_text())["notes"]
    assert "the multitask model and the single-task segmenter found no defect pixel" in notes


def test_multitask_verdicts_judge_each_metric_apart() -> None:
    from defectkit.bench.aux import multitask_verdicts

    metrics = {"map50_multitask": 0.758, "map50_single": 0.764, "map_multitask": 0.365, "map_single": 0.359}
    assert multitask_verdicts(metrics) == [
        "multitask map50 below the single-task model's",
        "multitask map above the single-task model's",
    ]
    assert multitask_verdicts({"dice_multitask": 0.9, "dice_single": 0.9}) == [
        "multitask dice equal to the single-task model's"
    ]
    pooled_and_positive = {"dice_multitask": 0.945, "dice_single": 0.95, "dice_pos_multitask": 0.58,
                           "dice_pos_single": 0.5}  # fmt: skip
    assert multitask_verdicts(pooled_and_positive) == [
        "multitask dice below the single-task model's",
        "multitask dice_pos above the single-task model's",
    ]


def test_single_task_inspection_and_strides() -> None:
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        probabilities, masks = tiny(tasks=["detection"]).eval().inspect(image)
        assert masks is None and probabilities.shape == (2, 2)  # judged by its best anchors
        probabilities, masks = tiny(tasks=["segmentation"]).eval().inspect(image)
        assert masks is not None and probabilities.shape == (2, 2)
    with pytest.raises(ValueError, match="multiples of 64"):
        tiny()(torch.rand(1, 3, 96, 96))  # P6 (stride 64) would not tile a 96-pixel side
    assert tiny(tasks=["segmentation"]).stride == 32 and tiny(tasks=["detection"]).fpn is not None


@pytest.mark.parametrize(
    ("tasks", "image_score", "judge"),
    [(["classification"], "classifier", "classifier"), (["segmentation"], "classifier", "mask_peak"),
     (["detection"], "classifier", "best_anchor"),
     (["segmentation", "detection"], "classifier", "best_anchor"),
     (list(TASKS), "classifier", "classifier"), (list(TASKS), "mask_peak", "mask_peak"),
     (["segmentation"], "mask_peak", "mask_peak"), (["segmentation", "detection"], "mask_peak", "mask_peak")],
)  # fmt: skip
def test_image_judge_names_what_inspect_reads(tasks: list[str], image_score: str, judge: str) -> None:
    model = tiny(tasks=tasks, image_score=image_score).eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        output = model(image)
        probabilities, _ = model.inspect(image)
    source = {
        "classifier": lambda: model.class_probabilities(output.class_logits),
        "mask_peak": lambda: torch.sigmoid(output.mask_logits).amax(dim=(2, 3)),
        "best_anchor": lambda: torch.sigmoid(output.box_logits).amax(dim=1),
    }
    assert image_judge(tasks, image_score) == judge
    assert torch.allclose(probabilities, source[judge]())


def test_mask_peak_judges_each_class_by_its_best_pixel(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conftest import texture
    from defectkit import load_inspector

    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        probabilities, masks = tiny(image_score="mask_peak").eval().inspect(image)
        by_classifier, same_masks = tiny().eval().inspect(image)  # same seed: same weights
    assert masks is not None and same_masks is not None and torch.equal(masks, same_masks)
    assert torch.equal(probabilities, masks.amax(dim=(2, 3)))
    assert not torch.allclose(probabilities, by_classifier)
    with pytest.raises(ValueError, match="image_score='best'"):
        tiny(image_score="best")
    with pytest.raises(ValueError, match="mask_peak needs the segmentation task"):
        tiny(image_score="mask_peak", tasks=["classification", "detection"])
    picture = texture(7, 90, 150, 3)  # ONNX: tests/inference/test_onnx.py exports a mask_peak aux_net
    # Softmax classes always call their best class; mask peaks are not exclusive and may say "ok".
    from defectkit.inference.saved_model import InputSpec, ModelCard, Thresholds, save_model

    options = {**TINY, "num_classes": 2, "class_activation": "softmax", "image_score": "mask_peak"}
    quiet = AuxNet(**options).eval()  # type: ignore[arg-type]
    assert quiet.segmentation_head is not None
    torch.nn.init.constant_(quiet.segmentation_head.classifier.bias, -20.0)  # no pixel near 0.5
    card = ModelCard(
        method="aux_net", model="aux_net", model_options=options, class_names=["a", "b"],
        input=InputSpec(size=(64, 64), channels=3), thresholds=Thresholds(decision=0.5), multilabel=True,
    )  # fmt: skip
    verdict = load_inspector(save_model(tmp_path / "quiet", quiet, card)).inspect(picture)
    assert verdict.verdict == "ok" and max(verdict.class_scores.values()) < 0.5


def test_good_images_teach_every_head() -> None:
    from defectkit.training.aux_net import batch_boxes
    from defectkit.training.targets import class_targets

    image = np.zeros((3, 8, 8), np.float32)
    batch = collate([Sample("ok", image, label=0), Sample("ng", image, label=1, classes=[2])], num_classes=2)
    targets, known = class_targets(batch, 2)
    assert known.tolist() == [True, True] and targets.tolist() == [[0.0, 0.0], [0.0, 1.0]]
    boxes, _, has_boxes = batch_boxes(batch, 2, from_masks=True)
    assert has_boxes.tolist() == [True, False] and boxes[0].numel() == 0  # known: no box at all


def test_softmax_classes_are_exclusive_and_need_one_class_per_image() -> None:
    model = tiny(class_activation="softmax", tasks=("classification",))
    recipe = AuxNetRecipe(model, 1e-3, 0.0, dict(DEFAULT_OPTIONS))
    image = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    batch = collate([Sample("a", image, label=1, classes=[2]), Sample("b", image, label=1, classes=[1])], 2)
    terms, output = recipe.losses(batch)
    expected = torch.nn.functional.cross_entropy(output.class_logits, torch.tensor([1, 0]))
    assert float(terms["class"].detach()) == pytest.approx(float(expected.detach()))
    with torch.no_grad():
        probabilities, _ = model.eval().inspect(torch.from_numpy(image)[None])
    assert float(probabilities.sum()) == pytest.approx(1.0)
    # A good image shows no class: softmax cannot say so, and the error names the image.
    with pytest.raises(ValueError, match=r"ok\.png: class_activation=softmax needs exactly one class"):
        recipe.losses(
            collate([Sample("ok.png", image, label=0), Sample("a", image, label=1, classes=[2])], 2)
        )
    # Saved and inspected: the best class is the call, whatever its probability.
    from defectkit.inference.inspector import Inspector, TorchBackend
    from defectkit.inference.saved_model import InputSpec, ModelCard, Thresholds

    options = {"class_activation": "softmax", "num_classes": 2}
    card = ModelCard(
        method="aux_net", model="aux_net", model_options=options, class_names=["pits", "scratch"],
        input=InputSpec(size=(64, 64), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3),
        thresholds=Thresholds(decision=0.99), multilabel=True,
    )  # fmt: skip
    inspection = Inspector(card, TorchBackend(model.eval(), card), "tiny").inspect(
        (image.transpose(1, 2, 0) * 255).astype(np.uint8)
    )
    best = max(inspection.class_scores, key=inspection.class_scores.__getitem__)
    assert inspection.verdict == "defect" and inspection.defect_class == best
    assert sum(inspection.class_scores.values()) == pytest.approx(1.0, abs=1e-5)
    # The whole training set is checked before training starts.
    from defectkit.training.aux_net import check_one_class_each

    check_one_class_each([Sample("a", label=1, classes=[2]), Sample("b", label=1)])  # unknown classes: fine
    with pytest.raises(ValueError, match=r"two\.png: 2 classes"):
        check_one_class_each([Sample("a", label=1, classes=[1]), Sample("two.png", label=1, classes=[1, 2])])
    with pytest.raises(ValueError, match=r"ok\.png: no defect class"):
        check_one_class_each([Sample("ok.png", label=0)])
    with pytest.raises(ValueError, match="nms_iou"):
        options_of({"method_options": {"nms_iou": 0.0}})
    with pytest.raises(ValueError, match="at least 2 classes"):
        tiny(class_activation="softmax", num_classes=1)
    with pytest.raises(ValueError, match="class_activation='tanh'"):
        tiny(class_activation="tanh")


@pytest.mark.parametrize("decoder", ["unet", "linknet", "pspnet"])
def test_table_ii_decoders_segment_alone_on_the_same_encoder(decoder: str) -> None:
    fpn = tiny(tasks=["segmentation"])
    model = tiny(tasks=["segmentation"], segmentation_decoder=decoder)
    images = torch.rand(2, 3, 64, 96)
    output = model(images)
    assert output.mask_logits.shape == (2, 2, 64, 96) and output.box_logits.shape[1] == 0
    output.mask_logits.mean().backward()
    stem = model.encoder.body.conv_stem.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    # The same encoder with its attention; PSPNet reads C3 only, so the stages past it are not built.
    assert type(model.encoder.stage_attention[-1]) is type(fpn.encoder.stage_attention[-1])
    counted = sum(p.numel() for p in model.encoder.parameters())
    whole = sum(p.numel() for p in fpn.encoder.parameters())
    assert (counted < whole / 10) if decoder == "pspnet" else (counted >= whole)
    assert model.fpn is None and model.decision_head is None
    with pytest.raises(ValueError, match="needs tasks \\[segmentation\\]"):
        tiny(tasks=["classification", "segmentation"], segmentation_decoder=decoder)
    with pytest.raises(ValueError, match="use one of"):
        tiny(tasks=["segmentation"], segmentation_decoder="deeplab")


def test_a_table_ii_segmenter_trains_saves_and_exports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import defectkit.training.engine as engine
    from defectkit import load_inspector
    from defectkit.config import load_config
    from defectkit.inference.export import export_onnx_checked

    model = {"tasks": ["segmentation"], "segmentation_decoder": "pspnet"}
    config = load_config(synthetic_run(model, size=[64, 96], per_surface=8, batch_size=4))
    model_dir = engine.train(config, tmp_path / "run", progress=False)
    assert model_dir is not None
    image = np.random.default_rng(3).integers(0, 255, (70, 90), dtype=np.uint8)
    inspection = load_inspector(model_dir).inspect(image)
    result = export_onnx_checked(model_dir)  # PSP's adaptive pooling included
    assert result.max_score_diff < 1e-3 and result.max_heatmap_diff < 1e-3
    again = load_inspector(model_dir, backend="onnx").inspect(image)
    assert again.class_scores == pytest.approx(inspection.class_scores, abs=1e-3)
