"""segdec end to end on generated data: train, threshold on validation only, save, load, predict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import defectkit.training.engine as engine
from conftest import with_changes
from defectkit import load_inspector
from defectkit.config import load_config
from defectkit.data.sample import Sample
from defectkit.inference.saved_model import load_model, read_card
from defectkit.training.data import apply_supervision, prepare_data
from defectkit.training.segdec import distance_weights, segmentation_targets

SYNTH = {"surfaces": 1, "per_surface": 40, "size": 64, "defect_fraction": 0.5, "seed": 3}

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "method": "segdec",
        "seed": 0,
        "data": {"synthetic": SYNTH, "val_fraction": 0.3},
        "input": {"size": [64, 64], "channels": 1},
        "augment": {"antialias": False},
        "model": {"widths": [8, 8, 8], "volume_channels": 16, "decision_widths": [4, 4, 4]},
        "method_options": {"delta": 1.0, "dilate": 3},
        "trainer": {"epochs": 2, "lr": 0.05, "val_every": 1, "batch_size": 2},
    }
    return with_changes(config, **changes)


def test_train_save_load_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A commit made while training runs (HEAD moves on) is not the code that trained.
    head = ["started"]
    fit = engine.L.Trainer.fit

    def fit_then_commit(trainer: Any, *args: Any, **kwargs: Any) -> None:
        fit(trainer, *args, **kwargs)
        head[0] = "moved-on"

    monkeypatch.setattr(engine, "git_commit", lambda: head[0])
    monkeypatch.setattr(engine.L.Trainer, "fit", fit_then_commit)
    config = load_config(tiny_config())
    model_dir = engine.train(config, tmp_path / "run", progress=False)
    assert model_dir is not None and (model_dir / "weights.safetensors").is_file()
    card = read_card(model_dir)
    assert card.commit == "started"
    assert card.method == "segdec" and 0.0 <= card.thresholds.decision <= 1.0
    assert card.validation_metrics["n_pos"] > 0 and card.data_fingerprint
    assert card.config["trainer"]["epochs"] == 2  # the resolved config travels with the model

    model, _ = load_model(model_dir)
    output = model(torch.rand(1, 1, 64, 64))
    assert output.decision_logit.shape == (1,) and output.mask_logits.shape == (1, 1, 8, 8)

    inspection = load_inspector(model_dir).inspect(np.full((90, 70), 128, np.uint8))
    assert inspection.verdict in ("ok", "defect") and inspection.threshold == card.thresholds.decision
    assert (tmp_path / "run" / "logs" / "metrics.csv").is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_bf16_mixed_precision_trains_and_validates(tmp_path: Path) -> None:
    # Under bf16-mixed the validation logits are bfloat16, which numpy refuses: the recipe casts.
    config = load_config(tiny_config(trainer__precision="bf16-mixed", trainer__epochs=1))
    model_dir = engine.train(config, tmp_path / "run", progress=False)
    assert model_dir is not None
    assert 0.0 <= read_card(model_dir).validation_metrics["ap"] <= 1.0


def test_backward_reaches_both_subnetworks_but_decision_loss_spares_segmentation() -> None:
    from defectkit.registry import get_method

    resolved = load_config(tiny_config()).model_dump(mode="json")
    spec = get_method("segdec")
    model = spec.build_model(resolved)
    recipe = spec.build_recipe(model, resolved)
    from defectkit.data.sample import collate

    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 20:30] = 1
    batch = collate(
        [Sample("a", image=torch.rand(1, 64, 64), label=1, classes=[1], mask=torch.from_numpy(mask))]
    )
    _, dec_loss = recipe.losses(batch)
    dec_loss.backward()
    seg_grads = [p.grad for p in model.segmentation.parameters() if p.grad is not None]
    assert all(float(g.abs().sum()) == 0.0 for g in seg_grads)  # gradient-flow adjustment
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.decision_head.parameters())
    model.zero_grad()
    seg_loss, _ = recipe.losses(batch)
    seg_loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.segmentation.parameters())


def test_threshold_comes_from_validation_never_from_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(tiny_config())
    data = prepare_data(config)
    seen: list[Sample] = []

    original = engine.score_with_masks

    def recording(inspector: Any, samples: list[Sample], channels: int) -> Any:
        seen.extend(samples)
        return original(inspector, samples, channels)

    monkeypatch.setattr(engine, "score_with_masks", recording)
    engine.train(config, tmp_path / "run", progress=False, data=data)
    assert [s.path for s in seen] == [s.path for s in data.val]
    assert all(s.meta["split"] == "train" for s in seen)  # the generator's test split is never touched
    assert not {s.path for s in seen} & {s.path for s in data.train}


def test_validation_without_defects_is_a_clear_error_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(tiny_config())
    data = prepare_data(config)
    data.val = [s for s in data.val if s.label == 0]

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained although no threshold could be chosen afterwards")

    monkeypatch.setattr(engine, "_trainer", no_training)
    with pytest.raises(engine.ThresholdError, match="no defective images"):
        engine.train(config, tmp_path / "run", progress=False, data=data)
    assert not (tmp_path / "run").exists()


def test_a_train_split_the_data_lacks_is_named() -> None:
    with pytest.raises(ValueError, match=r"train_split='trian': no image is in it.*'test', 'train'"):
        prepare_data(load_config(tiny_config(data__train_split="trian")))


def test_supervision_levels_hide_masks_of_positives() -> None:
    samples = [Sample(f"p{i}", label=1, meta={"mask_path": f"m{i}"}) for i in range(6)]
    samples += [Sample(f"n{i}", label=0, meta={"mask_path": f"z{i}"}) for i in range(3)]
    weak = apply_supervision(samples, load_config(tiny_config(data__supervision="weak")))
    assert [s.has_mask for s in weak] == [False] * 6 + [True] * 3  # good images keep empty masks
    mixed = apply_supervision(
        samples, load_config(tiny_config(data__supervision="mixed", data__num_segmented=2))
    )
    assert sum(s.has_mask for s in mixed[:6]) == 2
    full = apply_supervision(samples, load_config(tiny_config()))
    assert all(s.has_mask for s in full)
    boxed = [Sample("p", label=1, boxes=np.zeros((1, 4))), Sample("n", label=0, boxes=np.zeros((0, 4)))]
    weak_boxes = apply_supervision(boxed, load_config(tiny_config(data__supervision="weak")))
    assert [s.has_boxes for s in weak_boxes] == [False, True]  # a box locates the defect, as a mask
    held_out = prepare_data(load_config(tiny_config())).val
    assert any(s.label == 1 for s in held_out) and all(s.has_mask for s in held_out)


@pytest.mark.parametrize("level", ["weak", "mixed"])
def test_below_full_supervision_the_pixel_threshold_comes_from_good_validation_images(
    tmp_path: Path, level: str
) -> None:
    config = load_config(tiny_config(data__supervision=level, data__num_segmented=2))
    data = prepare_data(config)
    assert any(s.label == 1 for s in data.val)
    assert not any(s.has_mask or s.has_boxes for s in data.val if s.label == 1)
    assert all(s.has_mask for s in data.val if s.label == 0)  # known-empty masks are image labels
    model_dir = engine.train(config, tmp_path / "run", progress=False, data=data)
    assert model_dir is not None
    assert "pixel good_quantile" in read_card(model_dir).thresholds.rule


def test_segmentation_targets_and_distance_weights() -> None:
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.long)
    mask[0, 0, 10, 10] = 1
    target = segmentation_targets(mask, dilate=1)
    assert target.shape == (1, 1, 4, 4) and float(target.sum()) == 1.0
    dilated = segmentation_targets(mask, dilate=7)
    assert float(dilated.sum()) > 1.0  # dilation reaches the neighbouring cells
    block = torch.zeros(1, 1, 9, 9)
    block[0, 0, 2:7, 2:7] = 1
    weights = distance_weights(block, p=2.0, max_weight=1.0)
    assert float(weights[0, 0, 0, 0]) == 1.0 and float(weights[0, 0, 4, 4]) == 1.0
    assert float(weights[0, 0, 2, 2]) < 1.0  # defect edge pixels weigh less than the centre


def test_input_sides_must_be_divisible_by_8() -> None:
    from defectkit.models import create_model

    model = create_model("segdec", widths=[4, 4, 4], volume_channels=8, decision_widths=[4, 4, 4])
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.rand(1, 1, 68, 64))
    with pytest.raises(ValueError, match="at least 64"):
        model(torch.rand(1, 1, 56, 64))


def test_the_mask_head_can_score_a_good_image_clean_and_old_weights_still_load() -> None:
    """The normalised mask needs its bias, as the reference trains one: without it every map averages
    logit 0, so a good image's mask loss cannot fall below ln 2. Weights saved without the bias load
    into a network with one as a zero bias, the network they were; a partial load keeps the bias."""
    import torch.nn.functional as F

    from defectkit.models import create_model

    options: dict[str, Any] = {"widths": [4, 4, 4], "volume_channels": 8, "decision_widths": [4, 4, 4]}
    torch.manual_seed(0)
    volume, clean = torch.randn(2, 8, 8, 8), torch.zeros(2, 1, 8, 8)
    final = {}
    for bias in (False, True):
        head = create_model("segdec", mask_bias=bias, **options).mask_head
        optimiser = torch.optim.SGD(head.parameters(), lr=0.5)
        for _ in range(300):
            optimiser.zero_grad()
            loss = F.binary_cross_entropy_with_logits(head(volume), clean)
            loss.backward()
            optimiser.step()
        final[bias] = float(loss)
    assert final[False] >= np.log(2) - 1e-4 and final[True] < 0.1

    old = create_model("segdec", **options).eval()  # the default: no bias, as before the option
    new = create_model("segdec", mask_bias=True, **options).eval()
    with torch.no_grad():
        new.mask_head.norm.bias.fill_(3.0)
    new.load_state_dict(old.state_dict())  # strict: the missing bias is filled in
    assert float(new.mask_head.norm.bias.abs().sum()) == 0.0
    images = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(new(images).mask_logits, old(images).mask_logits)
    with torch.no_grad():
        new.mask_head.norm.bias.fill_(3.0)
    trunk_only = {k: v for k, v in old.state_dict().items() if k.startswith("segmentation.")}
    new.load_state_dict(trunk_only, strict=False)
    assert float(new.mask_head.norm.bias.sum()) == 3.0


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_two_steps(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(trainer__max_steps=2, trainer__batch_size=1)))
    command = [
        sys.executable,
        "-m",
        "defectkit.cli.main",
        "train",
        str(config),
        "--out",
        str(tmp_path / "run"),
    ]
    command += ["--devices", "2", "--strategy", "ddp", "--quiet", "--set", "trainer.accelerator=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "run" / "model" / "weights.safetensors").is_file()
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr


def test_pixel_threshold_best_f1_on_validation_heatmaps() -> None:
    heat = np.array([[0.1, 0.2], [0.8, 0.9]])
    truth = np.array([[False, False], [True, True]])
    assert engine.choose_pixel_threshold([(heat, truth)]) == pytest.approx(
        0.8
    )  # both defect cells, nothing else
    assert engine.choose_pixel_threshold([(heat, np.zeros((2, 2), bool))]) == 0.5


def test_pixel_threshold_without_masks_keeps_good_validation_images_clean() -> None:
    good, defective = np.array([[0.1, 0.3]]), np.array([[0.2, 0.9]])
    scored = [
        engine.ValidationScore(0.1, good, None, None),
        engine.ValidationScore(0.9, defective, None, None),
    ]
    threshold, rule = engine.pixel_threshold(scored, [0, 1], quantile=1.0)
    assert rule == "good_quantile:1" and 0.3 < threshold < 0.9
    assert not (good >= threshold).any() and (defective >= threshold).sum() == 1


def test_restore_best_keeps_the_best_validation_weights(tmp_path: Path) -> None:
    config = load_config(tiny_config(trainer__restore_best=True, trainer__epochs=3))
    model_dir = engine.train(config, tmp_path / "run", progress=False)
    assert model_dir is not None and (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
    assert read_card(model_dir).config["trainer"]["restore_best"] is True
    # A second run into the same directory replaces the first's checkpoints instead of versioning
    # beside them (a stale best.ckpt next to best-v1.ckpt).
    engine.train(config, tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_an_interrupted_training_keeps_the_earlier_model_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning ends a Ctrl-C (or SIGTERM, which the CLI turns into one) with sys.exit(1)."""
    import yaml
    from lightning.pytorch.callbacks import Callback
    from typer.testing import CliRunner

    from defectkit.cli.main import app

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(trainer__epochs=1)))
    out = tmp_path / "run"
    first = CliRunner().invoke(app, ["train", str(config), "--out", str(out), "-q"])
    assert first.exit_code == 0, first.output
    weights = (out / "model" / "weights.safetensors").read_bytes()

    class CtrlC(Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            raise KeyboardInterrupt

    real = engine._trainer

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        trainer, checkpoint = real(*args, **kwargs)
        trainer.callbacks.append(CtrlC())
        return trainer, checkpoint

    monkeypatch.setattr(engine, "_trainer", interrupted)
    again = CliRunner().invoke(app, ["train", str(config), "--out", str(out), "-q"])
    assert again.exit_code == 130, again.output
    assert f"interrupted: {out / 'model'} still holds the earlier run's model" in " ".join(
        again.output.split()
    )
    assert (out / "model" / "weights.safetensors").read_bytes() == weights


def test_a_model_option_of_the_wrong_type_is_one_line_and_leaves_no_folder(tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from defectkit.cli.main import app

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(out), "--set", "model.widths=8"])
    assert result.exit_code == 2 and "model: the options do not fit model 'segdec'" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_weights_are_readable_as_the_card_is_and_old_reports_say_they_are_old(tmp_path: Path) -> None:
    """safetensors wrote weights owner-only (0600); a retraining carried the old model's eval
    reports into the new model's folder as if they were its own."""
    import json

    config = load_config(tiny_config(trainer__epochs=1))
    model_dir = engine.train(config, tmp_path / "run", progress=False)
    assert model_dir is not None
    mode = (model_dir / "model.yaml").stat().st_mode & 0o777
    assert (model_dir / "weights.safetensors").stat().st_mode & 0o777 == mode
    (model_dir / "eval-data-test").mkdir()
    (model_dir / "eval-data-test" / "metrics.json").write_text(json.dumps({"defectkit_version": "x"}))
    (model_dir / "notes.txt").write_text("mine")
    (model_dir / "mine.previous-model").mkdir()  # a user's folder, not a report: never dropped
    (model_dir / "mine.previous-model" / "metrics.json").write_text('{"my": "figures"}')
    engine.train(config, tmp_path / "run", progress=False)
    kept = sorted(p.name for p in model_dir.iterdir() if p.name not in ("model.yaml", "weights.safetensors"))
    assert kept == ["eval-data-test.previous-model", "mine.previous-model", "notes.txt"]
    engine.train(config, tmp_path / "run", progress=False)  # one generation only
    assert [p.name for p in model_dir.iterdir() if p.name.endswith(".previous-model")] == [
        "mine.previous-model"
    ]
