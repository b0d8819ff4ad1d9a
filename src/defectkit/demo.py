"""``make demo``: the main job on generated data, end to end, in a few minutes on a laptop CPU.

1. generate a DAGM-style set (``defectkit data synth``) and check it (``data check``);
2. train ``segdec`` (paper 002's per-surface defect detector) on one surface, cpu profile;
   the decision threshold is chosen on a validation split carved from the training images;
3. evaluate it on that surface's held-out test images (``defectkit eval``): metrics, PR curve,
   score histogram, worst false positives / negatives;
4. export it to ONNX (``defectkit export``) and inspect the test images with onnxruntime
   (``defectkit predict``): one Inspection JSON and one overlay PNG per image;
5. print a summary table and where every file is.

Every step is the CLI command a user would type, run in-process.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from defectkit.cli.evaluate import format_metric
from defectkit.cli.main import app
from defectkit.data.formats import read_dataset
from defectkit.evaluation.contact_sheet import save_contact_sheet

console = Console(highlight=False)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "segdec" / "synthetic.yaml"
SURFACE = "Class4"  # cells with stains: one surface, one detector (paper 002's SBDD per surface)


def _run(args: list[str]) -> int:
    """Run a ``defectkit`` command as a user would and return its exit status."""
    console.rule(f"[bold]defectkit {' '.join(args)}")
    # Without standalone mode, Click returns a command's exit code instead of raising SystemExit.
    status = app(args, standalone_mode=False)
    return status if isinstance(status, int) else 0


def _surface_sheet(data: Path, out: Path) -> Path:
    dataset = read_dataset(data)
    picks = []
    for surface in dataset.info.surface_names:
        of_surface = [s for s in dataset.samples if s.surface == surface]
        picks += [s for s in of_surface if s.label == 0][:1] + [s for s in of_surface if s.label == 1][:1]
    captions = [f"{s.surface} {'defect' if s.label else 'good'}" for s in picks]
    return save_contact_sheet(picks, out, captions, columns=len(picks), tile=160)


def _summary(out: Path, started: float) -> Table:
    metrics = json.loads((out / "eval" / "metrics.json").read_text())["metrics"]
    with open(out / "predictions" / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    verdicts = {v: sum(r["verdict"] == v for r in rows) for v in ("ok", "defect", "unknown")}
    latency = sorted(float(r["latency_ms"]) for r in rows if r.get("latency_ms"))
    table = Table(title=f"segdec on synthetic surface {SURFACE} (held-out test images)")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")

    table.add_row("test images (defective)", f"{metrics['n_images']} ({metrics['n_pos']})")
    for key in ("ap", "auroc", "fp", "fn", "fp_at_full_recall", "dice_pos"):
        table.add_row(key, format_metric(metrics.get(key), digits=3))
    table.add_row("threshold (chosen on validation)", format_metric(metrics.get("threshold"), digits=3))
    table.add_row("ONNX verdicts ok / defect", f"{verdicts['ok']} / {verdicts['defect']}")
    if latency:
        table.add_row("ONNX latency, median ms/image", f"{latency[len(latency) // 2]:.1f}")
    table.add_row("demo wall time", f"{time.perf_counter() - started:.0f} s")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="defectkit demo: generate, train, evaluate, export, inspect")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="where to write (replaced)")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    options = parser.parse_args(argv)
    started = time.perf_counter()
    out: Path = options.out
    if out.exists():
        shutil.rmtree(out)
    data, run = out / "synthetic-dagm", out / "run"
    train = [
        "train",
        str(CONFIG),
        "--profile",
        "cpu",
        "--out",
        str(run),
        "--quiet",
        "--set",
        f"data.root={data}",
    ]
    train += ["--set", f"data.surface={SURFACE}"]
    if options.epochs:
        train += ["--set", f"trainer.epochs={options.epochs}"]
    test_images = data / SURFACE / "Test" / "*.PNG"  # a glob: the Label/ folder beside them holds masks
    predictions = out / "predictions"
    steps = [
        ["data", "synth", str(data), "--surfaces", "4", "--per-surface", "320", "--size", "128",
         "--seed", "0"],
        ["data", "check", str(data), "--max-problems", "10"],
        train,
        ["eval", str(run / "model"), "--data", str(data), "--split", "test", "--surface", SURFACE,
         "--out", str(out / "eval")],
        ["export", str(run / "model"), "--format", "onnx"],
        ["predict", str(run / "model"), str(test_images), "--out", str(predictions), "--backend", "onnx"],
    ]  # fmt: skip
    for step in steps:
        status = _run(step)
        if status != 0:
            console.print(f"[red]demo step failed with exit status {status}: defectkit {' '.join(step)}")
            return status
    sheet = _surface_sheet(data, out / "surfaces.png")
    console.rule("[bold]summary")
    console.print(_summary(out, started))
    console.print(f"surfaces:     {sheet}")
    console.print(f"model:        {run / 'model'} (model.yaml, weights.safetensors, model.onnx)")
    console.print(
        f"evaluation:   {out / 'eval'} (metrics.json, pr_curve.png, score_histogram.png, worst.png)"
    )
    console.print(f"inspections:  {out / 'predictions'} (one JSON + overlay PNG per image, summary.csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
