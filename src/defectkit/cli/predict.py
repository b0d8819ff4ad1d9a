"""``defectkit predict``: inspect images with a saved model and write one result per image."""

from __future__ import annotations

from collections import Counter
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

from defectkit.cli.data import progress_bar
from defectkit.cli.errors import EXIT_INTERRUPTED, UsageError, fail, user_errors

if TYPE_CHECKING:
    from defectkit.inference.image_inspector import ImageInspector

console = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


class BackendName(str, Enum):
    torch = "torch"
    onnx = "onnx"


SAVE_MASKS_HELP = (
    "Also write each defect mask as <name>.mask.png (models with a heat map): class ids, 0 "
    "background, at the stored pixel threshold; empty unless the verdict is defect."
)


@user_errors
def predict(
    model_dir: Path = typer.Argument(..., help="Saved model directory (with model.yaml)."),
    paths: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) or globs."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for results."),
    backend: BackendName = typer.Option(
        BackendName.torch, help="torch, or onnx (needs `defectkit export` first)."
    ),
    save_heatmaps: bool = typer.Option(
        False, "--save-heatmaps", help="Also write each heat map as <name>.heatmap.png."
    ),
    save_masks: bool = typer.Option(False, "--save-masks", help=SAVE_MASKS_HELP),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Write <name>.png overlays."),
    explain: bool = typer.Option(
        False, "--explain", help="Defect-type classifiers: Grad-CAM of the chosen class as the heat map."
    ),
) -> None:
    """Inspect every image in PATHS with the model and thresholds stored in MODEL_DIR.

    Writes to OUT, per image: NAME.json (the inspection), NAME.png (an overlay),
    NAME.heatmap.png (with --save-heatmaps, or --explain: the Grad-CAM map), NAME.mask.png
    (with --save-masks: class ids, 0 background, at the stored pixel threshold); NAME is
    the image's file stem, with a short hash added where two images' files could share a name
    (equal stems, or x and x.mask / x.heatmap).
    summary.csv: one row per input. Run again into OUT, it lists the new run alone; results of
    images not inspected again stay, and a note says how many.

    Unreadable files, and files whose results cannot be written, are reported (one line
    each) and skipped; the rest go on. OUT must not hold input images; inside an input
    folder it is left out of the search.
    Exit status: 0 all inspected; 1 some file failed or none was inspected (after
    writing every other result); 2 bad usage.
    """
    from defectkit.inference.inspector import load_inspector
    from defectkit.inference.saved_model import SavedModelError

    try:
        inspector = load_inspector(model_dir, backend=backend.value)
        explainer = _explainer(model_dir) if explain else None
    except SavedModelError as error:
        raise fail(str(error)) from None

    write_predictions(
        inspector,
        paths,
        out,
        f"{inspector.name} [{backend.value}]",
        save_heatmaps=save_heatmaps,
        save_masks=save_masks,
        overlays=overlays,
        explainer=explainer,
    )


def write_predictions(
    inspector: ImageInspector,
    paths: list[str],
    out: Path,
    label: str,
    *,
    save_heatmaps: bool = False,
    save_masks: bool = False,
    overlays: bool = True,
    explainer: Any = None,
) -> None:
    """Inspect ``paths`` with a progress bar, report failures line by line and the verdict counts;
    exit 1 when some file failed or none was inspected (``predict`` and ``line run`` share it)."""
    from defectkit.inference.predict import SUMMARY_NAME, Failure, OutputFolderError, predict_paths

    with progress_bar("inspecting") as bar:
        task = bar.add_task("predict", total=None)

        done = 0  # images judged so far, for the message when a run is interrupted

        def advance(completed: int, total: int) -> None:
            nonlocal done
            done = completed
            bar.update(task, completed=completed, total=total)

        def report_failure(failure: Failure) -> None:
            bar.console.print(
                f"[red]failed[/]: {escape(failure.path)}: {escape(failure.reason)}", soft_wrap=True
            )

        try:
            report = predict_paths(
                inspector,
                paths,
                out,
                save_heatmaps=save_heatmaps,
                save_masks=save_masks,
                overlays=overlays,
                explainer=explainer,
                progress=advance,
                on_failure=report_failure,
            )
        except OutputFolderError as error:
            raise UsageError(str(error)) from None
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM (cli.main): predict_paths has written the summary of what was done.
            judged = (
                f"interrupted after {done} image(s); their results and {SUMMARY_NAME} are in {out}"
                if done
                else "interrupted before any image was judged"
            )
            stderr.print(escape(judged), soft_wrap=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None

    verdicts = Counter(inspection.verdict for _, inspection in report.results)
    counts = ", ".join(f"{verdicts[v]} {v}" for v in ("ok", "defect", "unknown") if verdicts[v])
    console.print(
        escape(
            f"inspected {len(report.results)} image(s) ({counts or 'none'}) with {label}; "
            f"results in {report.out}"
        ),
        soft_wrap=True,
    )
    if report.earlier:
        console.print(
            escape(
                f"note: {len(report.earlier)} result(s) of an earlier run stay in {report.out} and are not "
                f"in this run's summary.csv (e.g. {report.earlier[0]})"
            ),
            soft_wrap=True,
        )
    if not report.results:
        raise fail("no image was inspected (see the errors above)")
    if report.failures:
        failed = len(report.failures)
        stderr.print(
            f"[red]{failed} file(s) failed[/]; listed above and in {escape(str(report.summary))}",
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _explainer(model_dir: Path) -> Any:
    """Grad-CAM of the predicted class, for models that classify by references (else an error)."""
    from defectkit.inference.explain import explain_class
    from defectkit.inference.saved_model import SavedModelError, load_model

    model, card = load_model(model_dir)
    if not hasattr(model, "set_references"):
        raise SavedModelError(
            f"{model_dir}: --explain is for defect-type classifiers (scl_arcface); "
            f"model {card.model!r} already gives its own heat map"
        )

    def explain(pixels: Any, inspection: Any) -> Any:
        names = list(card.class_names)
        best = (
            max(inspection.class_scores, key=inspection.class_scores.get) if inspection.class_scores else None
        )
        return explain_class(model, card, pixels, names.index(best) if best in names else None)

    return explain
