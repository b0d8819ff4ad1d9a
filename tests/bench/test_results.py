"""Results files, the per-cell cache and the BENCHMARKS.md renderer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from defectkit.bench.render import render_benchmarks, render_markdown
from defectkit.bench.results import (
    CellCache,
    CellMissingError,
    CellUnreadableError,
    cells_machine,
    machine_info,
    read_results,
    results_path,
    write_results,
)

KEYS = [
    "schema",
    "protocol",
    "method",
    "dataset",
    "variant",
    "profile",
    "metrics",
    "per_fold",
    "n_images",
    "paper",
    "wall_time_s",
    "infer_ms_per_image",
    "commit",
    "machine",
    "command",
    "created",
]
MACHINE = {"cpu": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "cores": 2, "gpu": None, "torch": "2.14.1"}

REPO = Path(__file__).resolve().parents[2]


def _write(root: Path, **changes: Any) -> Path:
    return write_results(**{**_fields(root), **changes})


def _fields(root: Path) -> dict[str, Any]:
    return {
        "protocol": "ksdd/segdec",
        "method": "segdec",
        "dataset": "kolektorsdd",
        "variant": {"supervision": "full"},
        "profile": "cpu",
        "metrics": {"ap": 0.9981, "auroc": 0.999, "fp": 0, "fn": 1, "dice_pos": float("nan")},
        "per_fold": [{"fold": 0, "metrics": {"ap": 0.99}}],
        "n_images": 399,
        "paper": {"ap": 1.0, "fn": 0},
        "wall_time_s": 1820.5,
        "infer_ms_per_image": 12.3,
        "commit": "abc1234",
        "machine": MACHINE,
        "command": "defectkit bench ksdd/segdec --profile cpu --supervision full",
        "created": "2026-11-25T12:00:00Z",
        "root": root,
    }


def test_results_path_rules(tmp_path: Path) -> None:
    assert results_path("ksdd/segdec", {"supervision": "full"}, "cpu").as_posix() == (
        "benchmarks/results/ksdd-segdec-full-cpu.json"
    )
    assert results_path("ksdd/segdec", {"supervision": "mixed:5"}, "paper", tmp_path).name == (
        "ksdd-segdec-mixed-5-paper.json"
    )
    # Keys are sorted, so the name does not depend on how the dict was built.
    a = results_path("neu/x", {"shots": 5, "backbone": "r18"}, "cpu")
    b = results_path("neu/x", {"backbone": "r18", "shots": 5}, "cpu")
    assert a == b and a.name == "neu-x-backbone-r18_shots-5-cpu.json"  # several keys: named pairs
    assert results_path("p", {}, "cpu").name == "p-cpu.json"


def test_write_results_schema_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, init="random")
    assert path == tmp_path / "ksdd-segdec-full-cpu.json"
    record = json.loads(path.read_text())  # strict JSON: NaN became null
    assert list(record) == [*KEYS, "init"] and record["schema"] == 1
    assert record["metrics"]["dice_pos"] is None and record["paper"] == {"ap": 1.0, "fn": 0}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind

    # An interrupted write leaves the previous file intact.
    before = path.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, n_images=1)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_defaults_and_read_results(tmp_path: Path) -> None:
    path = write_results(
        protocol="neu-cls/scl",
        method="scl_arcface",
        dataset="neu-cls",
        variant={"shots": 10},
        profile="cpu",
        metrics={"accuracy": 0.9},
        n_images=1800,
        command="defectkit bench neu-cls/scl",
        root=tmp_path,
    )
    record = json.loads(path.read_text())
    assert "init" not in record and "notes" not in record
    assert set(record["machine"]) >= {"cpu", "cores", "gpu", "torch", "python"}
    assert record["created"].endswith("Z")
    info = machine_info()
    assert info["cores"] == os.cpu_count() and isinstance(info["torch"], str)
    _write(tmp_path)
    assert [r["_file"] for r in read_results(tmp_path)] == [
        "ksdd-segdec-full-cpu.json",
        "neu-cls-scl-10-cpu.json",
    ]
    assert read_results(tmp_path / "missing") == []
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json"):
        read_results(tmp_path)


def test_cell_cache_resumes(tmp_path: Path) -> None:
    cache = CellCache(tmp_path / "cache")
    computed: list[int] = []

    def run_grid(stop_after: int | None = None) -> list[float]:
        results = []
        for fold in range(3):

            def compute(fold: int = fold) -> dict[str, float]:
                if stop_after is not None and len(computed) >= stop_after:
                    raise KeyboardInterrupt
                computed.append(fold)
                return {"ap": 0.5 + fold / 10, "dice": float("nan")}

            results.append(cache.get_or_compute(f"fold={fold}", compute)["ap"])
        return results

    with pytest.raises(KeyboardInterrupt):
        run_grid(stop_after=2)
    assert computed == [0, 1] and cache.keys() == ["fold=0", "fold=1"]
    assert run_grid() == [0.5, 0.6, 0.7] and computed == [0, 1, 2]  # only the missing cell ran
    assert run_grid() == [0.5, 0.6, 0.7] and computed == [0, 1, 2]
    stored = cache.get("fold=0")
    assert stored is not None and stored.pop("machine") == machine_info()  # who computed it
    assert stored == {"ap": 0.5, "dice": None} and "fold=2" in cache
    assert cache.path("a/b") != cache.path("a-b")  # distinct keys never share a file
    # A damaged file is no unfinished cell: computing over it could replace hours of work.
    cache.path("fold=9").write_text("{truncated")
    with pytest.raises(CellUnreadableError, match=r"fold-9-\w+\.json: unreadable cell \(not JSON"):
        cache.get_or_compute("fold=9", lambda: {"ap": 0.9})
    assert cache.path("fold=9").read_text() == "{truncated"
    cache.path("fold=9").write_text(cache.path("fold=0").read_text())
    with pytest.raises(CellUnreadableError, match="it holds cell 'fold=0'"):
        cache.get("fold=9")


def test_a_cells_only_cache_reads_finished_cells_and_computes_none(tmp_path: Path) -> None:
    CellCache(tmp_path).put("fold=0", {"ap": 0.5})
    cells_only = CellCache(tmp_path, cells_only=True)

    def refuse() -> dict[str, float]:
        raise AssertionError("a cells-only cache computed a cell")

    assert cells_only.get_or_compute("fold=0", refuse)["ap"] == 0.5
    with pytest.raises(CellMissingError, match=r"'fold=1'.*\.json\).*--cells-only"):
        cells_only.get_or_compute("fold=1", refuse)
    assert "fold=1" not in cells_only


def test_cells_name_the_commit_and_machine_that_computed_them(tmp_path: Path) -> None:
    """A grid re-summarised later, on another machine, keeps its cells' provenance."""
    epyc = {**MACHINE, "cpu": "AMD EPYC 7B13"}
    summary = {key: value for key, value in _fields(tmp_path).items() if key not in ("commit", "machine")}
    cells = [
        {"ap": 0.9, "commit": "aaa1111", "machine": epyc},
        {"ap": 0.8, "commit": "bbb2222", "machine": MACHINE},
    ]
    record = json.loads(write_results(**summary, cells=cells).read_text())
    assert record["commit"] == "aaa1111 bbb2222"
    assert record["machine"] == {**MACHINE, "cpu": f"AMD EPYC 7B13 / {MACHINE['cpu']}"}
    assert "| AMD EPYC 7B13 / Intel Xeon Platinum 8375C ×2 |" in render_markdown(read_results(tmp_path))

    # Cells from before cells recorded machines: the machine the file named for the same cells, at
    # every re-summary; this machine when the file summarised other cells.
    unrecorded = [{"ap": 0.9, "commit": "ccc3333"}]
    _write(tmp_path, commit="ccc3333", machine=epyc)
    for _ in range(2):
        assert json.loads(write_results(**summary, cells=unrecorded).read_text())["machine"] == epyc
    _write(tmp_path, commit="ddd4444", machine=epyc)
    assert json.loads(write_results(**summary, cells=unrecorded).read_text())["machine"] == machine_info()
    # A re-summary of mixed cells does not repeat a machine; a gpu some cells lack shows the others'.
    h200 = {**MACHINE, "gpu": "NVIDIA H200"}
    record = json.loads(
        write_results(**summary, cells=[*cells, {"commit": "eee5555", "machine": h200}]).read_text()
    )
    mixed = record["machine"]
    assert mixed["cpu"] == f"AMD EPYC 7B13 / {MACHINE['cpu']}" and mixed["gpu"] == "NVIDIA H200"
    assert cells_machine([{"machine": mixed}, {"machine": MACHINE}, {"machine": epyc}]) == mixed
    # A fresh cell comes back from the cache as it is stored: with the machine that computed it.
    fresh = CellCache(tmp_path / "cells").put("fold=0", {"ap": 0.5, "commit": "fff6666"})
    assert fresh["machine"] == machine_info()
    with pytest.raises(ValueError, match="not both"):
        write_results(**summary, cells=cells, commit="abc1234")


