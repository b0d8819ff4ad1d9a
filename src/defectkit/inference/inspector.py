"""Inspect images with a saved model: ``load_inspector(dir).inspect(image_or_path) -> Inspection``.

An :class:`Inspector` owns the model card (thresholds, input spec, names) and one back-end that
maps a raw uint8 BxCxHxW batch to (scores, heat maps): :class:`TorchBackend` here, the
onnxruntime back-end in :mod:`defectkit.inference.onnx_backend`. Both run the same
:class:`~defectkit.inference.preprocess.Preprocess`, so their scores agree.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectkit import __version__
from defectkit.data.masks import connected_regions
from defectkit.inference.image_inspector import ImageInspector, Judged
from defectkit.inference.inspection import Inspection, Region, Verdict
from defectkit.inference.preprocess import Preprocess, to_network_layout
from defectkit.inference.saved_model import (
    ONNX_NAME,
    ModelCard,
    SavedModelError,
    load_model,
    model_identity,
    read_card,
)
from defectkit.metrics.thresholds import rescaled_to_half
from defectkit.models.aux_net.detection import DecodeConfig, Detections, select_detections


class NonFiniteScoreError(ValueError):
    """The model gave a NaN (or infinite) score: never a verdict. A ValueError, as bad content is,
    so that batch callers (predict, eval) fail that image and go on, and the CLI says it in a line."""


class Backend(Protocol):
    name: str

    def run(self, raw: np.ndarray) -> tuple[np.ndarray, ...]:
        """uint8 BxCxHxW -> the graph's outputs: scores (B, or B x K class scores), heat maps
        (B x 1 x h x w, or B x K x h x w per-class maps, at model resolution; B x 1 x 1 x 1 when
        the model has none) and, for detectors, every anchor's class probabilities (B x A x K) and
        decoded box (B x A x 4, in model-input pixels)."""
        ...


class InspectionGraph(nn.Module):
    """Pre-processing and the model in one module: what the torch back-end runs and ONNX exports.

    A detector (a model whose ``detects`` is true, with ``inspect_detections``) adds its
    per-anchor outputs; the graph ends there and the Inspector does thresholding and NMS in Python.
    """

    def __init__(self, model: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.preprocess = Preprocess(card.input)
        self.model = model
        self.detects = bool(getattr(model, "detects", False))

    def forward(self, raw: Tensor) -> tuple[Tensor, ...]:
        images = self.preprocess(raw)
        if self.detects:
            return tuple(self.model.inspect_detections(images))  # type: ignore[operator]
        scores, heatmaps = self.model.inspect(images)  # type: ignore[operator]
        if heatmaps is None:
            heatmaps = torch.zeros(raw.shape[0], 1, 1, 1, device=raw.device)
        return scores, heatmaps


class TorchBackend:
    name = "torch"

    def __init__(self, model: nn.Module, card: ModelCard, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.graph = InspectionGraph(model, card).to(self.device).eval()

    @torch.inference_mode()
    def run(self, raw: np.ndarray) -> tuple[np.ndarray, ...]:
        with full_float32(self.device):
            outputs = self.graph(torch.from_numpy(raw).to(self.device))
            return tuple(output.float().cpu().numpy() for output in outputs)


# TF32 switches are process-wide: threads inspecting at once (one per camera) share one save.
_TF32_LOCK = threading.Lock()
_tf32_users = 0
_tf32_saved: tuple[bool, bool] = (False, False)


@contextmanager
def full_float32(device: torch.device) -> Iterator[None]:
    """Full float32 arithmetic on a CUDA device for the duration (TF32 off), so that thresholds
    calibrated on a GPU hold where the model is deployed, usually the CPU; a no-op elsewhere.

    The switches are process-wide, so overlapping calls from several threads count themselves:
    the first saves the caller's values and the last puts them back. Each restoring its own
    save would turn TF32 on under another thread's forward pass, and leave the wrong value."""
    global _tf32_users, _tf32_saved
    if device.type != "cuda":
        yield
        return
    with _TF32_LOCK:
        if _tf32_users == 0:
            _tf32_saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        _tf32_users += 1
    try:
        yield
    finally:
        with _TF32_LOCK:
            _tf32_users -= 1
            if _tf32_users == 0:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = _tf32_saved


