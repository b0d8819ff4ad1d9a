"""Scoring labelled images one at a time, timed, for every evaluation (binary, multi-label,
classifier): one place decides what an image's inference time is."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from defectkit.data.io import load_sample
from defectkit.data.sample import Sample
from defectkit.inference.inspector import Inspector, Scored


@dataclass
class TimedScorer:
    """Loads a sample and scores it with ``inspector``, appending the milliseconds of the
    ``score`` call alone (not the read) to ``infer_ms``. The first image is scored once untimed
    before its timed pass: the first call pays for allocations and lazy initialisation, which a
    line running for hours never sees. Read errors (``ImageReadError``, ``ValueError``,
    ``OSError``) propagate for the caller to record."""

    inspector: Inspector
    channels: int | None = None
    infer_ms: list[float] = field(default_factory=list)
    _warm: bool = False

    def __call__(self, sample: Sample) -> tuple[Sample, Scored]:
        loaded = load_sample(sample, self.channels)
        image = np.asarray(loaded.image)
        if not self._warm:
            self.inspector.score(image)
            self._warm = True
        started = time.perf_counter()
        scored = self.inspector.score(image)
        self.infer_ms.append((time.perf_counter() - started) * 1000.0)
        return loaded, scored
