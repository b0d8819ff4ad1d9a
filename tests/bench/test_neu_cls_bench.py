"""The neu-cls protocols (paper 003) end to end on a tiny 6-class stand-in for NEU-CLS."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import defectkit.bench.neu_cls as protocol
from defectkit.bench.protocols import BenchRequest, run_protocol
from defectkit.config import load_config

OVERRIDES = [
    "weights=null", "input.size=[32,32]", "trainer.epochs=1", "trainer.batch_size=8",
    "model.backbone=mobilenetv3_small_050", "model.embedding_dim=16",
    "method_options.fewshot_epochs=1", "method_options.split_epochs=1",
]  # fmt: skip


def stand_in() -> protocol.NeuCls:
    """8 grey 32x32 images per class; the class shows as a brightness and a dot pitch."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 8)
    images = rng.normal(100, 10, (len(labels), 32, 32))
    for index, label in enumerate(labels):
        images[index, :: 2 + label, :: 2 + label] += 20 * (label + 1)
    names = sorted([*protocol.BASE_CLASSES, *protocol.NOVEL_CLASSES])
    files = [f"{names[label][:2]}_{index}.jpg" for index, label in enumerate(labels)]
    return protocol.NeuCls(np.clip(images, 0, 255).astype(np.uint8), labels, names, files)


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    data = stand_in()
    monkeypatch.setattr(protocol, "load_neu_cls", lambda: data)
    # The tiny settings enter below the request, as the profile's would: only ``extra`` is a --set.
    monkeypatch.setattr(
        protocol,
        "load_config",
        lambda source, profile, overrides: load_config(source, profile, [*OVERRIDES, *overrides]),
    )

    def run(name: str, variant: dict[str, str], extra: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
        results = tmp_path / "results" / name.replace("/", "-")
        request = BenchRequest(
            profile="cpu",
            supervision="full",
            command=f"defectkit bench {name}",
            results_root=results,
            work_root=tmp_path / "work",
            progress=False,
            variant=variant,
            overrides=list(extra),
            cells_root=tmp_path / "cells",
            commit="abc1234",
        )
        run_protocol(name, request)
        return {p.name: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}

    return run


def _cells(root: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(root.rglob("*.json"))]


def test_small_data_and_split_write_one_file_per_method_and_reuse_cells(
    bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = bench("neu-cls/small-data", {"shots": "2", "repeats": "2"})
    assert {r["protocol"] for r in small.values()} == {f"neu-cls/{m}/small-data" for m in protocol.METHODS}
    for record in small.values():
        assert record["variant"] == {"shots": 2} and [f["fold"] for f in record["per_fold"]] == [0, 1]
        accuracies = [f["metrics"]["accuracy"] for f in record["per_fold"]]
        assert record["metrics"]["accuracy"] == pytest.approx(np.mean(accuracies))
        assert record["metrics"]["accuracy_std"] == pytest.approx(np.std(accuracies))
        assert record["n_images"] == 6 * (8 - 2) and record["commit"] == "abc1234"
    cells = _cells(tmp_path / "cells")
    assert len(cells) == 3 * 2 and all(cell["value"]["commit"] == "abc1234" for cell in cells)

    # One repeat has no spread: the std is there, and null.
    split = bench("neu-cls/split", {"fractions": "0.5", "methods": "linear_probe"})
    (record,) = split.values()
    assert record["variant"] == {"train_fraction": 0.5}
    assert record["metrics"] == {"accuracy": record["metrics"]["accuracy"], "accuracy_std": None}

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished cell was computed again")

    monkeypatch.setattr(protocol, "small_data_cell", refuse)
    again = bench("neu-cls/small-data", {"shots": "2", "repeats": "2"})
    assert {k: v["metrics"] for k, v in again.items()} == {k: v["metrics"] for k, v in small.items()}


def test_a_cell_from_another_draw_is_refused(bench: Any, tmp_path: Path) -> None:
    """A cell's key names its seed and config, not the images: a cell drawn from another copy of the
    data (here, one file renamed) must stop the bench, not be pooled with the new draws."""
    variant = {"shots": "2", "repeats": "1", "methods": "linear_probe"}
    bench("neu-cls/small-data", variant)
    (path,) = (tmp_path / "cells").rglob("*.json")
    stored = json.loads(path.read_text())
    data = stand_in()
    draw = protocol.small_data_draw(data, 2, 0)
    assert stored["value"]["draw"] == draw.digest(data)

    renamed = [*data.files[:-1], "Sc_renamed.jpg"]
    other = protocol.NeuCls(data.images, data.labels, data.class_names, renamed)
    with pytest.raises(ValueError, match="other images than this draw's 12 training and 36 test"):
        protocol.check_draw_cell(stored["value"], other, draw, path.name)
    # The same draw listed in another order is the same draw.
    reversed_draw = protocol.Draw(draw.train[::-1], draw.test[::-1])
    protocol.check_draw_cell(stored["value"], data, reversed_draw, path.name)

    # A cell from before the digest is checked by its test count alone.
    legacy = {k: v for k, v in stored["value"].items() if k != "draw"}
    path.write_text(json.dumps({**stored, "value": {**legacy, "n_test": 35}}))
    with pytest.raises(ValueError, match="delete the cell to compute it again"):
        bench("neu-cls/small-data", variant)
    path.write_text(json.dumps({**stored, "value": legacy}))
    bench("neu-cls/small-data", variant)


def test_few_shot_keeps_each_draw_and_names_each_confidence(
    bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "PROFILE_FEWSHOT_AUTO", {})  # the profile's choices: tested below
    few = bench("neu-cls/few-shot", {"ks": "1", "draws": "3", "methods": "linear_probe,scl_arcface"})
    assert len(few) == 2
    (cell_of,) = [{c["value"]["method"]: c["value"] for c in _cells(tmp_path / "cells")}]
    expected_draw = protocol.few_shot_draw(stand_in()).digest(stand_in())
    assert [cell["draw"] for cell in cell_of.values()] == [expected_draw] * 2
    for record in few.values():
        method = record["method"]
        assert record["variant"] == {"k": 1} and [f["fold"] for f in record["per_fold"]] == [0, 1, 2]
        per_k = cell_of[method]["per_k"]["1"]
        # Row d holds draw d: its accuracy, and the mean of its three held-out-class AUROCs.
        assert [f["metrics"]["accuracy"] for f in record["per_fold"]] == per_k["accuracy"]
        by_draw = np.asarray(per_k["unknown_auroc"]).reshape(3, 3).mean(axis=1)
        assert [f["metrics"]["unknown_auroc"] for f in record["per_fold"]] == pytest.approx(by_draw)
        confidence = "best class probability" if method == "linear_probe" else "best mean similarity"
        assert confidence in record["notes"] and record["commit"] == "abc1234"


def test_embedding_options_are_scl_arcface_variants(bench: Any, tmp_path: Path) -> None:
    variant = {"shots": "2", "repeats": "1", "methods": "scl_arcface", "tta": "dihedral"}
    (record,) = bench("neu-cls/small-data", variant).values()
    assert record["variant"] == {"shots": 2, "tta": "dihedral"} and "dihedral" in record["notes"]
    # Its own cell: the config (model.tta) differs from the paper's, so the plain run trains anew.
    plain = bench("neu-cls/small-data", {"shots": "2", "repeats": "1", "methods": "scl_arcface"})
    names = {
        "neu-cls-scl_arcface-small-data-2-cpu.json",
        "neu-cls-scl_arcface-small-data-shots-2_tta-dihedral-cpu.json",
    }
    assert set(plain) == names
    assert plain["neu-cls-scl_arcface-small-data-2-cpu.json"]["variant"] == {"shots": 2}
    digests = {cell["key"].split("config-")[1] for cell in _cells(tmp_path / "cells")}
    assert len(digests) == 2
    (split,) = bench(
        "neu-cls/split", {"fractions": "0.5", "methods": "scl_arcface", "tta": "dihedral"}
    ).values()
    assert split["variant"] == {"train_fraction": 0.5, "tta": "dihedral"} and "dihedral" in split["notes"]
    # Backbone features keep the variant (and file name) their few-shot rows always had.
    few = bench(
        "neu-cls/few-shot", {"ks": "1", "draws": "1", "methods": "scl_arcface", "features": "backbone"}
    )
    assert [r["variant"] for r in few.values()] == [{"k": 1, "features": "backbone"}]
    with pytest.raises(KeyError, match="give it as -V tta="):
        bench("neu-cls/small-data", {"shots": "2", "methods": "scl_arcface"}, ["model.tta=dihedral"])
    with pytest.raises(KeyError, match="scl_arcface only"):
        bench("neu-cls/few-shot", {"ks": "1", "draws": "1", "tta": "dihedral"})
    with pytest.raises(KeyError, match="use one of"):
        bench("neu-cls/few-shot", {"ks": "1", "methods": "scl_arcface", "tta": "d8"})


def test_epochs_and_other_overrides_name_their_own_results(bench: Any, tmp_path: Path) -> None:
    few = bench("neu-cls/few-shot", {"ks": "1", "draws": "1", "methods": "ce_baseline", "epochs": "2"})
    (record,) = few.values()
    assert record["variant"] == {"k": 1, "epochs": 2} and "(2 epochs)" in record["notes"]
    small = bench(
        "neu-cls/small-data",
        {"shots": "2", "repeats": "1", "methods": "linear_probe"},
        ["method_options.crop_scale=[0.5,1.0]"],
    )
    (name,) = small
    assert small[name]["variant"] == {"shots": 2, "set": "method_options.crop_scale=[0.5,1.0]"}
    assert name != "neu-cls-linear_probe-small-data-2-cpu.json"
    with pytest.raises(KeyError, match="a whole number"):
        bench("neu-cls/few-shot", {"ks": "1", "epochs": "ten"})
    with pytest.raises(KeyError, match="give it as -V epochs="):
        bench("neu-cls/split", {"fractions": "0.5"}, ["method_options.split_epochs=3"])


def test_auto_epochs_are_chosen_on_the_base_classes_alone(
    bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Candidates 1 and 2: the grid stops at the profile's own count, here 2.
    monkeypatch.setattr(protocol, "AUTO_EPOCHS", (1, 2, 3))
    monkeypatch.setitem(globals(), "OVERRIDES", [*OVERRIDES, "method_options.fewshot_epochs=2"])
    data = stand_in()
    base = [data.class_names.index(n) for n in protocol.BASE_CLASSES]
    read: list[np.ndarray] = []
    tensor = protocol.Runner.tensor

    def spy(self: protocol.Runner, indices: np.ndarray) -> Any:
        read.append(data.labels[indices])
        return tensor(self, indices)

    monkeypatch.setattr(protocol.Runner, "tensor", spy)
    variant = {"ks": "1", "draws": "2", "methods": "scl_arcface,linear_probe", "epochs": "auto"}
    few = bench("neu-cls/few-shot", variant)
    by_method = {r["method"]: r for r in few.values()}
    assert {r["variant"]["epochs"] for r in few.values()} == {"auto"}
    cells = {c["key"]: c["value"] for c in _cells(tmp_path / "cells")}
    (choice,) = [v for k, v in cells.items() if "/base-epochs/" in k]  # none for the linear probe
    assert set(choice["accuracy_by_epochs"]) == {"1", "2"} and choice["chosen"] in (1, 2)
    scl = by_method["scl_arcface"]
    assert f"({choice['chosen']} epochs)" in scl["notes"] and "chosen on the base classes" in scl["notes"]
    # Training and probing (3 left-out classes x (1 training + 2 probes)) and the final base
    # training read base-class images only; the novel classes first appear in the few-shot test.
    first_novel = next(i for i, labels in enumerate(read) if not np.isin(labels, base).any())
    assert first_novel == 10 and all(np.isin(labels, base).all() for labels in read[:first_novel])


def test_auto_epochs_choose_the_best_count_and_ties_go_to_the_shorter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_config(protocol.REPO_ROOT / protocol.CONFIG, "cpu", OVERRIDES)
    runner = protocol.Runner(config, stand_in(), progress=False)
    by_epoch = {1: 0.5, 2: 0.7, 3: 0.6}
    calls: list[int] = []

    def scored(*args: Any) -> tuple[float, None]:
        calls.append(len(calls))
        return by_epoch[len(calls) % 3 or 3], None  # probes come in epoch order, 3 per left-out class

    monkeypatch.setattr(protocol, "_classify", scored)
    choice = protocol.base_epochs_cell(runner, "ce_baseline", [1], 1, (1, 2, 3))
    assert choice["chosen"] == 2
    assert choice["accuracy_by_epochs"] == pytest.approx({"1": 0.5, "2": 0.7, "3": 0.6})
    monkeypatch.setattr(protocol, "_classify", lambda *args: (0.5, None))
    assert protocol.base_epochs_cell(runner, "ce_baseline", [1], 1, (2, 1, 3))["chosen"] == 1


def test_auto_features_choose_the_embedding_on_the_base_classes(
    bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-V features=auto scores both of scl_arcface's embeddings on the same probes (base classes
    only) and trains the few-shot network to compare by the better; elsewhere it is refused."""
    embeddings = protocol.Runner.embeddings
    compared: list[str] = []

    def marked(self: protocol.Runner, method: str, network: Any, indices: np.ndarray) -> np.ndarray:
        compared.append(network.reference_features)
        return embeddings(self, method, network, indices)

    real_classify = protocol._classify

    def classify(*args: Any) -> tuple[float, Any]:
        # Backbone features score better wherever they are compared (the few-shot test included).
        return (0.9 if compared[-1] == "backbone" else 0.5), real_classify(*args)[1]

    monkeypatch.setattr(protocol.Runner, "embeddings", marked)
    monkeypatch.setattr(protocol, "_classify", classify)
    few = bench("neu-cls/few-shot", {"ks": "1", "draws": "1", "methods": "scl_arcface", "features": "auto"})
    (record,) = few.values()
    assert record["variant"] == {"k": 1, "features": "auto"}
    (choice,) = [c["value"] for c in _cells(tmp_path / "cells") if "/base-epochs/" in c["key"]]
    assert choice["features"] == "backbone" and choice["chosen"] == 1  # the profile's count, here 1
    assert set(choice["accuracy_by_features"]) == {"projection", "backbone"}
    assert (
        "embeddings chosen on the base classes alone" in record["notes"]
        and ": backbone, 1 epochs" in record["notes"]
    )
    # Three probes (one per left-out class) x two embeddings, then the few-shot network's own.
    assert compared[:6] == ["projection", "backbone"] * 3 and set(compared[6:]) == {"backbone"}
    with pytest.raises(KeyError, match="use one of projection, backbone"):
        bench(
            "neu-cls/small-data", {"shots": "2", "repeats": "1", "methods": "scl_arcface", "features": "auto"}
        )
    with pytest.raises(KeyError, match="scl_arcface only"):
        bench("neu-cls/few-shot", {"ks": "1", "features": "auto"})


def test_the_cpu_profile_chooses_scl_arcface_few_shot_settings_on_the_base_classes(
    bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no epochs or embedding option, the cpu profile's scl_arcface few-shot row makes the
    explicit auto run's choice (the same cells: nothing is computed again) and says so; the other
    methods, and a row that names any such option (a paper default too), keep the profile's
    settings and never take the chosen row's name."""
    variant = {"ks": "1", "draws": "1", "methods": "scl_arcface"}
    explicit = bench("neu-cls/few-shot", {**variant, "epochs": "auto", "features": "auto"})
    (explicit_record,) = explicit.values()
    keys = {cell["key"] for cell in _cells(tmp_path / "cells")}
    assert any("/base-epochs/" in key for key in keys)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the profile's choice computed a cell the explicit run had")

    few_shot_cell = protocol.few_shot_cell
    monkeypatch.setattr(protocol, "base_epochs_cell", refuse)
    monkeypatch.setattr(protocol, "few_shot_cell", refuse)
    default = bench("neu-cls/few-shot", variant)
    record = default["neu-cls-scl_arcface-few-shot-1-cpu.json"]
    assert record["variant"] == {"k": 1} and record["metrics"] == explicit_record["metrics"]
    assert "embeddings and epochs chosen on the base classes" in record["notes"]
    assert "the cpu profile's default for scl_arcface" in record["notes"]
    assert {cell["key"] for cell in _cells(tmp_path / "cells")} == keys

    monkeypatch.setattr(protocol, "few_shot_cell", few_shot_cell)  # base_epochs_cell stays refused
    for option, value in (("features", "backbone"), ("features", "projection"), ("tta", "none")):
        named = bench("neu-cls/few-shot", {**variant, option: value})
        (named_record,) = [r for r in named.values() if r["variant"].get(option) == value]
        assert named_record["variant"] == {"k": 1, option: value}
        assert "chosen on the base classes" not in named_record["notes"]
        assert named["neu-cls-scl_arcface-few-shot-1-cpu.json"] == record  # the chosen row, untouched
    baseline = bench("neu-cls/few-shot", {"ks": "1", "draws": "1", "methods": "ce_baseline"})
    notes = baseline["neu-cls-ce_baseline-few-shot-1-cpu.json"]["notes"]
    assert "not chosen on the base classes as this profile's scl_arcface row chooses its own" in notes


def test_cells_only_rewrites_results_from_cells_and_trains_nothing(
    bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bench --cells-only`` rebuilds a results file from the finished cells, records the command
    that computed them, and stops on a missing cell (exit 1, its file named) before any training."""
    from typer.testing import CliRunner

    from defectkit.cli.main import app

    runner = CliRunner()
    results, cells = tmp_path / "results", tmp_path / "cells"
    args = ["bench", "neu-cls/small-data", "-V", "shots=2", "-V", "repeats=2", "-V", "methods=linear_probe"]
    folders = ["--results", str(results), "--cells", str(cells), "--work", str(tmp_path / "work"), "-q"]
    # The recorded command comes from sys.argv, which CliRunner leaves alone.
    monkeypatch.setattr(sys, "argv", ["defectkit", *args, *folders])
    assert runner.invoke(app, [*args, *folders]).exit_code == 0
    (written,) = results.glob("*.json")
    first = json.loads(written.read_text())

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("--cells-only computed a cell")

    monkeypatch.setattr(protocol, "small_data_cell", refuse)
    written.unlink()
    monkeypatch.setattr(sys, "argv", ["defectkit", *args, *folders, "--cells-only"])
    assert runner.invoke(app, [*args, *folders, "--cells-only"]).exit_code == 0
    again = json.loads(written.read_text())
    assert again["metrics"] == first["metrics"] and again["per_fold"] == first["per_fold"]
    assert again["command"] == first["command"] and "shots=2" in again["command"]
    assert "--cells-only" not in again["command"]

    # Options given before the protocol are part of what reruns the row too.
    early = [
        "bench",
        "-q",
        "-V",
        "methods=linear_probe",
        "neu-cls/small-data",
        "-V",
        "shots=2",
        "-V",
        "repeats=2",
    ]
    monkeypatch.setattr(sys, "argv", ["defectkit", *early, *folders[:-1], "--cells-only"])
    assert runner.invoke(app, [*early, *folders[:-1], "--cells-only"]).exit_code == 0
    recorded = json.loads(written.read_text())["command"]
    assert recorded.startswith("defectkit bench -q -V methods=linear_probe neu-cls/small-data -V shots=2")

    cell = next(cells.rglob("*.json"))
    kept = cell.read_text()
    cell.write_text(kept[: len(kept) // 2])  # a merge gone wrong: refused, never computed over
    damaged = runner.invoke(app, [*args, *folders])
    assert damaged.exit_code == 1 and "unreadable cell" in damaged.output and cell.name in damaged.output
    assert cell.read_text() == kept[: len(kept) // 2]
    for usage_error in (["-V", "shots=two"], ["--set", "trainer.epochz=3"], ["--supervision", "weak"]):
        usage = runner.invoke(app, [*args, *usage_error, *folders])
        assert usage.exit_code == 2 and "Traceback" not in usage.output, usage.output
    (tmp_path / "afile").write_text("")
    in_the_way = runner.invoke(app, [*args, *folders, "--results", str(tmp_path / "afile")])
    assert in_the_way.exit_code == 1 and "afile" in in_the_way.output
    cell.unlink()
    missing = runner.invoke(app, [*args, *folders, "--cells-only"])
    assert missing.exit_code == 1
    assert "--cells-only computes none" in missing.output and ".json" in missing.output

    # A protocol that keeps no cells would measure afresh: refused, as --render with --cells-only is.
    for refused in (["bench", "service", "--cells-only"], ["bench", "--render", "--cells-only"]):
        usage = runner.invoke(app, refused)
        assert usage.exit_code == 2 and "--cells-only" in usage.output
    typo = runner.invoke(app, ["bench", "neu-cls/smalldata", *folders[:-1]])
    assert typo.exit_code == 2 and not (tmp_path / "work").exists()  # refused: no folder made for it
    # --render reads the results alone: a protocol or options would be ignored, a typo'd folder empty.
    assert runner.invoke(app, ["bench", "neu-cls/small-data", "--render"]).exit_code == 2
    typo = runner.invoke(app, ["bench", "--render", "--results", str(tmp_path / "resluts")])
    assert typo.exit_code == 2 and not (tmp_path / "resluts").exists()
