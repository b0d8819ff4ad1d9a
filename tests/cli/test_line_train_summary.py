from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from defectkit.cli.main import app


@pytest.mark.parametrize(
    ("routing", "shown"), [(None, "routing accuracy n/a"), (0.99475, "routing accuracy 0.9948")]
)
def test_line_train_summary_reads_a_null_routing_accuracy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, routing: float | None, shown: str
) -> None:
    # A router card read back from disk may hold null; the summary after a finished training must
    # print it, not raise.
    card = SimpleNamespace(validation_metrics={"routing_accuracy": routing, "n_images": 40})
    line = SimpleNamespace(router=SimpleNamespace(card=card), detectors={"Class1": object()})

    def fake_train_line(*args: Any, **kwargs: Any) -> Path:
        return tmp_path / "line"

    monkeypatch.setattr("defectkit.training.line.train_line", fake_train_line)
    monkeypatch.setattr("defectkit.inference.line.load_line", lambda path: line)
    result = CliRunner().invoke(
        app, ["line", "train", str(tmp_path / "line.yaml"), "--out", str(tmp_path), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert shown in result.output
    assert "1 detector(s)" in result.output
