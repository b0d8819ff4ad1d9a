"""What every image inspector offers: a saved model's and a line's alike.

Kept apart from :mod:`defectkit.inference.inspection`, which stays free of torch so that clients
reading Inspection JSON do not pay for it.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Generic, TypeVar

import numpy as np
from PIL import Image

from defectkit.data.io import pil_pixels, printable_path, read_image
from defectkit.inference.inspection import Inspection

Judged = tuple[Inspection, np.ndarray | None]
# What inspect takes: pixels (uint8 HxW or HxWxC, RGB), a PIL image, or an image file's path.
ImageInput = np.ndarray | Image.Image | str | os.PathLike[str]
ScoredT = TypeVar("ScoredT")


def decoded(image: ImageInput, name: str | None = None) -> tuple[np.ndarray, str]:
    """The pixels of an array, a PIL image or an image file, and the name its Inspection carries.

    Arrays are taken as they are (uint8, HxW or HxWxC, RGB order: an OpenCV BGR array must be
    converted first); PIL images and files are decoded alike (:func:`~defectkit.data.io.pil_pixels`),
    so a palette or CMYK image is not read as raw channel values."""
    if isinstance(image, str | os.PathLike):
        # A name that is not UTF-8 (a Latin-1 share) is kept printable, or the JSON could not be written.
        return read_image(os.fspath(image)), name or printable_path(os.fspath(image))
    if isinstance(image, Image.Image):
        return pil_pixels(image), name or "<PIL image>"
    return image, name or "<array>"  # checked once, where every image is: to_network_layout


class ImageInspector(ABC, Generic[ScoredT]):
    """What ``predict``, the CLI and the service run: one saved model
    (:class:`~defectkit.inference.inspector.Inspector`) or a line of them
    (:class:`~defectkit.inference.line.Line`). Both judge batches; one image is a batch of one.

    Inspecting is two steps, so a service can run the first in micro-batches on one thread and
    the second on each request's own: :meth:`score_batch` (the networks, several images per call)
    and :meth:`judge` (verdict, regions, full-size heat map of one image from its scores).
    """

    name: str

    @abstractmethod
    def score_batch(self, images: Sequence[np.ndarray]) -> list[ScoredT]:
        """The raw outputs of several decoded images, in input order, with as few calls as may be."""

    @abstractmethod
    def judge(self, scored: ScoredT, label: str) -> Judged:
        """The Inspection of one scored image and its full-size heat map (``latency_ms`` left 0)."""

    @abstractmethod
    def display_heatmap(self, scored: ScoredT) -> np.ndarray | None:
        """What an overlay of this scored image draws (full size), or None."""

    @abstractmethod
    def pixel_threshold_of(self, inspection: Inspection) -> float:
        """The heat-map threshold ``inspection``'s regions were traced at (overlays draw it)."""

    @property
    @abstractmethod
    def backend_name(self) -> str:
        """What runs the networks (torch, onnx; a line names its detectors')."""

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """Name, method, backend, thresholds, version: what the service's ``/v1/models`` shows."""

    def inspect_batch(self, images: Sequence[np.ndarray], names: Sequence[str]) -> list[Judged]:
        """Inspections and full-size heat maps of several decoded images, scored together.

        ``latency_ms`` of each is the wall time of the whole batch: what the caller waited for it.
        """
        if len(images) != len(names):
            raise ValueError(f"{len(images)} images but {len(names)} names")
        started = time.perf_counter()
        judged = [self.judge(one, label) for one, label in zip(self.score_batch(images), names, strict=True)]
        latency = (time.perf_counter() - started) * 1000.0
        for inspection, _ in judged:
            inspection.latency_ms = latency
        return judged

    def inspect(self, image: ImageInput, name: str | None = None) -> Inspection:
        """Verdict, score, threshold and defect regions for one image: a uint8 array (HxW, or
        HxWxC in RGB order), a PIL image or a path (:func:`decoded`)."""
        return self.inspect_with_heatmap(image, name)[0]

    def inspect_with_heatmap(self, image: ImageInput, name: str | None = None) -> Judged:
        """:meth:`inspect`, also returning the full-size heat map (for overlays, saved masks)."""
        pixels, label = decoded(image, name)
        return self.inspect_batch([pixels], [label])[0]
