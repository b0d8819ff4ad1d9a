from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from defectkit import __version__
from defectkit.cli.main import app

runner = CliRunner()


def test_help_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "data" in result.output and "methods" in result.output
    assert __version__ in runner.invoke(app, ["--version"]).output
    assert runner.invoke(app, ["data", "--help"]).exit_code == 0


def test_methods_lists_registry() -> None:
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0 and "method" in result.output


def test_convert_to_manifest(ksdd_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "converted"
    result = runner.invoke(app, ["data", "convert", str(ksdd_root), str(out), "--to", "manifest"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and sum(r["label"] for r in rows) == 1 and all("mask" in r for r in rows)
    assert json.loads((out / "dataset.json").read_text())["converted_from"] == "kolektorsdd"
    check = runner.invoke(app, ["data", "check", str(out)])
    assert check.exit_code == 0, check.output
    bad = runner.invoke(app, ["data", "convert", str(ksdd_root), str(out), "--to", "coco"])
    assert bad.exit_code == 2


def test_convert_never_replaces_a_dataset_unasked(ksdd_root: Path, tmp_path: Path) -> None:
    converted = tmp_path / "converted"
    assert runner.invoke(app, ["data", "convert", str(ksdd_root), str(converted)]).exit_code == 0
    manifest = converted / "manifest.jsonl"
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join([rows[0], '{"path": "x.png", "label": 7}', *rows[1:]]) + "\n")
    before = manifest.read_bytes()
    for force in ([], ["--force"]):
        # Converting a manifest onto itself would drop the row it cannot parse from the user's file.
        again = runner.invoke(app, ["data", "convert", str(converted), str(converted), *force])
        assert again.exit_code == 2 and "being read" in again.output and manifest.read_bytes() == before
    elsewhere = tmp_path / "clean"
    result = runner.invoke(app, ["data", "convert", str(converted), str(elsewhere)])
    assert result.exit_code == 1 and "could not be converted" in result.output  # written all the same
    assert len((elsewhere / "manifest.jsonl").read_text().splitlines()) == 6

    refused = runner.invoke(app, ["data", "convert", str(ksdd_root), str(elsewhere)])
    assert refused.exit_code == 2 and "--force" in refused.output
    assert runner.invoke(app, ["data", "convert", str(ksdd_root), str(elsewhere), "--force"]).exit_code == 0
    # Every manifest in a folder reads its one dataset.json: a second one is refused, even forced.
    second = runner.invoke(app, ["data", "convert", str(ksdd_root), str(elsewhere / "b.csv"), "--force"])
    assert second.exit_code == 2 and "manifest.jsonl" in second.output
    assert not (elsewhere / "b.csv").exists()
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "manifest.csv").write_text("path,label\nx.png,1\n")  # a hand-made manifest, no dataset.json
    beside = runner.invoke(app, ["data", "convert", str(ksdd_root), str(alone), "--force"])
    assert beside.exit_code == 2 and "already holds a manifest" in beside.output
    assert sorted(p.name for p in alone.iterdir()) == ["manifest.csv"]


def _digest(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_is_byte_identical_for_a_seed_and_checks_clean(tmp_path: Path) -> None:
    args = [
        "--surfaces",
        "3",
        "--per-surface",
        "4",
        "--size",
        "64",
        "--seed",
        "7",
        "--defect-fraction",
        "0.5",
    ]
    for name in ("a", "b"):
        result = runner.invoke(app, ["data", "synth", str(tmp_path / name), *args])
        assert result.exit_code == 0, result.output
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    other = runner.invoke(app, ["data", "synth", str(tmp_path / "c"), *args[:-4], "--seed", "8"])
    assert other.exit_code == 0
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    check = runner.invoke(app, ["data", "check", str(tmp_path / "a")])
    assert check.exit_code == 0, check.output
    assert "images           │ 12" in check.output


def test_synth_manifest_layout_and_bad_options(tmp_path: Path) -> None:
    out = tmp_path / "m"
    result = runner.invoke(
        app, ["data", "synth", str(out), "--surfaces", "2", "--per-surface", "3", "--size", "64", "--mode",
              "multiclass", "--layout", "manifest"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "manifest.jsonl").is_file() and (out / "attributes.json").is_file()
    assert runner.invoke(app, ["data", "synth", str(out), "--mode", "nope"]).exit_code == 2
    assert runner.invoke(app, ["data", "synth", str(out), "--size", "8"]).exit_code == 2
    before = _digest(out)
    again = runner.invoke(app, ["data", "synth", str(out), "--surfaces", "1", "--per-surface", "2"])
    assert again.exit_code == 2 and "new or empty folder" in again.output and _digest(out) == before


SIGTERMED = """
import os, signal, sys, time
import defectkit.cli.main as cli

def command():
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    finally:
        open(sys.argv[1], "w").write("cleaned up")  # where predict writes its summary.csv

cli.app = command  # what the `defectkit` entry point runs, through main()
cli.main()
"""


def test_sigterm_ends_a_command_as_ctrl_c_does(tmp_path: Path) -> None:
    marker = tmp_path / "finally"
    done = subprocess.run(
        [sys.executable, "-c", SIGTERMED, str(marker)], capture_output=True, text=True, timeout=120
    )
    assert "KeyboardInterrupt" in done.stderr and done.returncode != 0
    assert marker.read_text() == "cleaned up"  # the process's own SIGTERM would have skipped it
