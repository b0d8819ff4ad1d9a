"""``defectkit eval``: evaluate a saved model on a dataset and write a report folder."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from defectkit.cli.data import progress_bar
from defectkit.cli.errors import fail, user_errors

console = Console(highlight=False)
MAX_PROBLEMS_SHOWN = 20


class Split(str, Enum):
    test = "test"
    val = "val"
    train = "train"
    all = "all"


def format_metric(value: object, digits: int = 4) -> str:
    """A metric as a table cell or summary figure; every command that prints metrics shows them so."""
    # None (a null read back from a JSON or YAML file) and NaN both mean undefined, e.g. AP on a
    # split with one class only.
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, dict | list):
        return "(in metrics.json)"  # per-class tables and confusion matrices do not fit a row
    return str(value)


@user_errors
def evaluate(
    model_dir: Path = typer.Argument(..., help="Saved model folder (with model.yaml)."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (or manifest file)."),
    format: str | None = typer.Option(None, "--format", "-f", help="Reader to use; detected when omitted."),
    split: Split = typer.Option(
        Split.test,
        help="Images whose meta split matches (DAGM, MVTec, synthetic); datasets without splits "
        "are evaluated whole. 'all' takes every image.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Report folder (default: MODEL_DIR/eval-DATA-SPLIT, DATA the dataset folder's name).",
    ),
    device: str = typer.Option("cpu", help="torch device (cpu, cuda, cuda:1, ...)."),
    surface: str | None = typer.Option(None, help="Only images of this surface (per-surface detectors)."),
) -> None:
    """Score every image, compute metrics at the model's STORED threshold and write a report.

    Writes metrics.json, scores.csv, pr_curve.png, score_histogram.png and worst.png.
    Unreadable images are listed and skipped; the exit status is then 1, the report still written
    (problems of the dataset's other images, outside the split, do not count).
    """
    # Imported here so `defectkit --help` does not pay for torch.
    from defectkit.evaluation.evaluate import evaluate_model
    from defectkit.inference.saved_model import CARD_NAME, SavedModelError

    if not (model_dir / CARD_NAME).is_file():
        raise fail(f"{model_dir}: not a saved defectkit model ({CARD_NAME} not found)")
    try:
        with progress_bar("evaluating") as bar:
            task = bar.add_task("eval", total=None)
            report = evaluate_model(
                model_dir,
                data,
                format,
                split.value,
                out,
                device,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                surface=surface,
            )
    except SavedModelError as error:
        raise fail(str(error)) from None

    for problem in report.problems[:MAX_PROBLEMS_SHOWN]:
        console.print(f"[yellow]skipped[/]: {escape(problem.path)}: {escape(problem.reason)}", soft_wrap=True)
    if len(report.problems) > MAX_PROBLEMS_SHOWN:
        console.print(f"... {len(report.problems) - MAX_PROBLEMS_SHOWN} more, listed in metrics.json")

    console.print(escape(f"{model_dir} on {data}: {report.split_note}"), soft_wrap=True)
    table = Table()
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key, value in report.metrics.items():
        table.add_row(key, format_metric(value))
    console.print(table)
    for name, path in report.files.items():
        console.print(f"{name:<20} {escape(str(path))}", soft_wrap=True)
    if report.unusable:
        # Bad data exits 1, as predict does: the report covers the rest, but a script must notice.
        raise fail(f"{report.unusable} image(s) could not be used (listed above and in metrics.json)")
