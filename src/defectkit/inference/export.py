"""Export a saved model to ONNX: ``export_onnx(model_dir) -> model_dir / "model.onnx"``.

What is exported is :class:`~defectkit.inference.inspector.InspectionGraph`, i.e. the shared
:class:`~defectkit.inference.preprocess.Preprocess` *and* the model. The graph therefore takes the
raw uint8 images (B x C x H x W, any B, H and W) and resizes and normalises it itself, so a station
that runs only onnxruntime cannot feed the network differently from the PyTorch path.

Every export is checked before it is kept: the new graph runs under onnxruntime on two images
(one at the model's input size, one of an odd size that exercises the in-graph resize) and must
agree with PyTorch within :data:`PARITY_TOLERANCE`; otherwise nothing is written.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from defectkit.files import temporary_name
from defectkit.inference.inspector import InspectionGraph
from defectkit.inference.saved_model import (
    GRAPH_SOURCE_KEY,
    ONNX_NAME,
    SavedModelError,
    graph_source,
    load_model,
)

FORMATS = ("onnx",)
OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAMES = ("scores", "heatmaps")
DETECTION_OUTPUT_NAMES = ("anchor_scores", "anchor_boxes")  # detectors only; NMS runs in Python
# Scores are probabilities; 1e-3 is far below any decision margin, far above float32 noise.
PARITY_TOLERANCE = 1e-3
BOX_TOLERANCE = 0.05  # pixels of a decoded anchor box


class ExportError(ValueError):
    """A model that cannot be exported (or whose export does not match PyTorch); one line."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_score_diff: float
    max_heatmap_diff: float
    max_box_diff: float = 0.0


def _check_directory(model_dir: Path) -> None:
    if model_dir.exists() and not model_dir.is_dir():
        raise SavedModelError(f"{model_dir}: is a file; give the model's folder (with model.yaml)")
    if not model_dir.is_dir():
        raise SavedModelError(f"{model_dir}: no such model directory")


def export_onnx(model_dir: str | Path) -> Path:
    """Write ``model_dir/model.onnx`` (replacing any older one atomically); returns its path."""
    return export_onnx_checked(model_dir).path


def export_onnx_checked(model_dir: str | Path) -> ExportResult:
    """:func:`export_onnx`, also returning the measured torch/onnxruntime differences."""
    model_dir = Path(model_dir)
    _check_directory(model_dir)
    # Before the load: should an enrolment change the folder meanwhile, the stamp is the older
    # files' and the graph is refused at load (the safe side), never the other way round.
    source = graph_source(model_dir)
    model, card = load_model(model_dir)
    graph = InspectionGraph(model, card).eval()
    height, width = card.input.size
    channels = card.input.channels
    # The example must not have a dimension of 1 (torch.export would specialise it) and should
    # differ from the model's size, so that the traced resize is the general one. The batch axis
    # is dynamic too: the service scores micro-batches in one call.
    example = torch.randint(0, 256, (2, channels, height + 3, width + 5), dtype=torch.uint8)
    target = model_dir / ONNX_NAME
    # Unique: an export and an enrolment (which re-exports) in one folder must not share it.
    staging = temporary_name(target)
    names = list(OUTPUT_NAMES) + (list(DETECTION_OUTPUT_NAMES) if graph.detects else [])
    dynamic = {
        "raw": {
            0: torch.export.Dim("batch", min=1, max=1024),
            2: torch.export.Dim("height", min=2),
            3: torch.export.Dim("width", min=2),
        }
    }
    try:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not for users
                torch.onnx.export(
                    graph,
                    (example,),
                    str(staging),
                    input_names=[INPUT_NAME],
                    output_names=names,
                    opset_version=OPSET,
                    dynamo=True,
                    dynamic_shapes=dynamic,
                    external_data=False,  # one file, so the rename below is the whole write
                    verbose=False,
                )
            _stamp_source(staging, source)
            score_diff, heatmap_diff, box_diff = _parity(graph, staging, channels, (height, width), names)
        except ExportError:
            raise
        except Exception as error:
            raise ExportError(
                f"{model_dir}: ONNX export of model {card.model!r} failed ({_root_cause(error)})"
            ) from error
        if score_diff > PARITY_TOLERANCE or heatmap_diff > PARITY_TOLERANCE or box_diff > BOX_TOLERANCE:
            raise ExportError(
                f"{model_dir}: exported graph disagrees with PyTorch (max score diff {score_diff:.2e}, "
                f"heat map {heatmap_diff:.2e} > {PARITY_TOLERANCE:g}, box {box_diff:.2e} px > "
                f"{BOX_TOLERANCE:g}); nothing written"
            )
        os.replace(staging, target)
    finally:
        # Whatever stopped it (a failed check, Ctrl-C, SIGTERM): no hidden half-graph is left,
        # which a later save_model would otherwise carry into a new model folder.
        staging.unlink(missing_ok=True)
    return ExportResult(target, score_diff, heatmap_diff, box_diff)


def _stamp_source(graph_path: Path, source: str) -> None:
    """Stamp the graph with what it was exported from (:func:`graph_source`), so the onnx back-end
    can refuse it once the folder's weights or references change without a new export."""
    import onnx

    proto = onnx.load(str(graph_path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = GRAPH_SOURCE_KEY, source
    onnx.save(proto, str(graph_path))


def _parity(
    graph: InspectionGraph, onnx_path: Path, channels: int, size: tuple[int, int], names: list[str]
) -> tuple[float, float, float]:
    """Largest |torch - onnxruntime| of scores (class and anchor probabilities), heat maps and
    decoded boxes on deterministic batches of 1 and 3."""
    from defectkit.inference.onnx_backend import create_session

    session = create_session(onnx_path)
    rng = np.random.default_rng(0)
    diffs = {"scores": 0.0, "heatmaps": 0.0, "anchor_scores": 0.0, "anchor_boxes": 0.0}
    for batch, (height, width) in ((1, size), (3, (size[0] * 2 + 7, size[1] + 13))):
        raw = rng.integers(0, 256, (batch, channels, height, width), dtype=np.uint8)
        with torch.no_grad():
            ours = graph(torch.from_numpy(raw))
        theirs = session.run(names, {INPUT_NAME: raw})
        for name, mine, exported in zip(names, ours, theirs, strict=True):
            diffs[name] = max(diffs[name], _largest_difference(mine.numpy(), exported))
    return max(diffs["scores"], diffs["anchor_scores"]), diffs["heatmaps"], diffs["anchor_boxes"]


def _largest_difference(expected: np.ndarray, got: np.ndarray) -> float:
    """max |expected - got|, where equal values (-inf for a class with no references) differ by 0
    and a NaN or an infinity on one side only by inf: NaN must never pass a comparison unseen."""
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, made inf below
        difference = np.where(expected == got, 0.0, np.abs(expected.astype(np.float64) - got))
    return float(np.nan_to_num(difference, nan=np.inf, posinf=np.inf).max(initial=0.0))


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost chained error: torch.export wraps the model's own message
    (an input size it refuses, say) in pages of generic advice."""
    outer, seen = type(error).__name__, {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    text = str(error).strip()
    inner = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
    return inner if type(error).__name__ == outer else f"{outer} <- {inner}"
