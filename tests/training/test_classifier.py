"""imagenet_classifier (paper 004's Table 6 baseline): trains on image labels, inspects without a heat map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import defectkit.data.io as data_io
import defectkit.training.engine as engine
from defectkit import load_inspector
from defectkit.config import load_config
from defectkit.inference.saved_model import read_card

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_from_image_labels_and_inspect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = data_io.load_mask

    def forbidden(sample: Any, *args: Any, **kwargs: Any) -> Any:
        assert not sample.has_mask, f"{sample.path}: mask read by an image-label method"
        return original(sample, *args, **kwargs)

    monkeypatch.setattr(data_io, "load_mask", forbidden)
    config = load_config(
        {
            "method": "imagenet_classifier",
            "data": {
                "synthetic": {
                    "surfaces": 1,
                    "per_surface": 24,
                    "size": 64,
                    "defect_fraction": 0.5,
                    "seed": 1,
                },
                "val_fraction": 0.3,
                "supervision": "weak",
            },
            "input": {"size": [64, 64], "channels": 3, "mean": [0.5], "std": [0.5]},
            "model": {"backbone": "resnet10t", "drop_rate": 0.0},
            "trainer": {"epochs": 1, "batch_size": 4, "lr": 0.001, "val_every": 1},
        }
    )
    model_dir = engine.train(config, tmp_path / "run", progress=False)
    assert model_dir is not None
    card = read_card(model_dir)
    assert card.method == "imagenet_classifier" and card.init == "random"  # no weights given
    inspection, heatmap = load_inspector(model_dir).inspect_with_heatmap(np.full((50, 70), 90, np.uint8))
    assert heatmap is None and inspection.regions == [] and 0.0 <= inspection.score <= 1.0
