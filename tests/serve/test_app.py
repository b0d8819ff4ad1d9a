"""The HTTP API: inspect, record, list, review, export, metrics, keys, and refusing bad input."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import struct
import zipfile
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import png_bytes, texture

pytest.importorskip("fastapi", reason="the service needs the serve extra")
pytest.importorskip("sqlalchemy", reason="the service needs the serve extra")

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from defectkit.cli.main import app as cli
from defectkit.data.formats import read_dataset
from defectkit.inference.inspector import load_inspector
from defectkit.serve import ServeSettings, create_app
from defectkit.serve.records import InspectionRecord, new_id, utcnow
from defectkit.serve.store import ContentStore

STRANGER = {"Origin": "http://elsewhere.example"}
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def upload(client: TestClient, data: bytes, name: str = "part.png", **params: Any) -> Any:
    return client.post("/v1/inspect", files={"file": (name, data, "image/png")}, params=params)


def test_inspect_returns_the_inspectors_verdict_and_records_it(
    client: TestClient, served_model: Path
) -> None:
    data = png_bytes(3)
    response = upload(client, data, "lot7/part 3.png")
    assert response.status_code == 200, response.text
    body = response.json()
    expected = load_inspector(served_model, backend="onnx").inspect(np.asarray(Image.open(io.BytesIO(data))))
    assert body["verdict"] == expected.verdict and abs(body["score"] - expected.score) < 1e-5
    assert body["threshold"] == expected.threshold and body["image"] == "part 3.png"  # no folders kept
    assert len(body["id"]) == 32 and body["review"] is None

    stored = client.get(f"/v1/inspections/{body['id']}")
    assert stored.status_code == 200 and stored.json()["score"] == body["score"]
    image = client.get(body["image_url"])
    assert image.status_code == 200 and image.content == data  # kept byte for byte
    overlay = client.get(body["overlay_url"])  # not asked for at inspection: rendered on demand
    assert overlay.status_code == 200 and Image.open(io.BytesIO(overlay.content)).format == "PNG"

    raw = client.post(
        "/v1/inspect", content=data, headers={"content-type": "image/png"}, params={"name": "raw"}
    )
    assert raw.status_code == 200 and raw.json()["score"] == body["score"] and raw.json()["image"] == "raw"
    assert raw.json()["image_sha256"] == body["image_sha256"]  # same bytes, one stored file
    assert client.get("/v1/inspections").json()["total"] == 2


def test_an_internal_error_is_a_one_line_json_500(
    serve_settings: ServeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from defectkit.serve.service import InspectionService

    async def full_disk(self: InspectionService, data: bytes, name: str | None, overlay: bool) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(InspectionService, "inspect", full_disk)
    with TestClient(create_app(serve_settings), raise_server_exceptions=False) as client:
        response = upload(client, png_bytes(1))
        assert response.status_code == 500 and response.json() == {"detail": "internal error (OSError)"}
        assert 'defectkit_rejected_inputs_total{reason="internal_error"} 1.0' in client.get("/metrics").text


def test_missing_files_are_410_not_500(client: TestClient, serve_settings: ServeSettings) -> None:
    body = upload(client, png_bytes(4)).json()
    assert body["overlay_stored"] is False
    for stored in serve_settings.resolved_store_dir().rglob("*.png"):
        stored.unlink()  # someone cleaned the disk
    assert client.get(body["image_url"]).status_code == 410
    gone = client.get(body["overlay_url"])
    assert gone.status_code == 410 and "no longer stored" in gone.json()["detail"]


def test_batch_judges_each_file_on_its_own(client: TestClient) -> None:
    files = [
        ("files", ("a.png", png_bytes(1), "image/png")),
        ("files", ("broken.png", b"not an image", "image/png")),
        ("files", ("b.png", png_bytes(2, 128, 64), "image/png")),  # another size: its own model call
    ]
    response = client.post("/v1/inspect/batch", files=files, params={"overlay": 1})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["status"] for item in items] == [200, 400, 200]
    assert "not an image" in items[1]["error"] and items[1]["inspection"] is None
    assert client.get("/v1/inspections").json()["total"] == 2


def test_an_internal_error_fails_its_file_not_the_batch(
    serve_settings: ServeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from defectkit.serve.service import InspectionService

    judge = InspectionService.inspect

    async def full_disk(self: InspectionService, data: bytes, name: str | None, overlay: bool) -> Any:
        if name == "b.png":
            raise OSError(28, "No space left on device")
        return await judge(self, data, name, overlay)

    monkeypatch.setattr(InspectionService, "inspect", full_disk)
    files = [
        ("files", (name, png_bytes(seed), "image/png"))
        for seed, name in enumerate(["a.png", "b.png", "c.png"])
    ]
    with TestClient(create_app(serve_settings)) as client:
        response = client.post("/v1/inspect/batch", files=files)
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        # The recorded files keep their ids, so a retry need not send them again.
        assert [item["status"] for item in items] == [200, 500, 200]
        assert items[1]["error"] == "internal error (OSError)" and items[0]["inspection"]["id"]
        assert client.get("/v1/inspections").json()["total"] == 2
        assert 'defectkit_rejected_inputs_total{reason="internal_error"} 1.0' in client.get("/metrics").text


def test_filters_paging_and_review(client: TestClient) -> None:
    ids = [upload(client, png_bytes(seed)).json()["id"] for seed in range(6)]
    everything = client.get("/v1/inspections", params={"limit": 4})
    assert everything.json()["total"] == 6 and len(everything.json()["items"]) == 4
    rest = client.get("/v1/inspections", params={"limit": 4, "offset": 4}).json()["items"]
    assert len(rest) == 2
    assert {i["id"] for i in everything.json()["items"] + rest} == set(ids)

    reviewed = client.post(
        f"/v1/inspections/{ids[0]}/review", json={"verdict": "defect", "defect_class": "crack"}
    )
    assert reviewed.status_code == 200 and reviewed.json()["review"]["defect_class"] == "crack"
    assert client.get("/v1/inspections", params={"reviewed": True}).json()["total"] == 1
    assert client.get("/v1/inspections", params={"reviewed": False}).json()["total"] == 5
    for verdict in ("ok", "defect"):
        page = client.get("/v1/inspections", params={"verdict": verdict}).json()
        assert all(item["verdict"] == verdict for item in page["items"])
    counts = [client.get("/v1/inspections", params={"verdict": v}).json()["total"] for v in ("ok", "defect")]
    assert sum(counts) == 6
    assert client.get("/v1/inspections", params={"until": "2000-01-01T00:00:00Z"}).json()["total"] == 0
    assert client.get("/v1/inspections", params={"since": "2000-01-01T00:00:00Z"}).json()["total"] == 6
    assert client.get("/v1/inspections", params={"surface": "nowhere"}).json()["total"] == 0
    # Time filters mean instants: the same moment written with another offset selects the same.
    newest = datetime.fromisoformat(everything.json()["items"][0]["created"])
    for zone in (UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))):
        after = newest.astimezone(zone) + timedelta(microseconds=1)
        assert client.get("/v1/inspections", params={"since": after.isoformat()}).json()["total"] == 0
        assert client.get("/v1/inspections", params={"until": after.isoformat()}).json()["total"] == 6


def test_review_queue_puts_unknowns_then_near_threshold_first(client: TestClient) -> None:
    records = client.app.state.service.records  # type: ignore[attr-defined]
    scores = {"far": (0.05, "ok"), "near": (0.49, "ok"), "unknown": (0.9, "unknown"), "mid": (0.7, "defect")}
    for name, (score, verdict) in scores.items():
        result = {
            "image": name,
            "model": "m",
            "verdict": verdict,
            "score": score,
            "threshold": 0.5,
            "latency_ms": 1.0,
            "attributes": ["defect shape: irregular slender strip"] if verdict == "unknown" else [],
        }
        records.add(
            InspectionRecord(
                id=new_id(), created=utcnow(), model="m", image_name=name, image_sha256="0" * 64,
                image_format="png", width=1, height=1, verdict=verdict, score=score, threshold=0.5,
                result=result, reviewed=False,
            )
        )  # fmt: skip
    queue = client.get("/v1/reviews/queue").json()
    assert [item["image"] for item in queue] == ["unknown", "near", "mid", "far"]
    # What an operator needs to judge an unknown travels with it (a surface router fills these).
    assert queue[0]["attributes"] == ["defect shape: irregular slender strip"]
    assert queue[1]["attributes"] == []


def test_reviews_export_is_a_training_set(
    client: TestClient, serve_settings: ServeSettings, tmp_path: Path
) -> None:
    defect = upload(client, png_bytes(10), "d.png").json()
    good = upload(client, png_bytes(11), "g.png").json()
    upload(client, png_bytes(12), "unreviewed.png")
    assert client.get("/v1/reviews/export").status_code == 409  # nothing reviewed yet: says so
    client.post(f"/v1/inspections/{defect['id']}/review", json={"verdict": "defect", "defect_class": "crack"})
    client.post(f"/v1/inspections/{good['id']}/review", json={"verdict": "ok", "note": "dust, not a defect"})

    out = tmp_path / "exported"
    result = CliRunner().invoke(
        cli, ["reviews", "export", str(out), "--data-dir", str(serve_settings.data_dir)]
    )
    assert result.exit_code == 0, result.output
    dataset = read_dataset(out)
    assert not [p for p in dataset.problems if p.severity == "error"]
    by_id = {s.meta["inspection_id"]: s for s in dataset.samples}
    assert set(by_id) == {defect["id"], good["id"]}
    assert by_id[defect["id"]].label == 1 and dataset.info.class_names == ["crack"]
    assert by_id[defect["id"]].classes == [1]
    assert by_id[good["id"]].label == 0 and by_id[good["id"]].meta["note"] == "dust, not a defect"
    assert Path(by_id[defect["id"]].path).read_bytes() == png_bytes(10)

    archive = client.get("/v1/reviews/export")
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert (
        "manifest.jsonl" in names
        and "dataset.json" in names
        and sum(n.startswith("images/") for n in names) == 2
    )

    missing = CliRunner().invoke(
        cli, ["reviews", "export", str(out), "--data-dir", str(tmp_path / "nowhere")]
    )
    assert missing.exit_code == 2 and "no such database" in missing.output


def test_reviews_export_replaces_nothing_unasked_and_reads_only(
    client: TestClient, serve_settings: ServeSettings, tmp_path: Path
) -> None:
    reviewed = [upload(client, png_bytes(20 + i), f"p{i}.png").json() for i in range(3)]
    for record in reviewed:
        client.post(f"/v1/inspections/{record['id']}/review", json={"verdict": "ok"})
    export = ["reviews", "export", "--data-dir", str(serve_settings.data_dir)]
    out = tmp_path / "exported"
    assert CliRunner().invoke(cli, [*export[:2], str(out), *export[2:]]).exit_code == 0
    before = (out / "manifest.jsonl").read_bytes()
    again = CliRunner().invoke(cli, [*export[:2], str(out), *export[2:]])
    assert again.exit_code == 2 and "--force" in again.output
    assert (out / "manifest.jsonl").read_bytes() == before

    # A stored image gone bad is left out and reported; the others are still exported.
    core_store = ContentStore(serve_settings.resolved_store_dir())
    damaged = core_store.path(reviewed[1]["image_sha256"], "png")
    damaged.write_bytes(b"not the image")
    forced = CliRunner().invoke(cli, [*export[:2], str(out), *export[2:], "--force"])
    assert forced.exit_code == 1 and "left out" in forced.output and reviewed[1]["id"] in forced.output
    assert {s.meta["inspection_id"] for s in read_dataset(out).samples} == {
        reviewed[0]["id"],
        reviewed[2]["id"],
    }

    # Any other database is read, never changed: no table created in it, its journal mode kept.
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE parts (id INTEGER)")
    unrelated = CliRunner().invoke(
        cli, ["reviews", "export", str(tmp_path / "x"), "--db", f"sqlite:///{other}"]
    )
    assert unrelated.exit_code == 2 and "not a defectkit service database" in unrelated.output
    with sqlite3.connect(other) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert tables == ["parts"]
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_api_keys_guard_review_and_export(serve_settings: ServeSettings) -> None:
    settings = serve_settings.model_copy(update={"api_keys": ["s3cret"]})
    with TestClient(create_app(settings)) as client:
        record = upload(client, png_bytes(1)).json()  # inspecting needs no key
        review = f"/v1/inspections/{record['id']}/review"
        assert client.post(review, json={"verdict": "ok"}).status_code == 401
        assert client.post(review, json={"verdict": "ok"}, headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/v1/reviews/export").status_code == 401
        assert client.post(review, json={"verdict": "ok"}, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/v1/reviews/export", headers={"X-API-Key": "s3cret"}).status_code == 200
        accented = {"X-API-Key": "clé".encode("latin-1")}  # non-ASCII: refused, not a 500
        assert client.post(review, json={"verdict": "ok"}, headers=accented).status_code == 401
        assert "access-control-allow-origin" not in client.get("/v1/health", headers=STRANGER).headers
    with TestClient(create_app(settings.model_copy(update={"cors_origins": ["http://hmi.local"]}))) as client:
        allowed = client.get("/v1/health", headers={"Origin": "http://hmi.local"})
        assert allowed.headers["access-control-allow-origin"] == "http://hmi.local"
        assert "access-control-allow-origin" not in client.get("/v1/health", headers=STRANGER).headers


def as_png_header() -> dict[str, str]:
    return {"content-type": "image/png"}


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def decompression_bomb(side: int = 100_000) -> bytes:
    """A valid PNG header declaring side x side pixels, a few hundred bytes in all."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (side + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


