"""``defectkit enroll MODEL_DIR --class NAME IMAGES...``: teach a model a defect class without training."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from defectkit.cli.errors import UsageError, fail, user_errors
from defectkit.data.io import printable_path

console = Console(highlight=False)


@user_errors
def enroll(
    model_dir: Path = typer.Argument(..., help="Saved model with a reference database (scl_arcface)."),
    images: list[str] = typer.Argument(..., help="Reference images of the class: files, folders or globs."),
    class_name: str = typer.Option(..., "--class", "-c", help="Defect class name (new or existing)."),
) -> None:
    """Add IMAGES as references of CLASS (new classes are created); `predict` uses them at once."""
    from defectkit.inference.enroll import ClassNameClash, ReferenceOfAnotherClass
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
    except ClassNameClash as error:
        raise UsageError(f"--class: {error}") from None
    except (SavedModelError, ReferenceOfAnotherClass) as error:
        raise fail(str(error)) from None
    lines = []
    folders = Counter(printable_path(path.parent) for path in found)
    if len(folders) > 1:
        # A folder argument takes every image below it: say where they came from.
        lines.append("images from " + ", ".join(f"{folder} ({n})" for folder, n in folders.items()))
    if report.already_enrolled:
        lines.append(f"skipped {report.already_enrolled} image(s) already enrolled as {report.class_name!r}")
    if report.repeated:
        lines.append(
            f"{report.repeated} image(s) repeat another given here (the same pixels): each kept once"
        )
    if report.added:
        what = "new class" if report.new_class else "class"
        onnx = " (model.onnx exported again)" if report.onnx_updated else ""
        lines.append(
            f"enrolled {report.added} image(s) as {what} {report.class_name!r}: {report.references_of_class} "
            f"reference(s); the model now knows {len(report.classes)} classes{onnx}"
        )
    else:
        lines.append(
            f"nothing added: class {report.class_name!r} keeps its {report.references_of_class} reference(s)"
        )
    for line in lines:
        console.print(escape(line), soft_wrap=True)
