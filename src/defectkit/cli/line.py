"""``defectkit line``: train and run a two-stage inspection line (paper 002)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from defectkit.cli.data import progress_bar
from defectkit.cli.errors import UsageError, fail, user_errors
from defectkit.cli.evaluate import Split, format_metric
from defectkit.cli.predict import SAVE_MASKS_HELP
from defectkit.config import ConfigError

console = Console(highlight=False)
app = typer.Typer(
    help="Two-stage inspection line: a surface router, then each surface's defect detector.",
    no_args_is_help=True,
)


@app.command("train")
@user_errors
def train(
    config: Path = typer.Argument(..., help="Line training file (configs/line/*.yaml)."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Line directory to write (line.yaml, router/, detectors/)."
    ),
    profile: str | None = typer.Option(None, "--profile", "-p", help="Profile of both stages' configs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train the surface router (sbad) and one detector per seen surface; detectors already saved
    in OUT are kept, so an interrupted run resumes."""
    from defectkit.training.line import train_line

    try:
        line_dir = train_line(
            config, out, profile, progress=not quiet, say=lambda s: console.print(escape(s))
        )
    except ConfigError as error:
        raise UsageError(str(error)) from None
    from defectkit.inference.line import load_line

    line = load_line(line_dir)
    metrics = line.router.card.validation_metrics
    routing = format_metric(metrics.get("routing_accuracy"))
    console.print(
        escape(
            f"saved line {line_dir}: router routing accuracy {routing} on "
            f"{int(metrics.get('n_images', 0))} validation images, {len(line.detectors)} detector(s)"
        )
    )


@app.command("run")
@user_errors
def run(
    line_dir: Path = typer.Argument(..., help="Line directory (with line.yaml)."),
    paths: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) or globs."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for results."),
    save_heatmaps: bool = typer.Option(
        False, "--save-heatmaps", help="Also write each heat map as <name>.heatmap.png."
    ),
    save_masks: bool = typer.Option(False, "--save-masks", help=SAVE_MASKS_HELP),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Write <name>.png overlays."),
) -> None:
    """Inspect every image in PATHS: surface, verdict (ok / defect / unknown), score, regions.

    Writes NAME.json (the inspection; an unknown surface carries the router's attributes in
    words), NAME.png (an overlay) and summary.csv, as `defectkit predict` does.
    """
    from defectkit.cli.predict import write_predictions
    from defectkit.inference.line import load_line
    from defectkit.inference.saved_model import SavedModelError

    try:
        line = load_line(line_dir)
    except SavedModelError as error:
        raise fail(str(error)) from None
    uncovered = [surface for surface in line.router.seen if surface not in line.detectors]
    if uncovered:
        # By design their images come out unknown: say so before, not in the counts after.
        console.print(
            escape(f"note: no detector for seen surface(s) {', '.join(uncovered)}; their images are unknown"),
            soft_wrap=True,
        )
    write_predictions(
        line,
        paths,
        out,
        f"line {line.name}",
        save_heatmaps=save_heatmaps,
        save_masks=save_masks,
        overlays=overlays,
    )


@app.command("eval")
@user_errors
def evaluate(
    line_dir: Path = typer.Argument(..., help="Line directory (with line.yaml)."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder with each image's surface."),
    format: str | None = typer.Option(None, "--format", "-f", help="Reader to use; detected when omitted."),
    split: Split = typer.Option(Split.test, help="Images whose meta split matches ('all': every image)."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Report folder (default: LINE_DIR/eval-DATA-SPLIT, DATA the dataset folder's name).",
    ),
) -> None:
    """Put every labelled image through the whole line and score it end to end.

    Rows: what an image is (a seen surface's good or defective image, or an unseen surface's);
    columns: the line's verdict (ok, defect, unknown). Writes metrics.json (routing accuracy,
    detection and escape rates, false alarms, unseen alerts and their AUROC, the confusion
    matrix) and confusion.png. Unreadable images are listed and skipped; the exit status is then
    1, the report still written.
    """
    from defectkit.data.formats import read_dataset
    from defectkit.evaluation.evaluate import default_report_folder, report_output, select_split
    from defectkit.evaluation.line import evaluate_line, write_line_report
    from defectkit.inference.line import load_line
    from defectkit.inference.saved_model import SavedModelError

    try:
        line = load_line(line_dir)
        samples, chosen = select_split(read_dataset(data, format).samples, split.value)
    except SavedModelError as error:
        raise fail(str(error)) from None
    with (
        report_output(out or default_report_folder(line_dir, data, split.value)) as folder,
        progress_bar("judging") as bar,
    ):
        task = bar.add_task("line eval", total=None)
        report = evaluate_line(
            line, samples, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    for path, reason in report.failures:
        console.print(f"[red]failed[/]: {escape(path)}: {escape(reason)}", soft_wrap=True)
    written = write_line_report(
        report, folder, f"line {line.name}: {chosen}", images=chosen, seen_surfaces=list(line.router.seen)
    )
    table = Table(title=f"line {line.name} on {data} ({chosen})")
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, value in report.metrics.items():
        if name != "confusion":  # drawn in confusion.png
            table.add_row(name, format_metric(value))
    console.print(table)
    console.print(escape(f"wrote {' and '.join(str(path) for path in written)}"))
    if report.failures:
        # Bad data exits 1, as eval and predict do: the report covers the rest.
        raise fail(f"{len(report.failures)} image(s) could not be judged (listed above)")
