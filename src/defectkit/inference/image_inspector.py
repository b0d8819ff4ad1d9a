"""What every image inspector offers: a saved model's and a line's alike.

Kept apart from :mod:`defectkit.inference.inspection`, which stays free of torch so that clients
reading Inspection JSON do not pay for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from defectkit.data.io import read_image
from defectkit.inference.inspection import Inspection


def decoded(image: np.ndarray | str | Path, name: str | None = None) -> tuple[np.ndarray, str]:
    """The pixels of an array or an image file, and the name its Inspection carries."""
    if isinstance(image, str | Path):
        return read_image(image), name or str(image)
    return np.asarray(image), name or "<array>"


class ImageInspector(ABC):
    """What ``predict``, the CLI and the service run: one saved model
    (:class:`~defectkit.inference.inspector.Inspector`) or a line of them
    (:class:`~defectkit.inference.line.Line`). Both judge batches; one image is a batch of one."""

    name: str

    @abstractmethod
    def inspect_batch(
        self, images: Sequence[np.ndarray], names: Sequence[str]
    ) -> list[tuple[Inspection, np.ndarray | None]]:
        """Inspections and full-size heat maps of several decoded images, scored together."""

    @abstractmethod
    def pixel_threshold_of(self, inspection: Inspection) -> float:
        """The heat-map threshold ``inspection``'s regions were traced at (overlays draw it)."""

    def inspect(self, image: np.ndarray | str | Path, name: str | None = None) -> Inspection:
        """Verdict, score, threshold and defect regions for one image (array or path)."""
        return self.inspect_with_heatmap(image, name)[0]

    def inspect_with_heatmap(
        self, image: np.ndarray | str | Path, name: str | None = None
    ) -> tuple[Inspection, np.ndarray | None]:
        """:meth:`inspect`, also returning the full-size heat map (for overlays, saved masks)."""
        pixels, label = decoded(image, name)
        return self.inspect_batch([pixels], [label])[0]
