"""The loop from line to model: inspect, review, export, and `defectkit train` on the export."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import png_bytes

pytest.importorskip("fastapi", reason="the service needs the serve extra")

from fastapi.testclient import TestClient

from defectkit.cli.main import app as cli
from defectkit.inference.saved_model import read_card
from defectkit.serve import ServeSettings, create_app

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "segdec" / "synthetic.yaml"


@pytest.mark.slow
def test_reviewed_inspections_train_a_new_model(
    serve_settings: ServeSettings, tmp_path: Path, one_thread: None
) -> None:
    with TestClient(create_app(serve_settings)) as client:
        for index in range(12):
            files = {"file": (f"part{index}.png", png_bytes(index, 128, 128), "image/png")}
            record = client.post("/v1/inspect", files=files).json()
            verdict = "defect" if index % 2 else "ok"  # the operator's call, whatever the model said
            assert (
                client.post(f"/v1/inspections/{record['id']}/review", json={"verdict": verdict}).status_code
                == 200
            )
    runner = CliRunner()
    exported = tmp_path / "reviews"
    result = runner.invoke(
        cli, ["reviews", "export", str(exported), "--data-dir", str(serve_settings.data_dir)]
    )
    assert result.exit_code == 0, result.output
    overrides = [f"data.root={exported}", "data.surface=null", "data.supervision=weak", "trainer.epochs=1"]
    command = ["train", str(CONFIG), "--out", str(tmp_path / "run"), "-q"]
    result = runner.invoke(cli, command + [arg for o in overrides for arg in ("--set", o)])
    assert result.exit_code == 0, result.output
    card = read_card(tmp_path / "run" / "model")
    assert card.validation_metrics["n_images"] >= 2 and card.data_fingerprint is not None