def test_render_is_deterministic_and_shows_ours_vs_paper(tmp_path: Path) -> None:
    root = tmp_path / "results"
    _write(root)
    _write(
        root,
        variant={"supervision": "weak"},
        metrics={"ap": 0.93, "fn": 4},
        paper={"ap": 0.96},
        init="random",
    )
    _write(
        root,
        protocol="neu-cls/scl",
        method="scl_arcface",
        dataset="neu-cls",
        variant={},
        paper={},
        metrics={"accuracy": 0.91, "macro_f1": 0.9},
        notes="10 repeats",
        machine={**MACHINE, "gpu": "NVIDIA H100 80GB HBM3"},
    )
    out = render_benchmarks(root, tmp_path / "BENCHMARKS.md")
    text = out.read_text()
    assert text.startswith("<!-- Generated by") and "Do not edit by hand" in text.splitlines()[0]
    assert text.index("## ksdd/segdec") < text.index("## neu-cls/scl")
    header = next(line for line in text.splitlines() if line.startswith("| variant") and "ap (ours)" in line)
    assert "| ap (ours) | ap (paper) | fn (ours) | fn (paper) |" in header
    full = next(line for line in text.splitlines() if line.startswith("| supervision=full"))
    assert "| 0.998 | 1.000 | 1 | 0 |" in full and "30.3 min" in full and "12.3" in full
    assert "Xeon Platinum 8375C ×2" in full and "abc1234" in full
    assert "`defectkit bench ksdd/segdec --profile cpu --supervision full`" in full
    weak = next(line for line in text.splitlines() if line.startswith("| supervision=weak"))
    assert "(random init)" in weak and "| 0.930 | 0.960 | 4 | – |" in weak
    assert "+ H100 80GB HBM3" in text and "10 repeats" in text and "accuracy" in text
    # Same files, same bytes (and unchanged files are not rewritten).
    mtime = out.stat().st_mtime_ns
    assert render_benchmarks(root, out).read_bytes() == text.encode() and out.stat().st_mtime_ns == mtime
    shuffled = list(reversed(read_results(root)))
    assert render_markdown(shuffled) == text
    assert "No results yet" in render_markdown([])


