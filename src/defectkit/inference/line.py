"""The inspection line (paper 002): route each image to its surface's detector, or raise an alert.

A line directory holds ``line.yaml`` (:class:`LineSpec`) naming, relative to it or absolute,

* ``router``: a saved ``sbad`` surface router (:class:`~defectkit.models.sbad.SurfaceRouterNet`);
* ``detectors``: ``{surface: saved model}``, one per seen surface; any method whose model gives
  an OK/NG decision (``segdec``, ``weak_lnet``, ...);
* ``classifier`` (optional): a saved defect-type classifier, asked only about defective parts.

:meth:`Line.inspect` gives one :class:`~defectkit.inference.inspection.Inspection` per image:

* the router's unseen score at or above its stored ``unknown`` threshold -> verdict ``unknown``,
  ``surface`` null, with the router's reconstructed attribute vector (``attribute_vector``) and
  its strongest ``attributes_top`` in words for the operator; no defect judgement is made
  (``score`` 0, ``threshold`` 1: nothing was compared; ``summary.csv`` leaves both blank);
* a seen surface without a detector in ``line.yaml`` -> ``unknown`` too, with that surface's name
  and no attributes (nothing may judge it, but it is not new);
* otherwise the routed surface's detector judges it with its own stored thresholds; the
  Inspection carries ``surface``, ``surface_score`` (the router's probability of that surface) and
  the unseen score.

:func:`cascade_verdict` is that rule alone, shared with the ``dagm-mix/line`` benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from defectkit import __version__
from defectkit.config import read_yaml, validation_problems
from defectkit.data.attributes import describe
from defectkit.files import write_atomic
from defectkit.inference.image_inspector import ImageInspector, Judged
from defectkit.inference.inspection import Inspection, Verdict
from defectkit.inference.inspector import Inspector, NonFiniteScoreError, Scored, load_inspector
from defectkit.inference.preprocess import Preprocess, to_network_layout
from defectkit.inference.saved_model import LINE_FILE, ModelCard, SavedModelError, load_model, model_identity
from defectkit.models.sbad import SurfaceRouterNet


class LineSpec(BaseModel):
    """Contents of ``line.yaml``."""

    model_config = ConfigDict(extra="forbid")

    router: str = Field(description="saved sbad router directory")
    detectors: dict[str, str] = Field(description="surface name -> saved detector directory")
    classifier: str | None = Field(None, description="saved defect-type classifier (optional)")
    attributes_top: int = Field(3, ge=1, description="attributes in words on an unknown")


@dataclass(frozen=True)
class Route:
    """Where the router sends one image."""

    surface: str  # the best seen surface
    surface_score: float  # its probability among every surface the router knows
    unseen_score: float
    unknown: bool
    attributes: np.ndarray  # the router's reconstruction of the image's attribute vector


@dataclass(frozen=True)
class LineScored:
    """One image's route and, when a detector may judge it, that detector's raw outputs; the
    pixels stay for the defect-type classifier, asked only when the verdict is a defect."""

    route: Route
    detector_scored: Scored | None  # None: an unseen surface, or one without a detector
    image: np.ndarray


def cascade_verdict(unknown: bool, has_detector: bool, score: float, threshold: float) -> Verdict:
    """The line's verdict: unknown surfaces go to a person, else the detector's decision."""
    if unknown or not has_detector:
        return "unknown"
    return "defect" if score >= threshold else "ok"


class SurfaceRouting:
    """A loaded surface router: images -> :class:`Route` (thresholds from its model card)."""

    def __init__(self, network: SurfaceRouterNet, card: ModelCard) -> None:
        if card.thresholds.unknown is None:
            raise SavedModelError(f"router {card.model!r} has no unknown threshold in its model card")
        self.network = network.eval()
        self.card = card
        self.preprocess = Preprocess(card.input)
        self.threshold = float(card.thresholds.unknown)
        n_seen = network.router.n_seen
        if len(card.surface_names) < n_seen:
            raise SavedModelError(
                f"router {card.model!r} routes to {n_seen} seen surfaces but its model card names "
                f"{len(card.surface_names)}: {card.surface_names}"
            )
        self.seen = list(card.surface_names[:n_seen])

    @torch.inference_mode()
    def route_batch(self, images: Sequence[np.ndarray]) -> list[Route]:
        if not images:
            return []
        batch = torch.cat(
            [self.preprocess(torch.from_numpy(to_network_layout(image, 3))) for image in images]
        )
        output = self.network(batch)
        probabilities = torch.softmax(output.logits, dim=1)
        routes = []
        for row in range(len(images)):
            seen_class = int(output.seen_class[row])
            unseen = float(output.unseen_score[row])
            routes.append(
                Route(
                    surface=self.seen[seen_class],
                    surface_score=float(probabilities[row, seen_class]),
                    unseen_score=unseen,
                    unknown=unseen >= self.threshold,
                    attributes=output.attributes[row].numpy(),
                )
            )
        return routes

    def describe(self, route: Route, top: int = 3) -> list[str]:
        """The strongest reconstructed attributes in words. With learned class embeddings (the
        default) they live in the learned space, near the table's 0..1 scale but not on it: shown
        clipped to [0, 1]."""
        strengths = np.clip(route.attributes, 0.0, 1.0).tolist()
        return describe(strengths, self.network.attribute_names, top)


def load_router(directory: str | Path) -> SurfaceRouting:
    network, card = load_model(directory)
    if not isinstance(network, SurfaceRouterNet):
        raise SavedModelError(f"{directory}: model {card.model!r} is not a surface router (method sbad)")
    return SurfaceRouting(network, card)


class Line(ImageInspector[LineScored]):
    """Router + per-surface detectors (+ classifier): one Inspection per image."""

    def __init__(
        self,
        router: SurfaceRouting,
        detectors: dict[str, Inspector],
        classifier: Inspector | None = None,
        name: str = "line",
        attributes_top: int = 3,
    ) -> None:
        self.router = router
        self.detectors = detectors
        self.classifier = classifier
        self.name = name
        self.attributes_top = attributes_top

    def pixel_threshold_of(self, inspection: Inspection) -> float:
        detector = self.detectors.get(inspection.surface or "")
        return detector.card.thresholds.pixel if detector is not None else 0.5

    @property
    def backend_name(self) -> str:
        """``line/`` and its detectors' (and classifier's) back-ends: the router runs on torch."""
        models = [*self.detectors.values(), *([self.classifier] if self.classifier else [])]
        return "line/" + "+".join(sorted({m.backend_name for m in models}) or ["torch"])

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "method": "line",
            "model": "line",
            "backend": self.backend_name,
            # The line's own threshold: the router's unseen alert; each detector keeps its own.
            "thresholds": {"unknown": self.router.threshold},
            "surfaces": list(self.router.seen),
            "detectors": {surface: d.name for surface, d in sorted(self.detectors.items())},
            "classifier": None if self.classifier is None else self.classifier.name,
            "version": {"defectkit": __version__},
        }

    def score_batch(self, images: Sequence[np.ndarray]) -> list[LineScored]:
        """Route all images together, then each detector scores its surface's images together."""
        routes = self.router.route_batch(images)
        scored: list[Scored | None] = [None] * len(images)
        by_surface: dict[str, list[int]] = {}
        for index, route in enumerate(routes):
            if not route.unknown and route.surface in self.detectors:
                by_surface.setdefault(route.surface, []).append(index)
        for surface, indices in by_surface.items():
            outputs = self.detectors[surface].score_batch([images[i] for i in indices])
            for index, output in zip(indices, outputs, strict=True):
                scored[index] = output
        return [LineScored(*parts) for parts in zip(routes, scored, images, strict=True)]

    def judge(self, scored: LineScored, label: str) -> Judged:
        """The routed detector's judgement (asking the classifier the type of a defect), or an
        unknown; ``latency_ms`` left 0."""
        route = scored.route
        if not (math.isfinite(route.unseen_score) and math.isfinite(route.surface_score)):
            # NaN compares false with the alert threshold and argmax takes the first surface:
            # judged on, the image would go to a detector picked by nothing.
            raise NonFiniteScoreError(
                f"the surface router gave a non-finite score (unseen {route.unseen_score}, "
                f"surface {route.surface_score})"
            )
        if scored.detector_scored is None:
            return self._unknown(route, label), None
        surface = route.surface
        inspection, heatmap = self.detectors[surface].judge(scored.detector_scored, label)
        update = {
            "model": f"{self.name}/{surface}",
            "surface": surface,
            "surface_score": route.surface_score,
            "unseen_score": route.unseen_score,
            "unseen_threshold": self.router.threshold,
        }
        if inspection.verdict == "defect" and self.classifier is not None:
            typed = self.classifier.inspect(scored.image, label)
            update["defect_class"] = typed.defect_class
            update["class_scores"] = typed.class_scores
        return inspection.model_copy(update=update), heatmap

    def display_heatmap(self, scored: LineScored) -> np.ndarray | None:
        if scored.detector_scored is None:
            return None
        return self.detectors[scored.route.surface].display_heatmap(scored.detector_scored)

    def _unknown(self, route: Route, label: str) -> Inspection:
        """An unseen surface: no surface name, its attributes in words. A seen surface that the
        line has no detector for: its name and score, no attributes (it is not new)."""
        return Inspection(
            image=label,
            model=f"{self.name}/router",
            verdict="unknown",
            score=0.0,
            threshold=1.0,
            surface=None if route.unknown else route.surface,
            surface_score=None if route.unknown else route.surface_score,
            unseen_score=route.unseen_score,
            unseen_threshold=self.router.threshold,
            attributes=self.router.describe(route, self.attributes_top) if route.unknown else [],
            attribute_vector=[float(v) for v in route.attributes] if route.unknown else None,
            latency_ms=0.0,
        )


