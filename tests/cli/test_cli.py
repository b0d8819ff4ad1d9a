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