def bad_inputs() -> list[tuple[str, dict[str, Any], int]]:
    """(what, request keyword arguments for POST /v1/inspect, expected status)."""
    good = png_bytes(5)
    jpeg = io.BytesIO()
    Image.fromarray(texture(6, 200, 200)).save(jpeg, format="JPEG")
    as_png = {"content-type": "image/png"}
    pair = [("file", ("a.png", good, "image/png")), ("file", ("b.png", good, "image/png"))]
    broken_form = {"content-type": "multipart/form-data; boundary=xyz"}
    return [
        ("text as image", {"content": b"hello", "headers": as_png}, 400),
        ("empty body", {"content": b"", "headers": as_png}, 400),
        ("truncated png", {"content": good[: len(good) // 2], "headers": as_png}, 400),
        (
            "truncated jpeg",
            {"content": jpeg.getvalue()[:600], "headers": {"content-type": "image/jpeg"}},
            400,
        ),
        ("bomb", {"content": decompression_bomb(), "headers": as_png}, 413),
        ("oversize body", {"content": os.urandom(70_000), "headers": as_png}, 413),
        ("json body", {"content": b'{"a": 1}', "headers": {"content-type": "application/json"}}, 415),
        ("no content type", {"content": good}, 415),
        ("text/plain", {"content": good, "headers": {"content-type": "text/plain"}}, 415),
        ("wrong field", {"files": {"image": ("a.png", good, "image/png")}}, 400),
        ("two files", {"files": pair}, 400),
        ("pdf in multipart", {"files": {"file": ("a.pdf", b"%PDF-1.4 nothing", "application/pdf")}}, 400),
        ("malformed multipart", {"content": b"--xyz\r\ngarbage", "headers": broken_form}, 400),
        ("bad overlay flag", {"content": good, "headers": as_png, "params": {"overlay": "maybe"}}, 422),
    ]


def test_bad_input_gets_a_one_line_4xx_and_records_nothing(serve_settings: ServeSettings) -> None:
    settings = serve_settings.model_copy(update={"max_body_bytes": 60_000, "max_pixels": 4_000_000})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for what, request, status in bad_inputs():
            response = client.post("/v1/inspect", **request)
            assert response.status_code == status, (what, response.status_code, response.text)
            detail = response.json()["detail"]
            assert isinstance(detail, str) and detail and "\n" not in detail, (what, detail)
        # A part sent without a filename is text to Starlette: the answer says so, not "one image".
        textual = client.post("/v1/inspect", files={"file": (None, "part.png")})
        assert textual.status_code == 400 and "holds text, not a file" in textual.json()["detail"]
        for path in ("/v1/inspections/../../etc/passwd", "/v1/inspections/%2e%2e%2fetc%2fpasswd/image"):
            assert client.get(path).status_code in (404, 422)
        assert client.get("/v1/inspections/" + "a" * 32).status_code == 404
        assert client.get("/v1/inspections", params={"limit": 0}).status_code == 422
        assert client.get("/v1/inspections", params={"offset": 10**20}).status_code == 422
        far_future = {"since": "9999-12-31T23:00:00-05:00"}  # past the last representable UTC instant
        assert client.get("/v1/inspections", params=far_future).status_code == 422
        for name in ("..", ".", "../etc", "a/b"):
            assert client.get("/v1/reviews/export", params={"name": name}).status_code == 422

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
            for _ in range(10):
                yield os.urandom(10_000)

        streamed = client.post("/v1/inspect", content=chunks(), headers=as_png_header())
        assert streamed.status_code == 413 and "\n" not in streamed.json()["detail"]
        assert client.get("/v1/inspections").json()["total"] == 0  # nothing half-recorded
        assert upload(client, png_bytes(1)).status_code == 200  # and it still serves
        metrics = client.get("/metrics").text
        assert 'defectkit_rejected_inputs_total{reason="undecodable"}' in metrics
        assert 'defectkit_rejected_inputs_total{reason="body_too_large"}' in metrics
        assert 'status="5' not in metrics


def test_health_models_and_metrics(client: TestClient) -> None:
    assert client.get("/v1/health").json()["status"] == "ok"
    (model,) = client.get("/v1/models").json()
    assert model["method"] == "segdec" and model["backend"] == "onnx" and "decision" in model["thresholds"]
    for seed in range(3):
        upload(client, png_bytes(seed))
    text = client.get("/metrics").text
    assert 'defectkit_requests_total{method="POST",route="/v1/inspect",status="200"} 3.0' in text
    assert "defectkit_request_latency_seconds_bucket" in text
    assert "defectkit_inference_batch_size_count 3.0" in text
    verdicts = [line for line in text.splitlines() if line.startswith("defectkit_verdicts_total")]
    assert sum(float(line.split()[-1]) for line in verdicts) == 3.0
    page = client.get("/")
    assert page.status_code == 200 and "defectkit review" in page.text
    assert client.get("/static/review.js").status_code == 200


def test_openapi_spec_is_committed(client: TestClient) -> None:
    """docs/openapi.json is the served spec; regenerate with DEFECTKIT_WRITE_OPENAPI=1 pytest -k openapi."""
    spec = json.dumps(client.get("/openapi.json").json(), indent=2, sort_keys=True) + "\n"
    if os.environ.get("DEFECTKIT_WRITE_OPENAPI"):
        OPENAPI.write_text(spec)
    assert OPENAPI.is_file() and OPENAPI.read_text() == spec, (
        "docs/openapi.json is stale: DEFECTKIT_WRITE_OPENAPI=1 pytest tests/serve -k openapi"
    )


def test_serving_a_broken_line_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "line.yaml").write_text("surfaces: {}\n")  # a line is served; this one is invalid
    result = CliRunner().invoke(cli, ["serve", str(tmp_path)])
    assert result.exit_code == 1 and "line.yaml: router: Field required" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("options", "code", "said"),
    [
        (["--db", "nonsense"], 1, "nonsense: cannot open the database (Could not parse"),
        (
            ["--db", "postgresql+nodriver://station:secret@db.example/line"],
            1,
            "station:***@db.example/line: cannot open",
        ),
        (
            ["--db", "sqlite:///{tmp}/text.db"],
            1,
            "text.db: cannot open the database (file is not a database)",
        ),
        (["--max-batch", "0"], 2, "serve options: max_batch: Input should be greater than or equal to 1"),
        (["--backend", "tensorrt"], 2, "serve options: backend: Input should be"),
    ],
    ids=["unparsable", "no-driver", "not-a-database", "max-batch", "backend"],
)
def test_serve_options_that_cannot_work_fail_on_one_line(
    served_model: Path, tmp_path: Path, options: list[str], code: int, said: str
) -> None:
    pytest.importorskip("uvicorn", reason="the service needs the serve extra")
    (tmp_path / "text.db").write_text("not a database\n")
    args = [option.format(tmp=tmp_path) for option in options]
    result = CliRunner().invoke(cli, ["serve", str(served_model), "--data-dir", str(tmp_path / "d"), *args])
    assert result.exit_code == code, result.output
    assert said in " ".join(result.output.split()) and "Traceback" not in result.output
    assert "secret" not in result.output and len(result.output.strip().splitlines()) == 1
    assert (tmp_path / "text.db").read_text() == "not a database\n"  # opened, never changed


def test_a_tiff_is_shown_to_a_browser_as_a_png_copy(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.fromarray(texture(7, 64, 96)).save(buffer, format="TIFF")
    tiff = upload(client, buffer.getvalue(), name="part.tif")
    assert tiff.status_code == 200, tiff.text
    url = tiff.json()["image_url"]
    stored = client.get(url)
    assert stored.content == buffer.getvalue() and stored.headers["content-type"] == "image/tiff"
    shown = client.get(url, params={"as_png": True})
    assert shown.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(shown.content))), texture(7, 64, 96))
    png = upload(client, png_bytes(1)).json()["image_url"]  # a format browsers show: as stored
    assert client.get(png, params={"as_png": True}).content == client.get(png).content
