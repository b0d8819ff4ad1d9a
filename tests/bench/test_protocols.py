"""The protocol registry refuses requests a protocol would otherwise ignore without a word."""

from __future__ import annotations

from pathlib import Path

import pytest

from defectkit.bench.protocols import BenchRequest, run_protocol


def request(tmp_path: Path, supervision: str = "full", cells_only: bool = False) -> BenchRequest:
    return BenchRequest(
        "cpu", supervision, "test", tmp_path, tmp_path, False, cells_root=tmp_path, cells_only=cells_only
    )


@pytest.mark.parametrize("protocol", ["aux/efficiency", "aux/ksdd", "neu-cls/small-data", "dagm-mix/line"])
def test_a_protocol_without_supervision_levels_refuses_one(tmp_path: Path, protocol: str) -> None:
    with pytest.raises(KeyError, match=f"{protocol} takes no --supervision.*mixed:5 would be ignored"):
        run_protocol(protocol, request(tmp_path, supervision="mixed:5"))
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_ksdd_segdec_takes_every_supervision_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFECTKIT_DATA", str(tmp_path / "no-data"))
    for supervision in ("weak", "mixed:5"):  # past the registry's check, it stops at the missing data
        with pytest.raises(FileNotFoundError, match="kolektorsdd"):
            run_protocol("ksdd/segdec", request(tmp_path, supervision=supervision))


def test_a_protocol_that_keeps_no_cells_refuses_cells_only(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="aux/efficiency keeps no cells"):
        run_protocol("aux/efficiency", request(tmp_path, cells_only=True))


def test_a_set_experiment_trains_in_a_work_folder_of_its_own(tmp_path: Path) -> None:
    # Else a --set run (a seed, an input size) would replace the profile row's trained models.
    profile = request(tmp_path)
    assert profile.work_folder("ksdd-segdec-full-cpu") == tmp_path / "ksdd-segdec-full-cpu"
    experiment = BenchRequest(
        "cpu", "full", "test", tmp_path, tmp_path / "work", overrides=["seed=1", "input.size=[880,320]"]
    )
    assert experiment.work_folder("ksdd-segdec-full-cpu") == (
        tmp_path / "work" / "ksdd-segdec-full-cpu-input.size-880-320-seed-1"
    )
    # Keys a variant field names (as -V would) share the profile's folder.
    assert experiment.work_folder("x", exclude=["seed", "input.size"]) == tmp_path / "work" / "x"
