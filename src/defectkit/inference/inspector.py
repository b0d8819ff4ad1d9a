"""Inspect images with a saved model: ``load_inspector(dir).inspect(image_or_path) -> Inspection``.

An :class:`Inspector` owns the model card (thresholds, input spec, names) and one back-end that
maps a raw uint8 1xCxHxW batch to (scores, heat maps): :class:`TorchBackend` here, the
onnxruntime back-end in :mod:`defectkit.inference.onnx_backend`. Both run the same
:class:`~defectkit.inference.preprocess.Preprocess`, so their scores agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectkit.data.io import read_image
from defectkit.data.masks import mask_to_boxes
from defectkit.inference.inspection import Inspection, Region, Verdict
from defectkit.inference.preprocess import Preprocess, to_network_layout
from defectkit.inference.saved_model import ModelCard, load_model, read_card


class Backend(Protocol):
    name: str

    def run(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 1xCxHxW -> (scores B, heat maps Bx1xhxw at model resolution or None)."""
        ...


class InspectionGraph(nn.Module):
    """Pre-processing and the model in one module: what the torch back-end runs and ONNX exports."""

    def __init__(self, model: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.preprocess = Preprocess(card.input)
        self.model = model

    def forward(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        scores, heatmaps = self.model.inspect(self.preprocess(raw))  # type: ignore[operator]
        if heatmaps is None:
            heatmaps = torch.zeros(raw.shape[0], 1, 1, 1, device=raw.device)
        return scores, heatmaps


class TorchBackend:
    name = "torch"

    def __init__(self, model: nn.Module, card: ModelCard, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.graph = InspectionGraph(model, card).to(self.device).eval()

    @torch.inference_mode()
    def run(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        scores, heatmaps = self.graph(torch.from_numpy(raw).to(self.device))
        return scores.float().cpu().numpy(), heatmaps.float().cpu().numpy()


@dataclass
class Scored:
    """One image's raw outputs: score, heat map at model resolution (or None), original size."""

    score: float
    heatmap: np.ndarray | None
    size: tuple[int, int]  # height, width of the original image


class Inspector:
    """Judge images with the thresholds stored in the model; never re-chooses a threshold."""

    def __init__(self, card: ModelCard, backend: Backend, name: str) -> None:
        self.card = card
        self.backend = backend
        self.name = name

    @property
    def threshold(self) -> float:
        return self.card.thresholds.decision

    def score(self, image: np.ndarray) -> Scored:
        """Score one decoded image (uint8 HxW or HxWxC); the heat map stays at model resolution."""
        raw = to_network_layout(image, self.card.input.channels)
        scores, heatmaps = self.backend.run(raw)
        heatmap = None if heatmaps is None or heatmaps.shape[-1] == 1 else heatmaps[0, 0]
        return Scored(float(scores[0]), heatmap, (int(raw.shape[2]), int(raw.shape[3])))

    def full_size_heatmap(self, scored: Scored) -> np.ndarray | None:
        """The heat map resized (bilinear) to the original image, values in [0, 1]."""
        if scored.heatmap is None:
            return None
        tensor = torch.from_numpy(np.ascontiguousarray(scored.heatmap, dtype=np.float32))[None, None]
        return F.interpolate(tensor, size=scored.size, mode="bilinear", align_corners=False)[0, 0].numpy()

    def regions(self, heatmap: np.ndarray | None) -> list[Region]:
        if heatmap is None:
            return []
        mask = heatmap >= self.card.thresholds.pixel
        boxes, _ = mask_to_boxes(mask.astype(np.uint8))
        single_class = self.card.class_names[0] if len(self.card.class_names) == 1 else None
        found = []
        for x0, y0, x1, y1 in boxes.astype(int):
            window = heatmap[y0:y1, x0:x1]
            inside = mask[y0:y1, x0:x1]
            found.append(
                Region(
                    box=(float(x0), float(y0), float(x1), float(y1)),
                    score=float(window[inside].max()),
                    **{"class": single_class},
                    area_px=int(inside.sum()),
                )
            )
        return sorted(found, key=lambda r: -r.score)

    def inspect(self, image: np.ndarray | str | Path, name: str | None = None) -> Inspection:
        """Verdict, score, threshold and defect regions for one image (array or path)."""
        return self.inspect_with_heatmap(image, name)[0]

    def inspect_with_heatmap(
        self, image: np.ndarray | str | Path, name: str | None = None
    ) -> tuple[Inspection, np.ndarray | None]:
        """:meth:`inspect`, also returning the full-size heat map (for overlays, saved masks)."""
        label = name or (str(image) if isinstance(image, str | Path) else "<array>")
        pixels = read_image(image) if isinstance(image, str | Path) else np.asarray(image)
        started = time.perf_counter()
        scored = self.score(pixels)
        heatmap = self.full_size_heatmap(scored)
        regions = self.regions(heatmap)
        latency = (time.perf_counter() - started) * 1000.0
        verdict: Verdict = "defect" if scored.score >= self.threshold else "ok"
        single_class = self.card.class_names[0] if len(self.card.class_names) == 1 else None
        inspection = Inspection(
            image=label,
            model=self.name,
            verdict=verdict,
            score=scored.score,
            threshold=self.threshold,
            defect_class=single_class if verdict == "defect" else None,
            regions=regions if verdict == "defect" else [],
            latency_ms=latency,
        )
        return inspection, heatmap


def load_inspector(directory: str | Path, backend: str = "torch", device: str = "cpu") -> Inspector:
    """An :class:`Inspector` for the saved model in ``directory`` (``backend``: torch or onnx)."""
    directory = Path(directory)
    if backend == "onnx":
        from defectkit.inference.onnx_backend import OnnxBackend

        card = read_card(directory)
        return Inspector(card, OnnxBackend(directory), directory.name)
    if backend != "torch":
        raise ValueError(f"unknown backend {backend!r}; use torch or onnx")
    model, card = load_model(directory, device)
    return Inspector(card, TorchBackend(model, card, device), directory.name)
