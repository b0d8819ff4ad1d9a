"""The inspection service's core, apart from HTTP: decode, score in micro-batches, store, record.

:class:`InspectionService` is what the routes call. Its order of work is the durability contract:
the image is stored (atomically, under its hash), then scored, then its record is committed, and
only then does the caller get an answer. A request that fails at any step leaves no record, and
no half-written file (at most an unreferenced image, which a later identical upload reuses).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from defectkit.data.io import DecodedImage, decode_image
from defectkit.inference.image_inspector import ImageInspector
from defectkit.inference.inspection import Inspection
from defectkit.inference.inspector import load_inspector
from defectkit.inference.line import load_line
from defectkit.inference.overlay import png_bytes, render_overlay
from defectkit.inference.saved_model import LINE_FILE
from defectkit.serve.batcher import MicroBatcher
from defectkit.serve.metrics import ServiceMetrics
from defectkit.serve.records import InspectionRecord, RecordStore, new_id, utcnow
from defectkit.serve.settings import ServeSettings
from defectkit.serve.store import SUFFIXES, ContentStore

MAX_NAME = 300


@dataclass(frozen=True)
class Received:
    """A decoded upload and the bytes that will be stored (under their hash) if it is judged."""

    name: str
    decoded: DecodedImage
    data: bytes
    suffix: str


def open_served(settings: ServeSettings) -> ImageInspector[Any]:
    """The model or the line (a folder with line.yaml) to serve; a model, and a line's detectors,
    on ONNX when exported (``backend: auto``); one-line errors."""
    directory = Path(settings.model_dir)
    if (directory / LINE_FILE).is_file():
        return load_line(directory, backend=settings.backend)
    return load_inspector(directory, backend=settings.backend)


def clean_name(name: str | None) -> str:
    """The client's file name, kept only as a label: no folders, no control characters, bounded."""
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(c for c in base if c.isprintable()).strip()
    return (printable or "upload")[:MAX_NAME]


class OverlayUnavailableError(LookupError):
    """No overlay can be shown: none was kept and the record cannot be re-scored now."""


class InspectionService:
    def __init__(self, settings: ServeSettings, served: ImageInspector[Any] | None = None) -> None:
        self.settings = settings
        self.served = served or open_served(settings)
        self.metrics = ServiceMetrics()
        self.records = RecordStore(settings.resolved_db_url(), durable=settings.durable)
        self.store = ContentStore(settings.resolved_store_dir(), durable=settings.durable)
        self.batcher: MicroBatcher[np.ndarray, Any] = MicroBatcher(
            self._score_batch,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            on_batch=self.metrics.batch_size.observe,
        )
        self._in_flight = asyncio.Semaphore(settings.max_in_flight)

    def close(self) -> None:
        self.batcher.close()
        self.records.close()

    @property
    def model_name(self) -> str:
        return self.served.name

    def describe_model(self) -> dict[str, object]:
        return self.served.describe()

    def _score_batch(self, images: Sequence[np.ndarray]) -> list[Any]:
        # Only the model call runs on the inference thread; judging (heat map, regions) runs on
        # the request's own thread, overlapping with the next batch.
        try:
            return list(self.served.score_batch(list(images)))
        except Exception:
            if len(images) == 1:
                raise
        # One image spoilt the batch (an odd shape, say): score each alone so only it fails.
        results: list[Any] = []
        for image in images:
            try:
                results.append(self.served.score_batch([image])[0])
            except Exception as error:
                results.append(error)
        return results

    def receive(self, data: bytes, name: str | None) -> Received:
        """Decode, refusing bombs before decoding; nothing is stored until the image is judged."""
        label = clean_name(name)
        decoded = decode_image(data, label, self.settings.max_pixels)
        suffix = decoded.format if decoded.format in SUFFIXES else "png"
        if decoded.format not in SUFFIXES:
            # Formats outside the store's list (rare: PPM, ICO, ...) are kept as lossless PNG.
            data = png_bytes(Image.fromarray(decoded.pixels))
        return Received(label, decoded, data, suffix)

    async def inspect(self, data: bytes, name: str | None, overlay: bool) -> InspectionRecord:
        # A bounded number of images in flight bounds memory: each holds its pixels and heat map.
        async with self._in_flight:
            started = time.perf_counter()
            received = await run_in_threadpool(self.receive, data, name)
            scored = await self.batcher.submit(received.decoded.pixels)
            record = await run_in_threadpool(self._judge_and_commit, received, scored, overlay, started)
        self.metrics.verdicts.labels(record.verdict).inc()
        if record.verdict == "unknown":
            self.metrics.unknown_alerts.inc()
        return record

    def _judge_and_commit(
        self, received: Received, scored: Any, overlay: bool, started: float
    ) -> InspectionRecord:
        """Judge, then store image, overlay and record: a record never points at a missing file."""
        inspection, heatmap = self.served.judge(scored, received.name)
        inspection.latency_ms = (time.perf_counter() - started) * 1000.0  # decode + queue + model + judge
        sha256 = self.store.put(received.data, received.suffix)
        overlay_sha = self._store_overlay(received.decoded.pixels, inspection, heatmap) if overlay else None
        height, width = received.decoded.pixels.shape[:2]
        record = InspectionRecord(
            id=new_id(),
            created=utcnow(),
            station=self.settings.station,
            model=self.model_name,
            image_name=received.name,
            image_sha256=sha256,
            image_format=received.suffix,
            width=int(width),
            height=int(height),
            verdict=inspection.verdict,
            score=inspection.score,
            threshold=inspection.threshold,
            defect_class=inspection.defect_class,
            surface=inspection.surface,
            result=inspection.model_dump(mode="json", by_alias=True),
            overlay_sha256=overlay_sha,
            reviewed=False,
        )
        return self.records.add(record)

    def _store_overlay(self, pixels: np.ndarray, inspection: Inspection, heatmap: np.ndarray | None) -> str:
        picture = render_overlay(pixels, inspection, heatmap, self.served.pixel_threshold_of(inspection))
        return self.store.put(png_bytes(picture), "png")

    async def overlay_for(self, record: InspectionRecord) -> str:
        """The record's overlay, rendering (and keeping) it now if it was not asked for at the time.

        Re-scoring is exact only with the model that judged it: records of another model, or whose
        image is gone, raise :class:`OverlayUnavailableError`.
        """
        if record.overlay_sha256 is not None and self.store.path(record.overlay_sha256, "png").is_file():
            return record.overlay_sha256
        if record.model != self.model_name:
            raise OverlayUnavailableError(
                f"inspection {record.id} was judged by model {record.model!r}, which is not served now"
            )
        try:
            data = await run_in_threadpool(self.store.get, record.image_sha256, record.image_format)
        except FileNotFoundError:
            raise OverlayUnavailableError(
                f"the image of inspection {record.id} is no longer stored"
            ) from None
        decoded = await run_in_threadpool(decode_image, data, record.image_name, None)
        async with self._in_flight:
            scored = await self.batcher.submit(decoded.pixels)
        heatmap = await run_in_threadpool(self.served.display_heatmap, scored)
        inspection = Inspection.model_validate(record.result)
        sha256 = await run_in_threadpool(self._store_overlay, decoded.pixels, inspection, heatmap)
        await run_in_threadpool(self.records.set_overlay, record.id, sha256)
        return sha256
