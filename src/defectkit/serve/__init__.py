"""The inspection service (``defectkit serve``): HTTP API, durable records, review page.

Needs the ``serve`` extra (FastAPI, uvicorn, SQLAlchemy, prometheus-client).
"""

from __future__ import annotations

from defectkit.serve.app import create_app
from defectkit.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
