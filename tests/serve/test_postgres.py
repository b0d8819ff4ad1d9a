"""Many stations, one PostgreSQL database: the same records API over ``--db postgresql://...``.

Runs when ``DEFECTKIT_TEST_POSTGRES`` names a database it may fill (e.g.
``postgresql+psycopg://defectkit:defectkit@127.0.0.1/defectkit``) and psycopg is installed
(``pip install defectkit[postgres]``); skips with the reason otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import png_bytes

pytest.importorskip("fastapi", reason="the service needs the serve extra")

from fastapi.testclient import TestClient

from defectkit.serve import ServeSettings, create_app
from defectkit.serve.records import Base, RecordStore

URL = os.environ.get("DEFECTKIT_TEST_POSTGRES")


@pytest.fixture
def postgres_url() -> str:
    if not URL:
        pytest.skip("DEFECTKIT_TEST_POSTGRES is not set (a PostgreSQL URL this test may fill)")
    pytest.importorskip("psycopg", reason="PostgreSQL needs psycopg: pip install defectkit[postgres]")
    store = RecordStore(URL)
    Base.metadata.drop_all(store.engine)  # a clean schema for this test
    store.close()
    return URL


def test_two_stations_share_one_database(
    postgres_url: str, serve_settings: ServeSettings, tmp_path: Path
) -> None:
    images = tmp_path / "shared-images"  # one store too: a shared folder in a real plant
    ids = {}
    for station in ("line-1", "line-2"):
        settings = serve_settings.model_copy(
            update={"db_url": postgres_url, "store_dir": images, "station": station}
        )
        with TestClient(create_app(settings)) as client:
            response = client.post(
                "/v1/inspect", files={"file": (f"{station}.png", png_bytes(len(ids)), "image/png")}
            )
            assert response.status_code == 200, response.text
            ids[station] = response.json()["id"]
    settings = serve_settings.model_copy(update={"db_url": postgres_url, "store_dir": images})
    with TestClient(create_app(settings)) as client:
        page = client.get("/v1/inspections").json()
        assert page["total"] == 2 and {item["station"] for item in page["items"]} == {"line-1", "line-2"}
        review = client.post(f"/v1/inspections/{ids['line-1']}/review", json={"verdict": "defect"})
        assert review.status_code == 200 and review.json()["review"]["verdict"] == "defect"
        assert [item["id"] for item in client.get("/v1/reviews/queue").json()] == [ids["line-2"]]
        since = client.get("/v1/inspections", params={"since": "2000-01-01T00:00:00+02:00"}).json()
        assert since["total"] == 2
