"""The dagm-mix/line and products/line protocols' pure parts: cascade figures, the products'
attribute table, the confusion matrix in BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from defectkit.bench.line import PRODUCTS_ATTRIBUTES
from defectkit.bench.render import render_markdown
from defectkit.data.attributes import TABLE1_NAMES, describe, read_attributes

REPO = Path(__file__).resolve().parents[2]


def test_products_attribute_table_is_table1_shaped() -> None:
    table = read_attributes(REPO / PRODUCTS_ATTRIBUTES)
    assert tuple(table.names) == TABLE1_NAMES
    matrix = table.matrix(sorted(table.surfaces))
    assert matrix.shape == (5, 29) and matrix.min() >= 0 and matrix.max() <= 1
    # Groups whose slots share one product's defects out: area, shape, reason each sum to 1.
    for group in (slice(9, 12), slice(12, 19), slice(21, 29)):
        assert np.allclose(matrix[:, group].sum(axis=1), 1.0, atol=1e-3)
    assert len({tuple(row) for row in matrix}) == 5
    words = describe(table.surfaces["commutator"], table.names, top=6)
    assert "defect reason: crack (1.00)" in words and "defect shape: irregular slender strip (1.00)" in words


def test_render_shows_a_confusion_matrix() -> None:
    record = {
        "protocol": "dagm-mix/line",
        "method": "sbad+segdec",
        "variant": {"splits": 5},
        "profile": "cpu",
        "metrics": {
            "detector_ap_min": 0.99,
            "confusion": {
                "rows": ["seen_good", "unseen"],
                "columns": ["ok", "unknown"],
                "counts": [[7, 1], [0, 4]],
            },
        },
        "paper": {"detector_ap_min": 0.99},
    }
    text = render_markdown([record])
    assert "| truth | ok | unknown |" in text and "| unseen | 0 | 4 |" in text


def test_dagm_mix_line_on_tiny_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole protocol on a tiny mix: detectors score only their own test split and what the
    routers sent them, the wall time adds up every stage, and a second run reuses every cell."""
    import json

    import defectkit.bench.line as protocol
    from defectkit.bench.protocols import BenchRequest, run_protocol

    line = tmp_path / "line.yaml"
    line.write_text(
        f"""data_root: unused  # the protocol writes its own mix
surfaces: [Class1]
router:
  config: {REPO / "configs/sbad/dagm-mix.yaml"}
  set: [model.backbone=test_efficientnet, weights=null]
detector:
  config: {REPO / "configs/segdec/synthetic.yaml"}
  set: [trainer.epochs=1, trainer.val_every=1, "input.size=[64,64]", "model.widths=[8,8,8]",
        model.volume_channels=16, "model.decision_widths=[4,4,4]"]
"""
    )
    monkeypatch.setattr(protocol, "LINE_CONFIG", str(line))
    overrides = [
        "data.synthetic.per_surface=16", "data.synthetic.size=32", "input.size=[32,32]",
        "method_options.hidden=16", "method_options.ce_epochs=1", "method_options.gan_epochs=1",
        "method_options.synthetic_per_class=8", "method_options.critic_steps=1",
    ]  # fmt: skip
    request = BenchRequest(
        "cpu", "full", "defectkit bench dagm-mix/line", tmp_path / "results", tmp_path / "work", False,
        {"splits": "2"}, overrides, cells_root=tmp_path / "cells",
    )  # fmt: skip
    first = json.loads(run_protocol("dagm-mix/line", request).read_text())
    metrics = first["metrics"]
    # Per split: 8 seen surfaces' 4 test images, and all 16 images of the 2 unseen ones.
    assert np.sum(metrics["confusion"]["counts"]) == 2 * (8 * 4 + 2 * 16)
    assert len(metrics["detector_ap"]) == 10 and len(first["per_fold"]) == 2
    stored = [json.loads(p.read_text()) for p in (tmp_path / "cells").rglob("*.json")]
    kind = {
        part: [c for c in stored if c["key"].startswith(part + "/")]
        for part in ("features", "route", "detector", "routed")
    }
    assert [len(kind[k]) for k in ("features", "route", "detector", "routed")] == [1, 2, 10, 10]
    asked: dict[str, set[str]] = {}  # per surface: the images some router sent it, not alerted
    for route in kind["route"]:
        for image, call, unknown in zip(
            *(route["value"][k] for k in ("test", "calls", "unknown")), strict=True
        ):
            if not unknown:
                asked.setdefault(call, set()).add(str(image))
    for trained in kind["detector"]:
        surface = trained["value"]["surface"]
        routed = next(c["value"] for c in kind["routed"] if c["key"].startswith(f"routed/{surface}/"))
        own = set(trained["value"]["scores"])
        assert len(own) == 4  # its own test split, nothing more
        assert own | set(routed["scores"]) == own | asked.get(surface, set())
    parts = kind["features"][0]["value"]["seconds"] + sum(r["value"]["train_s"] for r in kind["route"])
    parts += sum(c["value"]["train_s"] + c["value"]["score_s"] for c in kind["detector"])
    parts += sum(c["value"]["score_s"] for c in kind["routed"])
    assert first["wall_time_s"] == pytest.approx(parts)

    def untrained(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(protocol, "train", untrained)
    monkeypatch.setattr(protocol, "fit_router", untrained)
    monkeypatch.setattr(protocol, "backbone_features", untrained)
    again = json.loads(run_protocol("dagm-mix/line", request).read_text())
    assert again["metrics"] == first["metrics"] and again["wall_time_s"] == first["wall_time_s"]
