"""The HTTP API and review page: ``create_app(settings)`` -> a FastAPI app (``defectkit serve`` runs it).

Every route that takes data checks it before anything is stored: body size (413, before reading
more than the limit), content type (415), decodability and declared pixel count (400 / 413). A
refusal is one line, ``{"detail": "..."}``, and the service keeps serving. No request value ever
becomes a file path: images are addressed by record id, files by hashes the service computed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, MutableHeaders, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from defectkit import __version__
from defectkit.data.io import ImageReadError, ImageTooLargeError, read_image
from defectkit.inference.inspection import Inspection
from defectkit.inference.overlay import png_bytes
from defectkit.serve.batcher import BatcherClosedError
from defectkit.serve.metrics import ServiceMetrics
from defectkit.serve.records import InspectionRecord, RecordFilter, ReviewVerdict, as_utc
from defectkit.serve.reviews import ExportError, export_reviews, zip_folder
from defectkit.serve.service import InspectionService, OverlayUnavailableError
from defectkit.serve.settings import ServeSettings

LOGGER = logging.getLogger(__name__)
API_KEY_HEADER = "X-API-Key"
RECORD_ID = r"^[0-9a-f]{32}$"
RAW_TYPES = ("image/", "application/octet-stream")
STATIC = resources.files("defectkit.serve") / "static"
# auto_error off: whether a key is needed depends on the settings, checked in require_key.
api_key_header = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="needed when the service has keys"
)
BINARY = {"type": "string", "format": "binary"}  # an uploaded file, in OpenAPI
RecordId = Annotated[str, PathParam(pattern=RECORD_ID, description="inspection id: 32 hex digits")]


class Review(BaseModel):
    verdict: ReviewVerdict
    defect_class: str | None = None
    note: str | None = None
    reviewed_at: datetime | None = None


class ReviewIn(BaseModel):
    """The operator's label for one inspection: the truth, kept beside the model's call."""

    verdict: ReviewVerdict
    defect_class: str | None = Field(None, max_length=200)
    note: str | None = Field(None, max_length=2000)


class InspectionOut(Inspection):
    """An Inspection (DESIGN.md) as recorded: with its id, where its pictures are, and any review."""

    id: str
    created: datetime
    station: str | None = None
    image_sha256: str
    image_url: str
    overlay_url: str
    overlay_stored: bool = Field(description="false: the overlay is rendered (and kept) on first request")
    review: Review | None = None


class InspectionPage(BaseModel):
    items: list[InspectionOut]
    total: int
    offset: int
    limit: int


class BatchItem(BaseModel):
    """One file of a batch: its inspection, or why it was refused (the others are still judged)."""

    file: str
    status: int
    inspection: InspectionOut | None = None
    error: str | None = None


class BatchOut(BaseModel):
    items: list[BatchItem]


def record_out(record: InspectionRecord) -> InspectionOut:
    review = None
    if record.reviewed and record.review_verdict is not None:
        review = Review(
            verdict=record.review_verdict,
            defect_class=record.review_class,
            note=record.review_note,
            reviewed_at=as_utc(record.reviewed_at) if record.reviewed_at else None,
        )
    return InspectionOut(
        **record.result,
        id=record.id,
        created=as_utc(record.created),
        station=record.station,
        image_sha256=record.image_sha256,
        image_url=f"/v1/inspections/{record.id}/image",
        overlay_url=f"/v1/inspections/{record.id}/overlay",
        overlay_stored=record.overlay_sha256 is not None,
        review=review,
    )


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, by the declared length or while streaming.

    Pure ASGI, so the limit holds before FastAPI or the multipart parser buffer anything.
    """

    def __init__(self, app: ASGIApp, limit: int, on_refuse: Callable[[], None] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.on_refuse = on_refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.on_refuse is not None:
            self.on_refuse()
        response = JSONResponse(
            {"detail": f"request body is larger than the limit of {self.limit} bytes"}, status_code=413
        )
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class RequestMetrics:
    """Count and time every request by route template; mark every response ``nosniff``.

    Pure ASGI rather than ``@app.middleware``: Starlette's BaseHTTPMiddleware wraps exceptions
    raised while reading the body in an ExceptionGroup, which would hide the body limit's signal.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app dies before answering

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # Stored images are served as received: never let a browser sniff them into HTML.
                MutableHeaders(scope=message).setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


def create_app(settings: ServeSettings, service: InspectionService | None = None) -> FastAPI:
    """The service for ``settings`` (``service`` lets tests inject one with its own model)."""
    core = service or InspectionService(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        core.close()

    app = FastAPI(
        title="defectkit inspection service",
        version=__version__,
        description="Inspect images with a saved defectkit model, keep every result, review them.",
        lifespan=lifespan,
    )
    app.state.service = core
    metrics = core.metrics

    def require_key(x_api_key: Annotated[str | None, Depends(api_key_header)] = None) -> None:
        if not settings.api_keys:
            return
        given = (x_api_key or "").encode("utf-8", "replace")
        # Bytes: compare_digest refuses non-ASCII str, and a stray header must not become a 500.
        if not given or not any(hmac.compare_digest(given, key.encode("utf-8")) for key in settings.api_keys):
            raise HTTPException(401, f"this endpoint needs a valid {API_KEY_HEADER} header")

    def refuse(reason: str, status: int, detail: str) -> HTTPException:
        metrics.rejected.labels(reason).inc()
        return HTTPException(status, detail)

    async def inspect_bytes(data: bytes, name: str | None, overlay: bool) -> InspectionRecord:
        try:
            return await core.inspect(data, name, overlay)
        except ImageTooLargeError as error:
            raise refuse("too_many_pixels", 413, str(error)) from None
        except ImageReadError as error:
            raise refuse("undecodable", 400, str(error)) from None
        except BatcherClosedError as error:
            raise HTTPException(503, str(error)) from None

    @app.exception_handler(Exception)
    async def one_line_internal_error(_request: Request, error: Exception) -> JSONResponse:
        # Clients parse {"detail": ...} on every failure, a 500 too; the traceback goes to the log.
        metrics.rejected.labels("internal_error").inc()
        return JSONResponse({"detail": f"internal error ({type(error).__name__})"}, 500)

    @app.exception_handler(RequestValidationError)
    async def one_line_validation(_request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return JSONResponse(
            {"detail": f"{where}: {first.get('msg')}" if where else str(first.get("msg"))}, 422
        )

    @app.post(
        "/v1/inspect",
        response_model=InspectionOut,
        summary="Inspect one image (multipart field 'file', or the raw image as the body)",
        openapi_extra={
            "requestBody": {
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": BINARY},
                            "required": ["file"],
                        }
                    },
                    "image/*": {"schema": BINARY},
                    "application/octet-stream": {"schema": BINARY},
                },
                "required": True,
            }
        },
    )
    async def inspect(
        request: Request,
        overlay: Annotated[bool, Query(description="also render and keep the overlay picture")] = False,
        name: Annotated[str | None, Query(max_length=300, description="label for a raw body")] = None,
    ) -> InspectionOut:
        content_type = request.headers.get("content-type", "").lower()
        if content_type.startswith("multipart/form-data"):
            async with request.form(max_files=2, max_fields=8) as form:  # closes the spooled files
                files = _files(form, "file")
                if not files and form.getlist("file"):
                    # A part without a filename reaches Starlette as a text field, not as a file.
                    raise refuse(
                        "bad_form",
                        400,
                        "the multipart field 'file' holds text, not a file: send the part with a filename "
                        "(curl -F file=@part.png)",
                    )
                if len(files) != 1:
                    raise refuse("bad_form", 400, "send exactly one image in the multipart field 'file'")
                data, filename = await files[0].read(), files[0].filename
            record = await inspect_bytes(data, filename, overlay)
        elif content_type.startswith(RAW_TYPES):
            record = await inspect_bytes(await request.body(), name, overlay)
        else:
            raise refuse(
                "content_type",
                415,
                f"content type {content_type or 'missing'!r} is not accepted; "
                "send multipart/form-data (field 'file'), image/* or application/octet-stream",
            )
        return record_out(record)

    @app.post(
        "/v1/inspect/batch",
        response_model=BatchOut,
        summary="Inspect several images (multipart, repeated field 'files'); each judged on its own",
        openapi_extra={
            "requestBody": {
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"files": {"type": "array", "items": BINARY}},
                            "required": ["files"],
                        }
                    }
                },
                "required": True,
            }
        },
    )
    async def inspect_batch(
        request: Request, overlay: Annotated[bool, Query(description="also keep overlays")] = False
    ) -> BatchOut:
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise refuse("content_type", 415, "send multipart/form-data with the images in fields 'files'")
        async with request.form(max_files=settings.max_batch_files, max_fields=16) as form:
            files = [(await upload.read(), upload.filename) for upload in _files(form, "files")]
        if not files:
            raise refuse("bad_form", 400, "no files: send the images in multipart fields named 'files'")

        async def one(data: bytes, filename: str | None) -> BatchItem:
            label = filename or "upload"
            try:
                record = await inspect_bytes(data, filename, overlay)
            except HTTPException as error:
                return BatchItem(file=label, status=error.status_code, error=str(error.detail))
            except Exception as error:
                # The other files are judged and recorded: failing the whole request would hide
                # their ids, and a client's retry would record them twice.
                LOGGER.exception("inspecting %r in a batch failed", label)
                metrics.rejected.labels("internal_error").inc()  # the request itself answers 200
                return BatchItem(file=label, status=500, error=f"internal error ({type(error).__name__})")
            return BatchItem(file=label, status=200, inspection=record_out(record))

        return BatchOut(items=list(await asyncio.gather(*(one(*f) for f in files))))

    @app.get("/v1/inspections", response_model=InspectionPage, summary="Recorded inspections, newest first")
    async def list_inspections(
        verdict: Literal["ok", "defect", "unknown"] | None = None,
        surface: Annotated[str | None, Query(max_length=200)] = None,
        reviewed: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> InspectionPage:
        try:
            where = RecordFilter(
                verdict, surface, reviewed, *(as_utc(t) if t else None for t in (since, until))
            )
        except OverflowError:
            raise HTTPException(422, "since/until: out of the representable range of times") from None
        records, total = await run_in_threadpool(core.records.query, where, offset, limit)
        return InspectionPage(items=[record_out(r) for r in records], total=total, offset=offset, limit=limit)

    async def find(record_id: str) -> InspectionRecord:
        record = await run_in_threadpool(core.records.get, record_id)
        if record is None:
            raise HTTPException(404, f"no inspection {record_id}")
        return record

    @app.get("/v1/inspections/{record_id}", response_model=InspectionOut, summary="One inspection")
    async def get_inspection(record_id: RecordId) -> InspectionOut:
        return record_out(await find(record_id))

    @app.get(
        "/v1/inspections/{record_id}/image",
        response_class=FileResponse,
        summary="The inspected image, as received",
    )
    async def get_image(
        record_id: RecordId,
        as_png: Annotated[
            bool, Query(description="a PNG copy when browsers cannot show the stored format (TIFF)")
        ] = False,
    ) -> Response:
        record = await find(record_id)
        path = core.store.path(record.image_sha256, record.image_format)
        if not path.is_file():
            raise HTTPException(410, f"the image of inspection {record_id} is no longer stored")
        if as_png and record.image_format not in BROWSER_FORMATS:
            return Response(await run_in_threadpool(_png_copy, path), media_type="image/png")
        return FileResponse(path, media_type=f"image/{record.image_format}")

    @app.get(
        "/v1/inspections/{record_id}/overlay",
        response_class=FileResponse,
        summary="The overlay picture (heat map, regions, verdict); rendered on first request if not kept",
    )
    async def get_overlay(record_id: RecordId) -> FileResponse:
        record = await find(record_id)
        try:
            sha256 = await core.overlay_for(record)
        except OverlayUnavailableError as error:
            raise HTTPException(410, str(error)) from None
        return FileResponse(core.store.path(sha256, "png"), media_type="image/png")

    @app.post(
        "/v1/inspections/{record_id}/review",
        response_model=InspectionOut,
        dependencies=[Depends(require_key)],
        summary="Record the operator's verdict beside the model's",
    )
    async def review(record_id: RecordId, body: ReviewIn) -> InspectionOut:
        record = await run_in_threadpool(
            core.records.review, record_id, body.verdict, body.defect_class, body.note
        )
        if record is None:
            raise HTTPException(404, f"no inspection {record_id}")
        metrics.reviews.labels("agree" if record.verdict == body.verdict else "disagree").inc()
        return record_out(record)

    @app.get(
        "/v1/reviews/queue",
        response_model=list[InspectionOut],
        summary="Unreviewed inspections, most informative first: unknowns, then scores nearest the threshold",
    )
    async def review_queue(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[InspectionOut]:
        return [record_out(r) for r in await run_in_threadpool(core.records.review_queue, limit)]

    @app.get(
        "/v1/reviews/export",
        response_class=FileResponse,
        dependencies=[Depends(require_key)],
        summary="The reviewed images as a training set: a zip of manifest.jsonl, dataset.json, images/",
    )
    async def export(
        name: Annotated[str, Query(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")] = "reviews",
    ) -> FileResponse:
        work = Path(tempfile.mkdtemp(prefix="defectkit-export-"))

        def build() -> Path:
            # Fixed names on disk: ``name`` only labels the dataset and the download.
            export_reviews(core.records, core.store, work / "export", name=name)
            return zip_folder(work / "export", work / "export.zip")

        try:
            archive = await run_in_threadpool(build)
        except ExportError as error:
            _remove(work)
            raise HTTPException(409, str(error)) from None
        except BaseException:
            _remove(work)
            raise
        return FileResponse(
            archive,
            media_type="application/zip",
            filename=f"{name}.zip",
            background=BackgroundTask(_remove, work),
        )

    @app.get("/v1/health", summary="Liveness and what is served")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": core.model_name, "backend": core.served.backend_name}

    @app.get("/v1/models", summary="The served model: name, method, thresholds, version")
    async def models() -> list[dict[str, object]]:
        return [core.describe_model()]

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def review_page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    # Outermost last: CORS, then metrics (which so see the body limit's 413s), then the limit.
    app.add_middleware(
        BodyLimit, limit=settings.max_body_bytes, on_refuse=metrics.rejected.labels("body_too_large").inc
    )
    app.add_middleware(RequestMetrics, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=[API_KEY_HEADER, "Content-Type"],
        )
    return app


# Formats every common browser shows in an <img>; the review page asks for a PNG copy of others.
BROWSER_FORMATS = frozenset({"png", "jpeg", "jpg", "gif", "webp", "bmp"})


def _png_copy(path: Path) -> bytes:
    return png_bytes(Image.fromarray(read_image(path)))


def _files(form: FormData, field: str) -> list[UploadFile]:
    # Starlette has already answered a malformed body or too many parts with its own 400.
    return [value for value in form.getlist(field) if isinstance(value, UploadFile)]


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
