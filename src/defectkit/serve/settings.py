"""Settings of one inspection service: what it serves, where it keeps records, what it accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024 * 1024


class ServeSettings(BaseModel):
    """Everything ``defectkit serve`` can be told; defaults suit one station on one machine."""

    model_config = ConfigDict(extra="forbid")

    model_dir: Path
    backend: Literal["auto", "onnx", "torch"] = Field(
        "auto", description="auto: onnx when the model has been exported, else torch"
    )
    data_dir: Path = Field(Path("runs/serve"), description="default home of the database and the image store")
    db_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default sqlite:///DATA_DIR/inspections.db (postgresql://... to share)",
    )
    store_dir: Path | None = Field(None, description="content-addressed images; default DATA_DIR/images")
    station: str | None = Field(None, description="recorded with every inspection (many stations, one db)")
    max_batch: int = Field(8, ge=1, le=256, description="most images scored in one model call")
    max_wait_ms: float = Field(
        5.0, ge=0.0, le=1000.0, description="how long the first image of a batch waits for company"
    )
    max_body_bytes: int = Field(32 * MIB, ge=1024, description="larger request bodies get 413")
    max_pixels: int = Field(36_000_000, ge=1, description="images declaring more pixels get 413 (bombs)")
    max_in_flight: int = Field(
        16, ge=1, description="images decoded or scored at once; more wait (bounds memory under load)"
    )
    max_batch_files: int = Field(64, ge=1, description="most files in one /v1/inspect/batch request")
    api_keys: list[str] = Field(default_factory=list, description="when set, review and export need one")
    cors_origins: list[str] = Field(default_factory=list, description="CORS is off unless origins are named")
    durable: bool = Field(
        True,
        description="fsync images and the database at each commit (survives power loss, not only crashes)",
    )

    def resolved_db_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'inspections.db').resolve()}"

    def resolved_store_dir(self) -> Path:
        return self.store_dir or self.data_dir / "images"
