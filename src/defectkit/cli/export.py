"""``defectkit export``: write a deployable copy of a saved model (ONNX) into its directory."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from defectkit.cli.errors import UsageError, fail, user_errors

console = Console(highlight=False)


@user_errors
def export(
    model_dir: Path = typer.Argument(..., help="Saved model directory (with model.yaml)."),
    format: str = typer.Option("onnx", "--format", "-f", help="Export format (onnx)."),
) -> None:
    """Export MODEL_DIR to MODEL_DIR/model.onnx, pre-processing included.

    The graph takes raw uint8 images (B x C x H x W, any batch, height and width) and
    resizes and normalises it itself, exactly as the PyTorch path does; the export
    is checked against PyTorch before it is kept. Use it with
    `defectkit predict --backend onnx` or any onnxruntime client.
    Exit status: 1 missing or broken model, 2 unknown format.
    """
    from defectkit.inference.export import FORMATS, ExportError, export_onnx_checked
    from defectkit.inference.saved_model import SavedModelError

    if format.lower() not in FORMATS:
        raise UsageError(f"--format {format!r}: supported formats are {', '.join(FORMATS)}")
    try:
        result = export_onnx_checked(model_dir)
    except (SavedModelError, ExportError) as error:
        raise fail(str(error)) from None
    size_mb = result.path.stat().st_size / 1e6
    console.print(
        escape(
            f"wrote {result.path} ({size_mb:.1f} MB); max |onnx - torch|: "
            f"score {result.max_score_diff:.1e}, heat map {result.max_heatmap_diff:.1e}"
        ),
        soft_wrap=True,
    )