@dataclass
class Scored:
    """One image's raw outputs: score, heat map at model resolution (or None), original size.

    A classification model (a reference database, or a multi-label model) gives ``class_scores``
    (one per class name) and its best class score as ``score`` (rescaled first where the classes
    have thresholds of their own, :meth:`Inspector.image_score`). A model with one heat map per
    class gives them as ``class_heatmaps`` (K x h x w); ``heatmap`` is then their pixel-wise
    maximum, the defect map of any class.
    """

    score: float
    heatmap: np.ndarray | None
    size: tuple[int, int]  # height, width of the original image
    class_scores: np.ndarray | None = None
    class_heatmaps: np.ndarray | None = None
    detections: Detections | None = None  # a detector's boxes, in original-image pixels


class Inspector(ImageInspector[Scored]):
    """Judge images with the thresholds stored in the model; never re-chooses a threshold."""

    def __init__(self, card: ModelCard, backend: Backend, name: str) -> None:
        self.card = card
        self.backend = backend
        self.name = name

    @property
    def threshold(self) -> float:
        return self.card.thresholds.decision

    @property
    def class_thresholds(self) -> np.ndarray:
        """One threshold per class name: the stored per-class ones (multi-label models), else
        the decision threshold for every class."""
        per_class = self.card.thresholds.per_class or {}
        decision = self.card.thresholds.decision
        # A model saved without class names scores one class, as score_multilabel names it.
        names = self.card.class_names or ["defect"]
        return np.array([per_class.get(name, decision) for name in names], dtype=np.float64)

    def image_score(self, class_scores: np.ndarray) -> float:
        """The image score of a model with class scores: the best one, rescaled first where
        the classes have thresholds of their own (:func:`rescaled_to_half`)."""
        if self.card.thresholds.per_class is None:
            return float(class_scores.max())
        return float(rescaled_to_half(class_scores, self.class_thresholds[: class_scores.shape[-1]]).max())

    def pixel_threshold_of(self, inspection: Inspection) -> float:
        """The heat-map threshold ``inspection``'s regions were traced at (overlays draw it)."""
        return self.card.thresholds.pixel

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def names_defect_types(self) -> bool:
        """A defect-type classifier (class similarities and an ``unknown`` threshold, no OK/NG
        decision): a line's classifier, never its detector."""
        return self.card.thresholds.unknown is not None

    @property
    def scores_defect_types(self) -> bool:
        """Whether the model says which defect types an image shows: a reference classifier, or a
        multi-label model of several classes (which also gives an OK/NG decision)."""
        return self.names_defect_types or (self.card.multilabel and len(self.card.class_names) > 1)

    def describe(self) -> dict[str, object]:
        card = self.card
        return {
            "name": self.name,
            "method": card.method,
            "model": card.model,
            "backend": self.backend_name,
            "thresholds": card.thresholds.model_dump(),
            "class_names": list(card.class_names),
            "input": card.input.model_dump(mode="json"),
            "version": {
                "defectkit": __version__,
                "trained_with": card.defectkit_version,
                "commit": card.commit,
            },
            "created": card.created,
        }

    def _judge_class(self, scored: Scored, label: str) -> Inspection:
        """A defect-type classifier: the best class, or ``unknown`` when even it is too dissimilar.

        Scores are mean cosine similarities; the stored ``unknown`` threshold is on the
        out-of-distribution score ``1 - best similarity`` (DESIGN.md: OOD score >= unknown ->
        unknown), so the Inspection's threshold is the similarity ``1 - unknown`` it was judged by.
        """
        assert scored.class_scores is not None
        names = self.card.class_names
        best = int(np.argmax(scored.class_scores))
        similarity = float(scored.class_scores[best])
        unknown = self.card.thresholds.unknown
        threshold = -1.0 if unknown is None else 1.0 - unknown
        verdict: Verdict = "unknown" if similarity < threshold else "defect"
        finite = {n: float(v) for n, v in zip(names, scored.class_scores, strict=False) if np.isfinite(v)}
        return Inspection(
            image=label,
            model=self.name,
            verdict=verdict,
            score=min(1.0, max(0.0, similarity)),
            threshold=min(1.0, max(0.0, threshold)),
            defect_class=names[best] if verdict == "defect" and best < len(names) else None,
            class_scores=finite,
            latency_ms=0.0,
        )

    def score(self, image: np.ndarray) -> Scored:
        """Score one decoded image (uint8 HxW or HxWxC); the heat map stays at model resolution."""
        return self.score_batch([image])[0]

    def score_batch(self, images: Sequence[np.ndarray]) -> list[Scored]:
        """Score several decoded images with as few back-end calls as their sizes allow.

        Images of one size share a call (the graph resizes inside, so a batch must be uniform);
        results come back in input order.
        """
        raws = [to_network_layout(image, self.card.input.channels) for image in images]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for index, raw in enumerate(raws):
            by_size.setdefault(raw.shape, []).append(index)
        scored: dict[int, Scored] = {}
        for indices in by_size.values():
            scores, heatmaps, *anchor_outputs = self.backend.run(np.concatenate([raws[i] for i in indices]))
            for row, index in enumerate(indices):
                heatmap = per_class = None
                if heatmaps is not None and heatmaps.shape[-1] > 1:
                    per_class = heatmaps[row] if heatmaps.shape[1] > 1 else None
                    heatmap = per_class.max(axis=0) if per_class is not None else heatmaps[row, 0]
                size = (int(raws[index].shape[2]), int(raws[index].shape[3]))
                if scores.ndim == 2:  # B x C: class scores of a classification model
                    score = self.image_score(scores[row])
                    scored[index] = Scored(score, heatmap, size, scores[row], per_class)
                else:
                    scored[index] = Scored(float(scores[row]), heatmap, size)
                if anchor_outputs:
                    anchor_scores, anchor_boxes = anchor_outputs
                    scored[index].detections = self._detections(anchor_scores[row], anchor_boxes[row], size)
        return [scored[index] for index in range(len(raws))]

    def _detections(
        self, anchor_scores: np.ndarray, anchor_boxes: np.ndarray, size: tuple[int, int]
    ) -> Detections:
        """Thresholding, top-k and NMS of one image's anchors, boxes scaled to the original image."""
        # Candidates down to the decoder's 0.05, or to the box threshold when that is lower.
        box = self.card.thresholds.box if self.card.thresholds.box is not None else 0.5
        # The trained model's decoding options (aux_net's method_options), else the decoder's own.
        options = dict((self.card.config or {}).get("method_options") or {})
        config = DecodeConfig(
            score_threshold=min(DecodeConfig.score_threshold, box),
            nms_iou=float(options.get("nms_iou", DecodeConfig.nms_iou)),
            top_k=int(options.get("top_k", DecodeConfig.top_k)),
            max_detections=int(options.get("max_detections", DecodeConfig.max_detections)),
        )
        found = select_detections(torch.from_numpy(anchor_scores), torch.from_numpy(anchor_boxes), config)
        height, width = self.card.input.size
        scale = torch.tensor([size[1] / width, size[0] / height] * 2)
        return Detections(found.boxes * scale, found.scores, found.labels)

    def box_regions(self, detections: Detections) -> list[Region]:
        """A detector's boxes scoring at least the ``box`` threshold, as regions, best first."""
        names = self.card.class_names
        threshold = self.card.thresholds.box if self.card.thresholds.box is not None else 0.5
        regions = []
        for box, score, label in zip(detections.boxes.tolist(), detections.scores.tolist(),
                                     detections.labels.tolist(), strict=True):  # fmt: skip
            if score < threshold:
                continue
            x0, y0, x1, y1 = box
            name = names[label - 1] if 0 < label <= len(names) else str(label)
            area = max(0, round((x1 - x0) * (y1 - y0)))
            regions.append(Region(box=(x0, y0, x1, y1), score=score, **{"class": name}, area_px=area))
        return sorted(regions, key=lambda r: -r.score)

    def full_size_heatmap(self, scored: Scored) -> np.ndarray | None:
        """The heat map resized (bilinear) to the original image, values in [0, 1]."""
        return None if scored.heatmap is None else _resize(scored.heatmap, scored.size)

    def display_heatmap(self, scored: Scored) -> np.ndarray | None:
        """What overlays draw: the per-class maps (K x H x W) of a multi-label model, else the
        heat map, at the original image's size."""
        if self.card.multilabel and scored.class_heatmaps is not None:
            return _resize(scored.class_heatmaps, scored.size)
        return self.full_size_heatmap(scored)

    def regions(self, heatmap: np.ndarray | None, class_name: str | None = None) -> list[Region]:
        """Connected regions of ``heatmap`` (H x W) at the pixel threshold; a K x H x W stack of
        per-class maps gives each class's regions, named, strongest first."""
        if heatmap is None:
            return []
        if heatmap.ndim == 3:
            names = self.card.class_names
            found = [
                region
                for k in range(heatmap.shape[0])
                for region in self.regions(heatmap[k], names[k] if k < len(names) else str(k + 1))
            ]
            return sorted(found, key=lambda r: -r.score)
        single_class = self.card.class_names[0] if len(self.card.class_names) == 1 else None
        single_class = class_name or single_class
        found = []
        # Score and area from the region's own pixels: another region may reach into its box.
        for (rows, cols), pixels in connected_regions(heatmap >= self.card.thresholds.pixel):
            found.append(
                Region(
                    box=(float(cols.start), float(rows.start), float(cols.stop), float(rows.stop)),
                    score=float(heatmap[rows, cols][pixels].max()),
                    **{"class": single_class},
                    area_px=int(pixels.sum()),
                )
            )
        return sorted(found, key=lambda r: -r.score)

    def judge(self, scored: Scored, label: str) -> Judged:
        """The Inspection of one scored image and its full-size heat map (``latency_ms`` left 0).

        Apart from :meth:`score_batch` so a service can score on one thread and judge on others.
        Regions are traced only for a defect verdict: an OK part reports none. A multi-label
        model's heat map is its K x H x W per-class stack (:meth:`display_heatmap`).
        """
        heatmap = self.display_heatmap(scored)
        return self._judge(scored, label, heatmap), heatmap

    def _judge_multilabel(self, scored: Scored, label: str, heatmap: np.ndarray | None) -> Inspection:
        """Independent class probabilities: defect when any reaches its class threshold
        (:attr:`class_thresholds`); the defect class is the most probable one, or with per-class
        thresholds the one furthest above its own (softmax models: always the most probable;
        their thresholds are fixed, never per class). Regions come from each class's own map, for
        the classes called present only (a mask of a class the classifier rejects is not
        reported)."""
        assert scored.class_scores is not None
        names = self.card.class_names
        thresholds = self.class_thresholds[: len(scored.class_scores)]
        ranked = scored.class_scores
        if self.card.thresholds.per_class is not None:
            ranked = rescaled_to_half(ranked, thresholds)
        best = int(np.argmax(ranked))
        options = self.card.model_options
        if options.get("class_activation") == "softmax" and options.get("image_score") != "mask_peak":
            # Exclusive classes cannot say "no defect": the model was trained on images with
            # exactly one class each, so its best class is the call (mask peaks are not exclusive).
            verdict: Verdict = "defect"
            called = {names[best]} if best < len(names) else set()
        else:
            verdict = "defect" if scored.score >= self.threshold else "ok"
            present = scored.class_scores >= thresholds
            called = {n for n, p in zip(names, present, strict=False) if p}
        per_class = self.card.thresholds.per_class
        class_thresholds = None
        if per_class is not None:
            class_thresholds = dict(zip(names, thresholds.tolist(), strict=False))
        return Inspection(
            image=label,
            model=self.name,
            verdict=verdict,
            score=scored.score,
            threshold=self.threshold,
            defect_class=names[best] if verdict == "defect" and best < len(names) else None,
            class_scores={n: float(v) for n, v in zip(names, scored.class_scores, strict=False)},
            class_thresholds=class_thresholds,
            regions=self._multilabel_regions(scored, heatmap, called) if verdict == "defect" else [],
            latency_ms=0.0,
        )

    def _multilabel_regions(
        self, scored: Scored, heatmap: np.ndarray | None, called: set[str]
    ) -> list[Region]:
        """A detector's boxes; else the regions of the called classes' masks."""
        if scored.detections is not None:
            return self.box_regions(scored.detections)
        return [r for r in self.regions(heatmap) if r.class_ in called]

    def _judge(self, scored: Scored, label: str, heatmap: np.ndarray | None) -> Inspection:
        classes = [] if scored.class_scores is None else [float(v) for v in scored.class_scores]
        # NaN fails every comparison, so it would be judged ok (or, for a reference database, a
        # class). A class without references scores -inf by design; any other score must be finite.
        if any(math.isnan(v) for v in [scored.score, *classes]) or (not classes and math.isinf(scored.score)):
            raise NonFiniteScoreError(
                f"{self.name}: the model scored {label} {scored.score} (class scores {classes or 'none'}); "
                "a non-finite score is never judged (a diverged or damaged model?)"
            )
        if scored.class_scores is not None and self.card.multilabel:
            return self._judge_multilabel(scored, label, heatmap)
        if scored.class_scores is not None:
            if not self.names_defect_types:
                # Judged as a reference classifier with no unknown threshold, every part would be
                # some defect class: a hand-written card that left out `multilabel: true`.
                raise SavedModelError(
                    f"{self.name}: the model gives class scores, but its model card says neither "
                    "`multilabel: true` (a multi-label model) nor `thresholds.unknown` (a reference "
                    "classifier); it cannot be judged"
                )
            return self._judge_class(scored, label)
        verdict: Verdict = "defect" if scored.score >= self.threshold else "ok"
        regions = self.regions(heatmap) if verdict == "defect" else []
        single_class = self.card.class_names[0] if len(self.card.class_names) == 1 else None
        return Inspection(
            image=label,
            model=self.name,
            verdict=verdict,
            score=scored.score,
            threshold=self.threshold,
            defect_class=single_class if verdict == "defect" else None,
            regions=regions,
            latency_ms=0.0,
        )


