"""The onnxruntime back-end: runs ``model.onnx`` written by ``defectkit export``.

The exported graph contains the shared pre-processing, so this back-end takes exactly what
:class:`~defectkit.inference.inspector.TorchBackend` takes (raw uint8 B x C x H x W) and needs
neither torch nor the model code at run time: only onnxruntime and numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from defectkit.inference.saved_model import GRAPH_SOURCE_KEY, ONNX_NAME, SavedModelError, graph_source


def create_session(path: str | Path) -> Any:
    """An onnxruntime CPU session for ``path`` (a clear error when onnxruntime is missing)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SavedModelError(
            "onnxruntime is not installed; install defectkit[export] to use the onnx back-end"
        ) from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are noise for users
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for bad files
        raise SavedModelError(f"{path}: cannot load ONNX graph ({str(error).strip()[:200]})") from None


class OnnxBackend:
    """``run(raw uint8 BxCxHxW)`` -> the graph's outputs (as the torch back-end's), on the CPU."""

    name = "onnx"

    def __init__(self, model_dir: str | Path) -> None:
        path = Path(model_dir) / ONNX_NAME
        if not path.is_file():
            raise SavedModelError(f"{path}: not found; run `defectkit export {model_dir}` first")
        self.path = path
        self.session = create_session(path)
        # Graphs exported before the stamp existed carry none and cannot be checked.
        stamp = self.session.get_modelmeta().custom_metadata_map.get(GRAPH_SOURCE_KEY)
        if stamp is not None and stamp != graph_source(model_dir):
            raise SavedModelError(
                f"{path}: exported from other weights, references or model settings than {model_dir} "
                f"holds now; run `defectkit export {model_dir}` again (or delete {ONNX_NAME} to use torch)"
            )
        self.input_name: str = self.session.get_inputs()[0].name
        self.output_names: list[str] = [output.name for output in self.session.get_outputs()]
        # Graphs exported before the batch axis became dynamic take one image per call.
        self.batched = not isinstance(self.session.get_inputs()[0].shape[0], int)

    def run(self, raw: np.ndarray) -> tuple[np.ndarray, ...]:
        chunks = [raw] if self.batched else [raw[i : i + 1] for i in range(raw.shape[0])]
        outputs = [self._run_graph(np.ascontiguousarray(chunk)) for chunk in chunks]
        # Each output concatenated over the chunks: scores, heat maps (and a detector's anchors).
        return tuple(
            np.concatenate([np.asarray(out[i], dtype=np.float32) for out in outputs])
            for i in range(len(self.output_names))
        )

    def _run_graph(self, chunk: np.ndarray) -> list[Any]:
        try:
            outputs: list[Any] = self.session.run(self.output_names, {self.input_name: chunk})
        except Exception as error:
            # onnxruntime's own types (RuntimeException, Fail, InvalidArgument) are no RuntimeError,
            # so callers that fail one image and go on (predict, a service batch) would not catch them.
            raise RuntimeError(f"{self.path}: onnxruntime failed ({str(error).strip()[:200]})") from error
        return outputs
