"""The KolektorSDD protocols' options and the rows they describe (no training: the run is captured)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import defectkit.bench.ksdd as protocol
from defectkit.bench.protocols import REPO_ROOT, BenchOptionError, BenchRequest
from defectkit.config import config_fingerprint, load_config


def captured(monkeypatch: pytest.MonkeyPatch, runner: Any, profile: str, **request: Any) -> Any:
    """The KsddRun that ``runner`` would cross-validate (instead of training it)."""
    monkeypatch.setattr(protocol, "run_ksdd", lambda run, _: run)
    defaults: dict[str, Any] = {"supervision": "full", "command": "test", "commit": "abc1234"}
    return runner(
        BenchRequest(profile=profile, results_root=Path("r"), work_root=Path("w"), **{**defaults, **request})
    )


def test_positives_are_a_number_in_results_and_one_spelling_in_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    run = captured(monkeypatch, protocol.ksdd_weak_lnet, "cpu", variant={"positives": "05"})
    assert run.variant["positives"] == 5 and "data.train_positives=5" in run.overrides
    assert run.paper == protocol.WEAK_LNET_PAPER[5] and "positives-5" in run.name
    run = captured(monkeypatch, protocol.ksdd_weak_lnet, "cpu")
    assert run.variant["positives"] == "all" and run.paper == protocol.WEAK_LNET_PAPER["all"]
    with pytest.raises(BenchOptionError, match="positive number"):
        captured(monkeypatch, protocol.ksdd_weak_lnet, "cpu", variant={"positives": "0"})


def test_what_was_tried_is_noted_on_the_profile_it_was_tried_on(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = captured(monkeypatch, protocol.ksdd_weak_lnet, "cpu", variant={"rotation": "true"})
    paper = captured(monkeypatch, protocol.ksdd_weak_lnet, "paper", variant={"rotation": "true"})
    assert protocol.WEAK_LNET_TRIED_CPU in cpu.notes and protocol.WEAK_LNET_TRIED_CPU not in paper.notes
    assert "90-degree turns" in cpu.notes and "90-degree turns" in paper.notes
    assert protocol.SEGDEC_TRIED_CPU["full"] in captured(monkeypatch, protocol.ksdd_segdec, "cpu").notes
    assert captured(monkeypatch, protocol.ksdd_segdec, "paper").notes == protocol.SEGDEC_TRIED_PAPER["full"]
    weak = captured(monkeypatch, protocol.ksdd_segdec, "paper", supervision="weak")
    assert weak.notes == "image labels only, with " + " ".join(protocol.WEAK_OVERRIDES)


def test_only_mask_reading_methods_below_full_supervision_key_new_cells() -> None:
    # Their validation positives lost their masks (so the pixel threshold and dice_pos changed);
    # every other cell keeps its key and resumes.
    segdec = REPO_ROOT / "configs/segdec/kolektorsdd.yaml"
    full = load_config(segdec, "cpu")
    assert protocol.fold_key(full, 0) == f"fold0/config-{config_fingerprint(full)}"
    weak = load_config(segdec, "cpu", ["data.supervision=weak"])
    assert protocol.fold_key(weak, 1) == f"fold1/config-{config_fingerprint(weak)}/validation-v2"
    lnet = load_config(REPO_ROOT / "configs/weak_lnet/kolektorsdd.yaml", "cpu")
    assert lnet.data.supervision == "weak" and "validation" not in protocol.fold_key(lnet, 2)


def test_a_cell_of_another_fold_split_is_refused() -> None:
    fold = [
        "/data/kolektorsdd/kos04/Part0.jpg",
        "/data/kolektorsdd/kos04/Part1.jpg",
        "/data/kolektorsdd/kos09/Part3.jpg",
    ]
    # Computed on another machine's copy, one image unreadable there: still this fold's images.
    elsewhere = {
        "paths": ["/tmp/dk/kolektorsdd/kos04/Part0.jpg", "/tmp/dk/kolektorsdd/kos04/Part1.jpg"],
        "skipped": ["x"],
    }
    protocol.check_fold_cell(elsewhere, fold, "ksdd-segdec-full-cpu/fold0")
    moved = {
        "paths": [
            "/data/kolektorsdd/kos04/Part0.jpg",
            "/data/kolektorsdd/kos05/Part1.jpg",
            "/data/kolektorsdd/kos09/Part3.jpg",
        ]
    }
    with pytest.raises(ValueError, match=r"fold0 scored images other.*kos05/Part1\.jpg"):
        protocol.check_fold_cell(moved, fold, "ksdd-segdec-full-cpu/fold0")
    with pytest.raises(ValueError, match="has changed"):
        protocol.check_fold_cell({"paths": fold[:2]}, fold, "ksdd-segdec-full-cpu/fold0")  # one missing