def _resize(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An h x w or K x h x w map, bilinearly resized to ``size`` (height, width)."""
    tensor = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32))
    stack = tensor[None] if tensor.ndim == 3 else tensor[None, None]
    resized = F.interpolate(stack, size=size, mode="bilinear", align_corners=False)[0].numpy()
    return resized if heatmap.ndim == 3 else resized[0]


def inference_device(accelerator: str = "auto") -> str:
    """Where training's threshold calibration and a bench's scoring run: a CUDA GPU when the config's
    ``trainer.accelerator`` lets Lightning train on one and one is present, else the CPU (Apple's
    MPS included: it is not used for scoring).

    A full-resolution model (segdec at 1408x512: about 0.5 TFLOP per image) scores in minutes on a
    GPU and in hours on CPU cores. The GPU scores in full float32 (:func:`full_float32`), so the
    thresholds it calibrates hold on a CPU deployment too.
    """
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def checked_device(device: str) -> str:
    """``device`` (normalised) when torch can run here, else a ``ValueError`` naming it: a bad device
    found only while the weights load would be blamed on the weights file."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r}: inspection runs on cpu, cuda or mps")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: no Apple GPU (MPS) is available here")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA GPU is available here")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return "cpu" if parsed.type == "cpu" else str(parsed)  # safetensors reads "cpu", not "cpu:0"


