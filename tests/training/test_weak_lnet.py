"""weak_lnet (paper 004): layers, the weak loss and its schedule, three-stage training from image
labels only (a mask read anywhere in training fails the test), save, predict with regions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

import defectkit.data.io as data_io
import defectkit.training.engine as engine
from conftest import TINY_WEAK_LNET, with_changes
from defectkit import load_inspector
from defectkit.config import load_config
from defectkit.inference.inspector import Inspector
from defectkit.inference.saved_model import load_model, read_card
from defectkit.models import create_model
from defectkit.registry import get_method
from defectkit.training.data import prepare_data
from defectkit.training.weak_lnet import (
    WeakLNetRecipe,
    collaborative_alpha,
    resolved_options,
    stage_lengths,
    weak_loss,
)

SYNTH = {"surfaces": 1, "per_surface": 40, "size": 128, "defect_fraction": 0.5, "seed": 3}
SCHEDULE = {
    "stage1_iterations": 6,
    "alpha_every": 2,
    "stage2_iterations": 6,
    "stage2_lr_drop_at": 3,
    "stage3_iterations": 4,
}

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "method": "weak_lnet",
        "seed": 0,
        "data": {"synthetic": SYNTH, "val_fraction": 0.3, "supervision": "weak"},
        "input": {"size": [128, 128], "channels": 1},
        "augment": {"antialias": False},
        "model": dict(TINY_WEAK_LNET),
        "method_options": dict(SCHEDULE),
        "trainer": {"epochs": 1, "val_every": 1, "batch_size": 2},
    }
    return with_changes(config, **changes)


@pytest.fixture
def masks_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to read a pixel label fails: image labels are all weak_lnet may use."""
    original = data_io.load_mask

    def forbidden(sample: Any, *args: Any, **kwargs: Any) -> Any:
        if sample.has_mask:
            raise AssertionError(f"{sample.path}: a mask was read while training weak_lnet")
        return original(sample, *args, **kwargs)

    monkeypatch.setattr(data_io, "load_mask", forbidden)


# ---------------------------------------------------------------------------------------------
# the network


def test_layer_shapes_follow_the_tables() -> None:
    model = create_model("weak_lnet")
    assert [m.out_channels for m in model.shared.modules() if isinstance(m, torch.nn.Conv2d)] == [
        32, 32, 64, 64, 128, 128, 128
    ]  # fmt: skip
    lnet = [m for m in model.lnet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size[0]) for m in lnet] == [(64, 5), (64, 5), (512, 15), (1, 1)]
    assert all(m.padding_mode == "reflect" for m in lnet[:3])
    dnet = [m.out_channels for m in model.dnet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert dnet == [64, 64, 64, 128, 256]
    assert model.dnet.classifier[0].in_features == 257 and model.dnet.classifier[0].out_features == 266


@pytest.mark.parametrize(("stride", "cells"), [(1, (16, 8)), (2, (8, 4))])
def test_forward_gives_a_decision_and_a_heatmap(stride: int, cells: tuple[int, int]) -> None:
    model = create_model("weak_lnet", **TINY_WEAK_LNET, lnet_stride=stride).eval()
    with torch.no_grad():
        scores, heatmaps = model.inspect(torch.rand(2, 1, 128, 64))
    assert scores.shape == (2,) and heatmaps.shape == (2, 1, *cells)
    assert float(heatmaps.min()) >= 0.0 and float(heatmaps.max()) <= 1.0


def test_lse_pooling_lies_between_mean_and_max() -> None:
    model = create_model("weak_lnet", **TINY_WEAK_LNET, pooling="lse", lse_r=5.0)
    x = torch.rand(1, 3, 4, 4)
    pooled = model.dnet.pool(x)
    assert bool((pooled >= x.mean(dim=(2, 3)) - 1e-6).all()) and bool((pooled <= x.amax(dim=(2, 3))).all())


def test_reset_localisation_redraws_the_shared_layers_and_lnet_only() -> None:
    model = create_model("weak_lnet", **TINY_WEAK_LNET)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(3.0)
    model.reset_localisation()
    after = model.state_dict()
    for name, value in before.items():
        if name.endswith("weight") and value.dim() > 1:  # convolution kernels: drawn again, or kept
            assert torch.equal(value, after[name]) == name.startswith("dnet."), name
        if name.endswith("running_mean"):  # statistics: cleared, or left as they were
            assert bool((after[name] == 0).all()) == (not name.startswith("dnet.")), name


def test_input_sides_are_checked() -> None:
    model = create_model("weak_lnet", **TINY_WEAK_LNET)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.rand(1, 1, 100, 64))
    with pytest.raises(ValueError, match="at least 64"):
        model(torch.rand(1, 1, 56, 64))
    with pytest.raises(ValueError, match="two cells at 1/64 scale"):
        model.train()(torch.rand(1, 1, 64, 64))
    model(torch.rand(1, 1, 64, 128))  # two cells at 1/64 are enough