def test_render_sets_a_papers_ablation_side_by_side(tmp_path: Path) -> None:
    """Under an aux protocol's table, the rows that differ in one ablated setting alone stand
    together, in the setting's order; a setting with one value, or another protocol, gets none."""
    root = tmp_path / "results"
    fixed = {"tasks": "all", "seg_loss": "dice", "fraction": 1.0}
    for attention, accuracy in (("se+sa", 0.97), ("none", 0.95), ("se", 0.96)):
        paper = {"accuracy": 0.971} if attention == "se+sa" else {}
        variant = {**fixed, "attention": attention}
        _write(root, protocol="aux/x", variant=variant, metrics={"accuracy": accuracy}, paper=paper)
    halved = {**fixed, "attention": "sa", "fraction": 0.5}
    _write(root, protocol="aux/x", variant=halved, metrics={"accuracy": 0.9}, paper={})
    # Random init is another setting: the row stays out of the attention table.
    random = {**fixed, "attention": "sa"}
    _write(root, protocol="aux/x", variant=random, metrics={"accuracy": 0.8}, paper={}, init="random")
    _write(root, variant={"attention": "none"})
    _write(root, variant={"attention": "se"})
    for attention in ("none", "se"):  # gains of a multitask protocol: no paper table
        _write(root, protocol="aux/x/multitask", variant={**fixed, "attention": attention})
    # Classifiers alone, with and without attention, are Table III's rows, not Table IV's.
    for attention, accuracy in (("se+sa", 0.98), ("none", 0.97)):
        variant = {**fixed, "tasks": "classification", "attention": attention}
        _write(root, protocol="aux/x", variant=variant, metrics={"accuracy": accuracy}, paper={})
    text = render_benchmarks(root, tmp_path / "BENCHMARKS.md").read_text()
    captions = [line for line in text.splitlines() if "varied" in line]
    assert captions == [
        "paper 000's Table III (single-task classifiers): attention varied, fraction=1.000, seg_loss=dice, "
        "tasks=classification, profile cpu (rows of the table above, whose notes hold for them here):",
        "paper 000's Table IV (attention): attention varied, fraction=1.000, seg_loss=dice, tasks=all, "
        "profile cpu (rows of the table above, whose notes hold for them here):",
    ]
    classifiers = text.split(captions[0])[1].split("\n\n")[1].splitlines()
    assert [row.split(" | ")[:2] for row in classifiers[2:]] == [["| none", "0.970"], ["| se+sa", "0.980"]]
    table = text.split(captions[1])[1].split("\n\n")[1].splitlines()
    assert table[0].startswith("| attention | accuracy (ours) | accuracy (paper) |")
    assert [row.split(" | ")[0] for row in table[2:]] == ["| none", "| se", "| se+sa"]
    assert table[2].startswith("| none | 0.950 | – |") and table[4].startswith("| se+sa | 0.970 | 0.971 |")
    assert "Xeon Platinum 8375C ×2" in table[2]


