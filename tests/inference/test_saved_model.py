"""Saving a model over an older one: atomic, and what belongs with the model stays."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import tiny_model
from defectkit.inference.saved_model import ONNX_NAME, WEIGHTS_NAME, read_card


def test_saving_over_a_model_keeps_its_reports_and_drops_its_stale_export(tmp_path: Path) -> None:
    directory = tiny_model(tmp_path / "model", "segdec", seed=0)
    (directory / "eval").mkdir()
    (directory / "eval" / "report.json").write_text("{}")
    (directory / ONNX_NAME).write_bytes(b"graph of the old weights")
    old_weights = load_file(str(directory / WEIGHTS_NAME))

    tiny_model(tmp_path / "model", "segdec", seed=1, decision=0.25)

    assert (directory / "eval" / "report.json").read_text() == "{}"
    assert not (directory / ONNX_NAME).exists()  # exported from the old weights
    assert read_card(directory).thresholds.decision == 0.25
    new_weights = load_file(str(directory / WEIGHTS_NAME))
    assert any(not new_weights[k].equal(old_weights[k]) for k in old_weights)
    # Neither the staging folder nor the old model is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.fixture
def reported_model(tmp_path: Path) -> Path:
    """A saved model with an evaluation report beside it, as ``defectkit eval`` leaves one."""
    directory = tiny_model(tmp_path / "model", "segdec", seed=0)
    (directory / "eval.json").write_text("{}")
    return directory


def contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_a_write_that_fails_leaves_the_old_model_whole(
    tmp_path: Path, reported_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = reported_model
    before = contents(directory)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("defectkit.inference.saved_model.save_file", full_disk)
    with pytest.raises(OSError, match="No space"):
        tiny_model(tmp_path / "model", "segdec", seed=1)
    assert contents(directory) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left


def test_a_model_that_cannot_take_the_name_leaves_the_old_one_in_place(
    tmp_path: Path, reported_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = reported_model
    before = contents(directory)
    rename = Path.rename

    def staging_cannot_take_the_name(self: Path, target: str | Path) -> Path:
        if self.name.endswith(".tmp"):
            raise OSError(16, "Device or resource busy")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", staging_cannot_take_the_name)
    with pytest.raises(OSError, match="busy"):
        tiny_model(tmp_path / "model", "segdec", seed=1)
    assert contents(directory) == before


def test_a_saved_model_is_on_disk_before_it_takes_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from defectkit.inference.saved_model import CARD_NAME

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name a synced descriptor")
    synced: list[str] = []
    real = os.fsync

    def recording(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real(descriptor)

    monkeypatch.setattr(os, "fsync", recording)
    directory = tiny_model(tmp_path / "model", "segdec", seed=0)
    # The files in the staging folder, then the folders: a power cut leaves the whole model or none.
    assert {WEIGHTS_NAME, CARD_NAME} <= {Path(p).name for p in synced}
    assert str(directory.parent) in synced