# ---------------------------------------------------------------------------------------------
# the weak loss and the schedule


def test_weak_loss_uses_only_the_mean_heat_value() -> None:
    flat = torch.full((1, 1, 4, 4), 0.25)
    spotty = torch.zeros((1, 1, 4, 4))
    spotty[..., :1, :] = 1.0  # same mean 0.25, very different pixels
    for label in (0, 1):
        labels = torch.tensor([label])
        assert float(weak_loss(flat, labels, 8.0)) == pytest.approx(float(weak_loss(spotty, labels, 8.0)))
    # Defective image: the negative entropy of Q, lowest (-log 2) at Q = 0.5.
    half = torch.full((1, 1, 2, 2), 0.5)
    assert float(weak_loss(half, torch.tensor([1]), 8.0)) == pytest.approx(-math.log(2.0))
    assert float(weak_loss(flat, torch.tensor([1]), 8.0)) > -math.log(2.0)
    # Good image: -alpha log(1 - Q).
    assert float(weak_loss(flat, torch.tensor([0]), 8.0)) == pytest.approx(-8.0 * math.log(0.75))


def test_collaborative_alpha_follows_equation_6() -> None:
    values = [collaborative_alpha(step, 750, 8.0, 30) for step in range(1, 751)]
    assert values[0] == 8.0 and values[28] == 8.0  # no update before step 30
    assert values[29] == pytest.approx(8.0 * (math.cos(2 * math.pi / 25) + 3) / 4)  # first update
    # Half way down to alpha_init / 2 (k = 25 updates is odd: the lowest is update 12 or 13).
    assert min(values) == pytest.approx(8.0 * (math.cos(2 * math.pi * 12 / 25) + 3) / 4) and min(values) > 4.0
    assert values[-1] == pytest.approx(8.0)
    assert len(set(values[29:59])) == 1  # constant between updates


