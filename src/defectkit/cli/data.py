"""``defectkit data``: check a dataset, generate a synthetic one, convert between layouts."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from defectkit.cli.errors import UsageError, fail, user_errors
from defectkit.data.check import CheckReport, check_dataset
from defectkit.files import writable_folder, write_atomic


class SynthMode(str, Enum):
    dagm = "dagm"
    multiclass = "multiclass"


class SynthLayout(str, Enum):
    dagm = "dagm"
    manifest = "manifest"


app = typer.Typer(help="Inspect, generate and convert datasets.", no_args_is_help=True)
console = Console(highlight=False)


def progress_bar(description: str) -> Progress:
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _print_report(report: CheckReport, max_problems: int) -> None:
    info = report.info
    summary = Table(title=escape(f"{info.name} ({info.format}) at {info.root}"), show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("images", str(report.n_images))
    summary.add_row("labels", ", ".join(f"{k} {v}" for k, v in sorted(report.labels.items())))
    summary.add_row("parts", str(report.parts))
    summary.add_row("label levels", ", ".join(f"{k} ({v})" for k, v in report.label_levels.items()) or "none")
    sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in report.sizes.most_common(5))
    if len(report.sizes) > 5:
        sizes += f", ... {len(report.sizes)} sizes in all"
    summary.add_row("image sizes", sizes)
    summary.add_row("boxes", str(sum(report.boxes.values())))
    summary.add_row("duplicate groups", str(len(report.duplicates)))
    console.print(summary)

    if info.class_names:
        classes = Table(title="defect classes")
        for column in ("id", "class", "images", "boxes"):
            classes.add_column(column, justify="right" if column != "class" else "left")
        for class_id, name in enumerate(info.class_names, start=1):
            classes.add_row(str(class_id), escape(name), str(report.classes[name]), str(report.boxes[name]))
        console.print(classes)
    if len(report.surfaces) > 1 or "unknown" not in report.surfaces:
        surfaces = Table(title="surfaces")
        surfaces.add_column("surface")
        surfaces.add_column("images", justify="right")
        for name, count in sorted(report.surfaces.items()):
            surfaces.add_row(escape(name), str(count))
        console.print(surfaces)

    errors, warnings = len(report.errors), len(report.problems) - len(report.errors)
    for problem in report.problems[:max_problems]:
        style = "red" if problem.severity == "error" else "yellow"
        console.print(
            f"[{style}]{problem.severity}[/]: {escape(problem.path)}: {escape(problem.reason)}",
            soft_wrap=True,
        )
    if len(report.problems) > max_problems:
        console.print(f"... {len(report.problems) - max_problems} more (raise --max-problems to see them)")
    verdict = "[green]no errors[/]" if report.ok else f"[red]{errors} error(s)[/]"
    console.print(f"{verdict}, {warnings} warning(s)")


@app.command()
@user_errors
def check(
    path: Path = typer.Argument(..., help="Dataset folder (or manifest file)."),
    format: str | None = typer.Option(None, "--format", "-f", help="Reader to use; detected when omitted."),
    max_problems: int = typer.Option(200, min=0, help="Print at most this many problems."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the report as JSON here."),
) -> None:
    """Count images, labels, classes and surfaces, decode every file and list every problem.

    Exits with status 1 when any error was found (warnings alone exit 0).
    """
    if json_out is not None:
        json_out = json_out.expanduser()
        if json_out.is_dir():
            raise UsageError(f"--json {json_out}: is a folder; give the report's file name")
        writable_folder(json_out.parent)  # before the check, not after a long pass
    with progress_bar("checking") as bar:
        task = bar.add_task("check", total=None)
        report = check_dataset(
            path, format, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    _print_report(report, max_problems)
    if json_out is not None:
        payload = {
            "dataset": report.info.name,
            "format": report.info.format,
            "root": report.info.root,
            "images": report.n_images,
            "labels": dict(report.labels),
            "classes": dict(report.classes),
            "boxes": dict(report.boxes),
            "surfaces": dict(report.surfaces),
            "parts": report.parts,
            "sizes": {f"{w}x{h}": n for (w, h), n in report.sizes.items()},
            "label_levels": report.label_levels,
            "duplicates": report.duplicates,
            "problems": [
                {"path": p.path, "reason": p.reason, "severity": p.severity} for p in report.problems
            ],
        }
        write_atomic(json_out, json.dumps(payload, indent=2) + "\n")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@user_errors
def convert(
    path: Path = typer.Argument(..., help="Dataset folder in any supported format."),
    out: Path = typer.Argument(..., help="Output: a folder, or a .csv / .jsonl manifest path."),
    to: str = typer.Option("manifest", "--to", help="Target layout (manifest)."),
    format: str | None = typer.Option(None, "--format", "-f", help="Source reader; detected when omitted."),
    force: bool = typer.Option(False, "--force", help="Replace a dataset already at OUT."),
) -> None:
    """Convert any supported dataset to the generic manifest (images stay where they are).

    OUT must not hold a dataset already (--force replaces it), nor be the manifest being read.
    Exit status: 0 every row converted; 1 some rows could not be (listed; the rest are written);
    2 bad usage.
    """
    from defectkit.data.convert import to_manifest
    from defectkit.data.formats.manifest import ManifestTargetError

    if to != "manifest":
        raise UsageError(f"--to {to!r}: only 'manifest' is supported")
    with progress_bar("converting") as bar:
        task = bar.add_task("convert", total=None)
        try:
            manifest, dataset = to_manifest(
                path,
                out,
                format,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                replace=force,
            )
        except ManifestTargetError as error:
            raise UsageError(str(error)) from None
    for problem in dataset.problems:
        console.print(
            f"[yellow]{problem.severity}[/]: {escape(problem.path)}: {escape(problem.reason)}", soft_wrap=True
        )
    console.print(escape(f"wrote {len(dataset.samples)} rows to {manifest}"))
    errors = sum(problem.severity == "error" for problem in dataset.problems)
    if errors:
        raise fail(f"{errors} row(s) or file(s) could not be converted (listed above)")


@app.command()
@user_errors
def synth(
    out: Path = typer.Argument(..., help="Output folder."),
    surfaces: int = typer.Option(10, help="Number of surfaces (Class1..ClassN)."),
    per_surface: int = typer.Option(100, "--per-surface", help="Images per surface."),
    size: int = typer.Option(512, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Same seed and options give byte-identical files."),
    mode: SynthMode = typer.Option(
        SynthMode.dagm, help="dagm: one defect type per surface; multiclass: Severstal-like."
    ),
    layout: SynthLayout = typer.Option(
        SynthLayout.dagm, help="dagm: DAGM 2007 folders; manifest: images/ + masks/ + JSONL."
    ),
    defect_fraction: float = typer.Option(0.25, "--defect-fraction", help="Share of defective images."),
    test_fraction: float = typer.Option(0.5, "--test-fraction", help="Share of each surface in Test/."),
    defect_types: int = typer.Option(
        8, "--defect-types", help="dagm mode: surface s gets defect type s mod this (1-8)."
    ),
    families: int = typer.Option(
        12, "--families", help="Surface s gets texture family s mod this (1-12); later ones are variants."
    ),
) -> None:
    """Generate a DAGM-style synthetic dataset with masks, boxes, classes and surface attributes.

    OUT must be a new or empty folder: files of another dataset (or of another synth run) beside
    the new ones would be read as one dataset.
    """
    from defectkit.data.synthetic import SynthConfig, generate

    try:
        config = SynthConfig(
            surfaces=surfaces,
            per_surface=per_surface,
            size=size,
            seed=seed,
            mode=mode.value,
            defect_fraction=defect_fraction,
            test_fraction=test_fraction,
            defect_types=defect_types,
            families=families,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    out = out.expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "holds files" if out.is_dir() else "is a file"
        raise UsageError(f"{out}: {what}; write the generated dataset to a new or empty folder")
    with progress_bar("generating") as bar:
        task = bar.add_task("synth", total=surfaces * per_surface)
        dataset = generate(
            out,
            config,
            layout=layout.value,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    defective = sum(s.label == 1 for s in dataset.samples)
    console.print(
        escape(
            f"wrote {len(dataset.samples)} images ({defective} defective) of {surfaces} surfaces, "
            f"{size}x{size}, mode {mode.value}, layout {layout.value}, to {out}"
        )
    )