def read_line_spec(directory: str | Path) -> LineSpec:
    path = Path(directory) / LINE_FILE
    if not path.is_file():
        raise SavedModelError(f"{path}: not found ({directory} is not a defectkit line)")
    try:
        return LineSpec.model_validate(read_yaml(path, SavedModelError))
    except ValidationError as error:
        raise SavedModelError(f"{path}: {validation_problems(error)}") from None


def load_line(directory: str | Path, backend: str = "torch") -> Line:
    """The line described by ``directory/line.yaml`` (paths in it relative to ``directory``);
    ``backend`` (torch, onnx or auto) runs its detectors and classifier, the router runs on torch."""
    directory = Path(directory).expanduser()
    spec = read_line_spec(directory)

    def resolve(path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else directory / candidate

    where = directory / LINE_FILE
    try:
        router = load_router(resolve(spec.router))
    except SavedModelError as error:
        raise SavedModelError(f"{where}: router: {error}") from None
    unused = sorted(set(spec.detectors) - set(router.seen))
    if unused:
        raise SavedModelError(
            f"{where}: detectors for surfaces the router never routes to: {unused} "
            f"(its seen surfaces: {router.seen})"
        )
    detectors = {}
    for surface, path in spec.detectors.items():
        try:
            detectors[surface] = load_inspector(resolve(path), backend=backend)
        except SavedModelError as error:
            raise SavedModelError(f"{where}: detectors.{surface}: {error}") from None
        trained_on = (detectors[surface].card.config.get("data") or {}).get("surface")
        if trained_on and trained_on != surface:
            raise SavedModelError(
                f"{where}: detectors.{surface}: {path} was trained on surface {trained_on!r}, not {surface!r}"
            )
        if detectors[surface].names_defect_types:
            raise SavedModelError(
                f"{where}: detectors.{surface}: {path} names defect types and gives no OK/NG "
                "decision; a detector needs one (list it as the classifier)"
            )
    try:
        classifier = load_inspector(resolve(spec.classifier), backend=backend) if spec.classifier else None
    except SavedModelError as error:
        raise SavedModelError(f"{where}: classifier: {error}") from None
    if classifier is not None and not classifier.scores_defect_types:
        raise SavedModelError(
            f"{where}: classifier: {spec.classifier} gives an OK/NG decision and names no defect types; "
            "the classifier names them (list an OK/NG model under detectors)"
        )
    # Its models may live outside the line's folder: their names enter the line's.
    components = [model_identity(resolve(spec.router)), *(detectors[s].name for s in sorted(detectors))]
    name = model_identity(directory, [*components, classifier.name if classifier else ""])
    return Line(router, detectors, classifier, name, spec.attributes_top)


def write_line_spec(directory: str | Path, spec: LineSpec) -> Path:
    return write_atomic(
        Path(directory) / LINE_FILE, yaml.safe_dump(spec.model_dump(exclude_none=True), sort_keys=False)
    )