def test_stages_learning_rates_and_skipping_the_lnet() -> None:
    options = resolved_options({})
    assert stage_lengths(options) == (750, 1200, 300)
    assert stage_lengths({**options, "lnet_trained": False}) == (0, 1200, 300)
    model = create_model("weak_lnet", **TINY_WEAK_LNET)
    recipe = WeakLNetRecipe(model, 0.0, 0.0, {})
    assert recipe.stage_at(0) == (1, 0) and recipe.stage_at(750) == (2, 0) and recipe.stage_at(1950) == (3, 0)
    assert recipe.stage_at(2250) == (0, 0)
    assert [recipe.learning_rate(*recipe.stage_at(i)) for i in (0, 750, 1349, 1350, 1950)] == [
        0.1, 0.01, 0.01, 0.001, 0.001
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown method_options"):
        resolved_options({"stage_one_iterations": 5})


# ---------------------------------------------------------------------------------------------
# training from image labels only


def test_train_from_image_labels_only_then_predict_regions(tmp_path: Path, masks_forbidden: None) -> None:
    config = load_config(tiny_config())
    data = prepare_data(config)
    assert not any(s.has_mask for s in [*data.train, *data.val])  # hidden by the data layer
    model_dir = engine.train(config, tmp_path / "run", progress=False)
    assert model_dir is not None
    card = read_card(model_dir)
    assert card.method == "weak_lnet" and "good_quantile" in card.thresholds.rule
    assert card.validation_metrics["n_pos"] > 0

    metrics = (tmp_path / "run" / "logs" / "metrics.csv").read_text()
    assert "train/weak_loss" in metrics and "train/dec_loss" in metrics and "val/ap" in metrics

    inspector = load_inspector(model_dir)
    image = np.full((128, 128), 100, np.uint8)
    image[40:80, 60:66] = 250
    inspection, heatmap = inspector.inspect_with_heatmap(image)
    assert heatmap is not None and heatmap.shape == (128, 128)
    assert inspection.verdict in ("ok", "defect")
    # Regions are the connected components above the stored pixel threshold (none below it).
    assert all(region.score >= card.thresholds.pixel for region in inspection.regions)
    # At a threshold just under the map's peak the peak is a region; just above it, none is
    # (float32 steps: the heat map's own precision).
    peak = np.float32(heatmap.max())
    for pixel, found in (
        (np.nextafter(peak, np.float32(-1)), True),
        (np.nextafter(peak, np.float32(2)), False),
    ):
        thresholds = card.thresholds.model_copy(update={"pixel": float(pixel)})
        judged = Inspector(card.model_copy(update={"thresholds": thresholds}), inspector.backend, "t")
        regions = judged.regions(heatmap)
        assert bool(regions) is found and all(r.score >= pixel for r in regions)


def _params(model: torch.nn.Module, part: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if k.startswith(part)}


def _state(model: torch.nn.Module, part: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(part)}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_schedule(
    tmp_path: Path, batch_size: int = 2, **options: Any
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the model train() starts from, the trained model) for a schedule of ``options``."""
    trainer = {"epochs": 1, "val_every": 1, "batch_size": batch_size}
    config = load_config(tiny_config(method_options={**SCHEDULE, **options}, trainer=trainer))
    L.seed_everything(config.seed, verbose=False)
    initial = get_method("weak_lnet").build_model(config.model_dump(mode="json"))  # what train() builds
    model_dir = engine.train(config, tmp_path / "run", progress=False)
    assert model_dir is not None
    trained, _ = load_model(model_dir)
    return initial, trained


def test_stage_one_trains_shared_layers_and_lnet_only(tmp_path: Path) -> None:
    initial, trained = _train_schedule(tmp_path, stage2_iterations=0, stage3_iterations=0)
    assert _same(_state(initial, "dnet."), _state(trained, "dnet."))  # not even BatchNorm statistics
    assert not _same(_params(initial, "shared."), _params(trained, "shared."))
    assert not _same(_params(initial, "lnet."), _params(trained, "lnet."))


@pytest.mark.parametrize("frozen", [True, False])
def test_stage_two_freezes_shared_layers_and_lnet(tmp_path: Path, frozen: bool) -> None:
    initial, trained = _train_schedule(
        tmp_path, lnet_trained=False, stage3_iterations=0, freeze_stage2=frozen
    )
    for part in ("shared.", "lnet."):
        assert _same(_params(initial, part), _params(trained, part)) == frozen, part
    assert not _same(_params(initial, "dnet."), _params(trained, "dnet."))


@pytest.mark.parametrize(("lnet_trained", "fixed_statistics"), [(True, True), (False, False)])
def test_frozen_layers_use_statistics_only_once_estimated(lnet_trained: bool, fixed_statistics: bool) -> None:
    recipe = WeakLNetRecipe(
        create_model("weak_lnet", **TINY_WEAK_LNET), 0.0, 0.0, {"lnet_trained": lnet_trained}
    )
    recipe._set_mode(2)
    model = recipe.model
    assert not any(p.requires_grad for p in [*model.shared.parameters(), *model.lnet.parameters()])
    assert model.shared.training is not fixed_statistics and model.lnet.training is not fixed_statistics
    assert all(p.requires_grad for p in model.dnet.parameters()) and model.dnet.training
    recipe._set_mode(3)
    assert all(p.requires_grad for p in model.parameters()) and model.training


def test_more_than_one_epoch_is_refused() -> None:
    config = load_config(tiny_config(trainer={"epochs": 2, "val_every": 1, "batch_size": 1}))
    with pytest.raises(ValueError, match=r"trainer\.epochs: 1"):
        get_method("weak_lnet").train_sampler([0, 1, 0, 1], config)


def test_train_positives_limits_training_defects_only() -> None:
    full = prepare_data(load_config(tiny_config()))
    limited = prepare_data(load_config(tiny_config(data__train_positives=3)))
    assert sum(s.label == 1 for s in limited.train) == 3
    assert [s.path for s in limited.val] == [s.path for s in full.val]
    assert {s.path for s in full.train if s.label == 0} == {s.path for s in limited.train if s.label == 0}


def test_cpu_and_paper_profiles_resolve() -> None:
    config_path = Path(__file__).resolve().parents[2] / "configs/weak_lnet/kolektorsdd.yaml"
    paper = load_config(config_path, profile="paper")
    cpu = load_config(config_path, profile="cpu")
    assert paper.input.size == (1408, 512) and paper.model["lnet_volume"] == 512
    assert cpu.input.size[0] < 1408 and cpu.trainer.epochs == 1
    assert paper.method_options["stage1_iterations"] == 750 and paper.method_options["alpha_init"] == 8.0


@pytest.mark.parametrize(("stages", "turned_batches"), [((2, 3), 2 + 4), ((1, 2, 3), 8 + 2 + 4)])
def test_rotation_turns_whole_pairs_in_the_chosen_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stages: tuple[int, ...], turned_batches: int
) -> None:
    turns: list[tuple[int, ...]] = []
    rot90 = torch.rot90

    def counting_rot90(images: torch.Tensor, k: int, dims: tuple[int, int]) -> torch.Tensor:
        turns.append(tuple(images.shape))
        return rot90(images, k, dims)

    monkeypatch.setattr(torch, "rot90", counting_rot90)
    options = {
        **SCHEDULE,
        "rotation": True,
        "rotation_stages": list(stages),
        "stage1_iterations": 8,
        "stage2_iterations": 2,
        "stage2_lr_drop_at": 1,
    }
    config = load_config(tiny_config(input={"size": [128, 64], "channels": 1}, method_options=options))
    assert engine.train(config, tmp_path / "run", progress=False) is not None
    assert len(turns) == turned_batches  # one draw per positive/negative pair, non-square included
    assert all(shape[0] == 2 for shape in turns)


@pytest.mark.parametrize(
    "options",
    [{"rotation_stages": [0, 4]}, {"rotation_stages": [True, 2]}, {"rotation": True, "rotation_stages": []}],
)
def test_rotation_stages_outside_the_schedule_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="rotation_stages"):
        resolved_options(options)


def test_rotation_turns_the_dnet_stages_by_default() -> None:
    assert resolved_options({"rotation": True})["rotation_stages"] == (2, 3)


@pytest.mark.parametrize("stage", [1, 3])
def test_summed_pair_loss_steps_twice_as_far(tmp_path: Path, stage: int) -> None:
    """One iteration (a positive and a negative) of stage 1 (weak loss) or 3 (BCE + weak loss):
    plain SGD on the pair's summed loss moves every weight twice as far as on its mean, as far as
    the paper's two per-image steps would."""
    moves = {}
    for pair_loss in ("mean", "sum"):
        initial, trained = _train_schedule(
            tmp_path / pair_loss,
            stage1_iterations=int(stage == 1),
            stage2_iterations=0,
            stage3_iterations=int(stage == 3),
            pair_loss=pair_loss,
        )
        before, after = _params(initial, "lnet."), _params(trained, "lnet.")
        moves[pair_loss] = torch.cat([(after[k] - before[k]).flatten() for k in before])
    assert moves["mean"].abs().max() > 0
    torch.testing.assert_close(moves["sum"], 2 * moves["mean"], rtol=1e-3, atol=1e-7)
    with pytest.raises(ValueError, match="pair_loss"):
        resolved_options({"pair_loss": "max"})


def _scripted_stage1(monkeypatch: pytest.MonkeyPatch, aps: list[float]) -> list[dict[str, torch.Tensor]]:
    """Stage 1 judged by ``aps`` in turn; returns the shared layers' and LNet's state at each judgement."""
    judged: list[dict[str, torch.Tensor]] = []
    scripted = iter(aps)

    def validation_ap(recipe: WeakLNetRecipe) -> float:
        judged.append(recipe._localisation_state())
        return next(scripted)

    monkeypatch.setattr(WeakLNetRecipe, "stage1_validation_ap", validation_ap)
    return judged


def test_a_failed_stage_one_starts_afresh_and_the_best_attempt_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    judged = _scripted_stage1(monkeypatch, [0.3, 0.8, 0.5])
    _, trained = _train_schedule(tmp_path, stage1_attempts=3, stage1_min_val_ap=0.9, stage3_iterations=0)
    assert len(judged) == 3
    assert not _same(judged[0], judged[1]) and not _same(judged[1], judged[2])
    # Each attempt starts from fresh statistics too: its BatchNorm layers count its own batches only.
    tracked = [int(v) for k, v in judged[1].items() if k.endswith("num_batches_tracked")]
    assert tracked and set(tracked) == {SCHEDULE["stage1_iterations"]}
    # Frozen in stage 2 with no stage 3: what was kept after stage 1 is what was saved.
    kept = {**_state(trained, "shared."), **_state(trained, "lnet.")}
    assert _same(kept, judged[1])  # the second attempt's AP was the best of the three
    logged = engine.logged_rows(tmp_path / "run", "val/stage1_ap", ("val/stage1_attempt", "val/stage1_ap"))
    assert [tuple(row.values()) for row in logged] == [(1.0, 0.3), (2.0, 0.8), (3.0, 0.5)]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_stage_one_that_passes_is_not_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_size: int
) -> None:
    judged = _scripted_stage1(monkeypatch, [0.95, 0.0])
    steps: list[int] = []
    training_step = WeakLNetRecipe.training_step

    def counted(recipe: WeakLNetRecipe, batch: Any, batch_index: int) -> Any:
        steps.append(batch_index)
        return training_step(recipe, batch, batch_index)

    monkeypatch.setattr(WeakLNetRecipe, "training_step", counted)
    _train_schedule(tmp_path, batch_size, stage1_attempts=3, stage1_min_val_ap=0.9)
    assert len(judged) == 1  # judged once, at its last image, whatever the batch size
    # The stream holds two spare stage-1 attempts; the epoch stops when the schedule is done.
    assert len(steps) == 2 * sum(stage_lengths(resolved_options(SCHEDULE))) // batch_size


