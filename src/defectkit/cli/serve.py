"""``defectkit serve MODEL_OR_LINE_DIR`` and ``defectkit reviews export``: the service, its feedback loop."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from defectkit.cli.errors import UsageError, fail, user_errors

console = Console(highlight=False, stderr=True)
reviews_app = typer.Typer(help="Operators' reviews recorded by the service.", no_args_is_help=True)


def _need_serve_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise UsageError(
            f"the service needs the serve extra: pip install 'defectkit[serve]' ({error})"
        ) from None


@user_errors
def serve(
    model_dir: Path = typer.Argument(
        ..., help="Saved model directory (exported to ONNX for speed), or a line directory (line.yaml)."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 exposes the service."),
    port: int = typer.Option(8000, help="TCP port."),
    backend: str = typer.Option(
        "auto", help="auto (onnx when exported), onnx or torch; a line's router runs on torch."
    ),
    data_dir: Path = typer.Option(Path("runs/serve"), help="Default home of the database and images."),
    db: str | None = typer.Option(
        None, help="SQLAlchemy URL (default sqlite in DATA_DIR; postgresql://...)."
    ),
    store: Path | None = typer.Option(None, help="Image store folder (default DATA_DIR/images)."),
    station: str | None = typer.Option(None, help="Station name recorded with each inspection."),
    max_batch: int = typer.Option(8, help="Most images per model call (micro-batching)."),
    max_wait_ms: float = typer.Option(5.0, help="Longest wait for a batch to fill, in ms."),
    max_body_mb: float = typer.Option(32.0, help="Largest request body, in MiB (413 above)."),
    max_pixels: int = typer.Option(36_000_000, help="Largest image, in pixels (413 above)."),
    max_in_flight: int = typer.Option(16, help="Images decoded or scored at once (bounds memory)."),
    api_key: list[str] = typer.Option(
        [], "--api-key", envvar="DEFECTKIT_API_KEYS", help="Key required by review and export (repeatable)."
    ),
    cors_origin: list[str] = typer.Option(
        [], help="Allow browser calls from this origin (CORS off by default)."
    ),
    fast_commit: bool = typer.Option(
        False, help="Skip fsync at each commit: survives a killed process, not a power cut."
    ),
) -> None:
    """Serve MODEL_DIR over HTTP: POST /v1/inspect, the review page at /, OpenAPI at /docs.

    A line directory (`defectkit line train`) is served whole: router, unseen-surface alerts,
    per-surface detectors.
    """
    _need_serve_extra()
    import uvicorn
    from pydantic import ValidationError

    from defectkit.config import validation_problems
    from defectkit.inference.saved_model import SavedModelError
    from defectkit.serve import ServeSettings, create_app
    from defectkit.serve.records import DatabaseUnavailable, check_database_url, shown_url

    try:
        settings = ServeSettings(
            model_dir=model_dir,
            backend=backend,
            data_dir=data_dir,
            db_url=db,
            store_dir=store,
            station=station,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_body_bytes=int(max_body_mb * 1024 * 1024),
            max_pixels=max_pixels,
            max_in_flight=max_in_flight,
            api_keys=[k for key in api_key for k in key.split(",") if k],
            cors_origins=cors_origin,
            durable=not fast_commit,
        )
    except ValidationError as error:
        raise UsageError(f"serve options: {validation_problems(error)}") from None
    try:
        check_database_url(settings.resolved_db_url())  # before the model's load, not after it
        app = create_app(settings)
    except (DatabaseUnavailable, SavedModelError) as error:
        raise fail(str(error)) from None
    records = shown_url(settings.resolved_db_url())
    console.print(escape(f"serving {model_dir} on http://{host}:{port} (records: {records})"))
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@reviews_app.command("export")
@user_errors
def export(
    out: Path = typer.Argument(..., help="Folder to write manifest.jsonl, dataset.json and images/ to."),
    db: str | None = typer.Option(None, help="SQLAlchemy URL of the service's database."),
    data_dir: Path = typer.Option(Path("runs/serve"), help="The service's data dir (default db and images)."),
    store: Path | None = typer.Option(None, help="Image store folder (default DATA_DIR/images)."),
    force: bool = typer.Option(False, "--force", help="Replace a dataset already in OUT."),
) -> None:
    """Write every reviewed inspection as a training set (`defectkit train` reads it).

    The database is only read. OUT must not hold a dataset already (--force replaces it). A
    stored image that is missing or damaged is reported and left out; the others are written.
    Exit status: 0 all exported; 1 some image left out; 2 bad usage or nothing to export.
    """
    _need_serve_extra()
    from defectkit.data.formats.manifest import ManifestTargetError
    from defectkit.serve.records import DatabaseUnavailable, NotARecordStore, RecordStore
    from defectkit.serve.reviews import ExportError, export_reviews
    from defectkit.serve.settings import ServeSettings
    from defectkit.serve.store import ContentStore

    settings = ServeSettings(model_dir=Path("."), data_dir=data_dir, db_url=db, store_dir=store)
    url = settings.resolved_db_url()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise UsageError(f"{url.removeprefix('sqlite:///')}: no such database (use --db or --data-dir)")
    try:
        records = RecordStore(url, read_only=True)
    except NotARecordStore as error:
        raise UsageError(str(error)) from None
    except DatabaseUnavailable as error:
        raise fail(str(error)) from None
    damaged: list[str] = []

    def report(problem: str) -> None:
        damaged.append(problem)
        console.print(f"[red]left out[/]: {escape(problem)}", soft_wrap=True)

    try:
        manifest = export_reviews(
            records, ContentStore(settings.resolved_store_dir()), out, replace=force, on_damaged=report
        )
    except (ExportError, ManifestTargetError) as error:
        if damaged:  # every reviewed image was damaged: bad data, not bad usage
            raise fail(str(error)) from None
        raise UsageError(str(error)) from None
    finally:
        records.close()
    console.print(escape(f"wrote {manifest}"))
    if damaged:
        raise fail(f"{len(damaged)} reviewed image(s) left out (listed above)")