def test_render_counts_a_row_without_the_ablated_key_at_its_default(tmp_path: Path) -> None:
    """Table II's decoder stays out of the FPN segmenter's variant (its rows keep their names), yet
    that row heads the decoder table, as the value the key defaults to."""
    root = tmp_path / "results"
    fixed = {"tasks": "segmentation", "attention": "se+sa", "seg_loss": "dice", "fraction": 1.0}
    _write(root, protocol="aux/x", variant=fixed, metrics={"dice": 0.9}, paper={"dice": 0.902})
    for decoder, dice in (("unet", 0.8), ("linknet", 0.85)):
        variant = {**fixed, "decoder": decoder}
        _write(root, protocol="aux/x", variant=variant, metrics={"dice": dice}, paper={"dice": 0.856})
    _write(root, protocol="aux/x", variant={**fixed, "tasks": "all"}, metrics={"dice": 0.95}, paper={})
    text = render_benchmarks(root, tmp_path / "BENCHMARKS.md").read_text()
    captions = [line for line in text.splitlines() if "varied" in line]
    assert captions == [
        "paper 000's Table II (single-task segmenters): decoder varied, attention=se+sa, fraction=1.000, "
        "seg_loss=dice, tasks=segmentation, profile cpu (rows of the table above, whose notes hold for "
        "them here):"
    ]
    table = text.split(captions[0])[1].split("\n\n")[1].splitlines()
    assert [row.split(" | ")[:2] for row in table[2:]] == [
        ["| fpn", "0.900"],
        ["| linknet", "0.850"],
        ["| unet", "0.800"],
    ]


def test_render_shows_localisation_figures_beside_the_papers(tmp_path: Path) -> None:
    root = tmp_path / "results"
    _write(root, metrics={"ap": 0.99, "fn": 1, "pixel_auroc": 0.81, "dice_pos": None}, paper={"ap": 0.995})
    text = render_benchmarks(root, tmp_path / "BENCHMARKS.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| variant"))
    assert "| ap (ours) | ap (paper) | pixel_auroc |" in header and "dice_pos" not in header  # all None
    assert "| 0.990 | 0.995 | 0.810 |" in text


def test_render_without_paper_figures_shows_ours_and_names_any_left_out(tmp_path: Path) -> None:
    # aux/synthetic's 15 figures: the box mAPs sort last and were once cut off at ten columns.
    names = ["ap", "auroc", "fp", "fn", "false_calls", "mla", "mean_auroc", "dice", "dice_pos", "iou"]
    names += ["iou_pos", "map", "map50", "accuracy", "server_errors", "zz_first_left_out", "zz_second"]
    root = tmp_path / "results"
    _write(root, metrics={name: 0.5 for name in names}, paper={})
    lines = render_markdown(read_results(root)).splitlines()
    header = next(line for line in lines if line.startswith("| variant"))
    assert all(f"| {name} |" in header for name in names[:-1]) and "zz_second" not in header
    assert "Not shown, in the rows' results files: zz_second." in lines


def test_config_fingerprint_keeps_committed_cell_keys() -> None:
    """Fields added to the config later must not re-key cells committed before them: this is the
    key of the ksdd/segdec cpu folds committed before ``mask_bias`` (benchmarks/cells/ksdd-segdec-full-cpu),
    which that field at its old value (false) keeps, and at the configs' value (true) changes. The
    cpu input was 704x256 then."""
    from defectkit.config import config_fingerprint, load_config

    path = REPO / "configs/segdec/kolektorsdd.yaml"
    then = ["data.supervision=full", "model.mask_bias=false", "input.size=[704, 256]"]
    config = load_config(path, "cpu", then)
    assert config_fingerprint(config) == "2c23f95d38"
    shipped = load_config(path, "cpu", ["data.supervision=full"])
    assert shipped.model["mask_bias"] is True and config_fingerprint(shipped) != "2c23f95d38"
    assert config_fingerprint(config.model_copy(update={"seed": 1})) != "2c23f95d38"
    assert config_fingerprint(config, ks=[1]) != config_fingerprint(config, ks=[3])