def test_stage_one_is_judged_on_validation_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real judgement (AP of the mean heat value on the held-out images) runs and logs each
    attempt; a bar no attempt reaches keeps training going to the end."""
    aps: list[float] = []
    validation_ap = WeakLNetRecipe.stage1_validation_ap

    def recorded(recipe: WeakLNetRecipe) -> float:
        aps.append(validation_ap(recipe))
        assert recipe.model.shared.training and recipe.model.lnet.training  # back to stage 1's modes
        return 0.0

    monkeypatch.setattr(WeakLNetRecipe, "stage1_validation_ap", recorded)
    assert _train_schedule(tmp_path, stage1_attempts=2)[1] is not None
    assert len(aps) == 2 and all(0.0 <= ap <= 1.0 for ap in aps)
    config = load_config(tiny_config(method_options={**SCHEDULE, "stage1_attempts": 2}))
    sampler = get_method("weak_lnet").train_sampler([0, 1] * 10, config)
    assert sampler is not None and len(sampler) == 2 * (2 * 6 + 6 + 4)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"stage1_attempts": 0},
        {"stage1_attempts": 1.5},
        {"stage1_min_val_ap": 1.2},
        {"stage1_min_val_ap": "x"},
    ],
)
def test_stage_one_attempt_options_are_checked(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="stage1_"):
        resolved_options(options)
