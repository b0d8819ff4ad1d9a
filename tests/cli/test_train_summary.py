from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from defectkit.cli.main import app

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "aux_net" / "neu-det.yaml"


def test_undefined_validation_ap_is_summarised(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # NEU-DET's validation split holds defective images only: the model card's AP is null, and the
    # summary line must say so rather than fail after a finished training.
    card = SimpleNamespace(
        validation_metrics={"ap": None, "fp": 0, "fn": 0, "n_images": 225},
        thresholds=SimpleNamespace(decision=0.5, rule="fixed 0.5, boxes 0.3"),
        class_names=[],
    )

    def fake_train(*args: Any, **kwargs: Any) -> Path:
        return tmp_path / "model"

    monkeypatch.setattr("defectkit.training.engine.train", fake_train)
    monkeypatch.setattr("defectkit.inference.saved_model.read_card", lambda path: card)
    result = CliRunner().invoke(app, ["train", str(CONFIG), "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert "validation AP n/a" in result.output

    card.validation_metrics["ap"] = 0.98765
    result = CliRunner().invoke(app, ["train", str(CONFIG), "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert "validation AP 0.9877" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "weights=/tmp/nope.safetensors"], "segdec' loads no pretrained weights"),
        (["--set", "model.widthz=[8, 8, 8]"], "unknown option(s) ['widthz']"),
        (["--set", "method=segdek"], "unknown method 'segdek'"),
        (["--devices", "abc"], "--devices 'abc'"),
        (["--devices", "0"], "--devices '0'"),
        (["--out-is-a-file"], "is a file; --out takes a folder"),
    ],
)
def test_config_mistakes_fail_before_anything_is_read_or_made(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    ksdd = CONFIG.parents[1] / "segdec" / "kolektorsdd.yaml"
    out = tmp_path / "run"
    if args == ["--out-is-a-file"]:
        args, out = [], tmp_path / "run.txt"
        out.write_text("notes")
    result = CliRunner().invoke(app, ["train", str(ksdd), "--out", str(out), "-q", *args])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert expected in " ".join(result.output.split()) and (not out.exists() or out.read_text() == "notes")
    if "--devices" not in args and out.suffix != ".txt":
        assert "kolektorsdd.yaml" in result.output  # the file that holds the mistake


def test_devices_take_what_lightning_takes() -> None:
    from defectkit.cli.train import _devices

    assert [_devices(d) for d in (None, "auto", "2", "-1", "0,1", "1,")] == [None, "auto", 2, -1, "0,1", "1,"]