def load_inspector(directory: str | Path, backend: str = "torch", device: str = "cpu") -> Inspector:
    """An :class:`Inspector` for the saved model in ``directory`` (``backend``: torch, onnx, or
    auto: onnx when the model has been exported and ``device`` is the CPU, else torch)."""
    directory = Path(directory).expanduser()
    device = checked_device(device)
    on_cpu = device == "cpu"
    if backend == "auto":
        # The onnx back-end runs on the CPU: a GPU asked for is torch's.
        backend = "onnx" if (directory / ONNX_NAME).is_file() and on_cpu else "torch"
    if backend == "onnx" and not on_cpu:
        raise ValueError(f"the onnx back-end runs on the CPU, not {device!r}; use backend torch for a GPU")
    if read_card(directory).model == "sbad_router":
        raise SavedModelError(
            f"{directory}: a surface router judges no defects; put it in a line "
            "(defectkit line run, defectkit.inference.line.load_line)"
        )
    if backend == "onnx":
        from defectkit.inference.onnx_backend import OnnxBackend

        card = read_card(directory)
        return Inspector(card, OnnxBackend(directory), model_identity(directory))
    if backend != "torch":
        raise ValueError(f"unknown backend {backend!r}; use torch, onnx or auto")
    model, card = load_model(directory, device)
    return Inspector(card, TorchBackend(model, card, device), model_identity(directory))
