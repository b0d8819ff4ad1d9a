"""``defectkit enroll MODEL_DIR --class NAME IMAGES...``: teach a model a defect class without training."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from defectkit.cli.errors import UsageError, fail, user_errors

console = Console(highlight=False)


@user_errors
def enroll(
    model_dir: Path = typer.Argument(..., help="Saved model with a reference database (scl_arcface)."),
    images: list[str] = typer.Argument(..., help="Reference images of the class: files, folders or globs."),
    class_name: str = typer.Option(..., "--class", "-c", help="Defect class name (new or existing)."),
) -> None:
    """Add IMAGES as references of CLASS (new classes are created); `predict` uses them at once."""
    from defectkit.inference.enroll import enroll as run
    from defectkit.inference.predict import collect_images
    from defectkit.inference.saved_model import SavedModelError

    if not class_name.strip():
        raise UsageError("--class: the class name is empty")
    found, failures = collect_images(images)
    if failures:
        raise UsageError("; ".join(f"{f.path}: {f.reason}" for f in failures))
    try:
        report = run(model_dir, class_name, found)
    except SavedModelError as error:
        raise fail(str(error)) from None
    what = "new class" if report.new_class else "class"
    onnx = " (model.onnx exported again)" if report.onnx_updated else ""
    console.print(
        escape(
            f"enrolled {report.added} image(s) as {what} {report.class_name!r}: {report.references_of_class} "
            f"reference(s); the model now knows {len(report.classes)} classes{onnx}"
        )
    )