def test_switched_off_fields_stay_out_of_the_fingerprint() -> None:
    """weak_lnet's ``rotation_stages`` came after the committed cells: without rotation it must not
    re-key them (benchmarks/cells/ksdd-weak_lnet-..._positives-5_rotation-false-cpu); with rotation
    it must, since it changes what is trained. The cpu input was 704x256 then. Likewise
    ``stage1_attempts`` acts only when stage 1 runs, and ``stage1_min_val_ap`` only with more than
    one attempt."""
    from defectkit.config import config_fingerprint, load_config

    path = REPO / "configs/weak_lnet/kolektorsdd.yaml"
    switches = [
        "method_options.lnet_trained=true",
        "method_options.freeze_stage2=true",
        "input.size=[704, 256]",
        "method_options.stage1_attempts=1",  # the cpu profile's second attempt came later too
    ]
    upright = load_config(path, "cpu", [*switches, "method_options.rotation=false", "data.train_positives=5"])
    assert config_fingerprint(upright) == "f52f37b6d7"
    assert config_fingerprint(
        load_config(path, "cpu", [*switches, "method_options.stage1_min_val_ap=0.5"])
    ) == (config_fingerprint(load_config(path, "cpu", switches)))
    assert config_fingerprint(
        load_config(path, "cpu", [*switches[:-1], "method_options.stage1_min_val_ap=0.5"])
    ) != (config_fingerprint(load_config(path, "cpu", switches[:-1])))
    # The cpu profile at 968x352 before its second attempt (benchmarks/cells/..._positives-10_...).
    single = [*switches[:2], switches[3], "method_options.rotation=false", "data.train_positives=10"]
    assert config_fingerprint(load_config(path, "cpu", single)) == "6069d9f097"
    untrained = ["method_options.lnet_trained=false"]  # no stage 1 to repeat: attempts change nothing
    assert config_fingerprint(load_config(path, "cpu", untrained)) == config_fingerprint(
        load_config(path, "cpu", [*untrained, "method_options.stage1_attempts=1"])
    )
    turned = [*switches, "method_options.rotation=true"]
    assert config_fingerprint(load_config(path, "cpu", turned)) != config_fingerprint(
        load_config(path, "cpu", [*turned, "method_options.rotation_stages=[1,2,3]"])
    )


def test_aux_net_defaults_named_explicitly_keep_their_cell_keys() -> None:
    """aux_net's ``lr_schedule`` and ``box_loss`` came after the committed cells: naming their old
    defaults (``--set method_options.lr_schedule=constant``, how the constant-rate aux/neu-det rows
    are rebuilt now that one cycle is that config's default) must find the same cells."""
    from defectkit.config import config_fingerprint, load_config

    path = REPO / "configs/aux_net/kolektorsdd.yaml"
    plain = config_fingerprint(load_config(path, "cpu"))
    named = ["method_options.lr_schedule=constant", "method_options.box_loss=smooth_l1"]
    assert config_fingerprint(load_config(path, "cpu", named)) == plain
    assert config_fingerprint(load_config(path, "cpu", ["method_options.lr_schedule=one_cycle"])) != plain
    assert config_fingerprint(load_config(path, "cpu", ["method_options.box_loss=giou"])) != plain


def test_render_writes_a_note_shared_by_several_rows_once(tmp_path: Path) -> None:
    root = tmp_path / "results"
    finding = "tried against the shortfall: a longer schedule (AP 0.96; no gain), then a larger input"
    notes = {
        "a": f"input 704x256; {finding}",
        "b": f"input 704x256; {finding}; frozen encoder",
        "c": "input 704x256; random 90-degree turns (stages 2; 3)",
    }
    for name, note in notes.items():
        _write(root, variant={"setting": name}, notes=note)
    text = render_markdown(read_results(root))
    assert text.count(finding) == 1 and text.count("input 704x256") == 1
    assert "- Every row: input 704x256\n" in text and f"- [1] {finding}\n" in text
    assert "- setting=a / cpu: [1]\n" in text and "- setting=b / cpu: [1]; frozen encoder\n" in text
    assert "- setting=c / cpu: random 90-degree turns (stages 2; 3)\n" in text  # not split inside ( )
    one = render_markdown(read_results(root)[:1])
    assert f"- setting=a / cpu: input 704x256; {finding}\n" in one  # a single row keeps its note whole
