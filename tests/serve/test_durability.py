"""SIGKILL in the middle of a load: every inspection that got a 2xx is in the database, intact.

The service runs as ``defectkit serve`` in a child process (so it can really be killed), with
durable commits as shipped; bounded to a few dozen requests on a tiny model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import png_bytes

pytest.importorskip("fastapi", reason="the service needs the serve extra")
pytest.importorskip("httpx", reason="the load client needs httpx (serve extra)")

from defectkit.bench.service import ServerProcess, count_records, kill_and_verify, run_load


@pytest.mark.slow
def test_acknowledged_inspections_survive_sigkill(served_model: Path, tmp_path: Path) -> None:
    images = [png_bytes(seed, 192, 128) for seed in range(6)]
    report = kill_and_verify(served_model, tmp_path / "data", images, count=40, concurrency=4, kill_after=10)
    assert report.acknowledged >= 10
    assert report.lost == 0
    assert report.records_after_restart >= report.acknowledged + 1  # + the request after the restart
    assert report.served_after_restart


@pytest.mark.slow
def test_records_equal_accepted_responses(served_model: Path, tmp_path: Path) -> None:
    server = ServerProcess(served_model, tmp_path / "data", ["--max-batch", "4"]).start()
    try:
        report = run_load(server.url, [png_bytes(seed) for seed in range(4)], count=24, concurrency=6)
    finally:
        server.stop()
    assert report.statuses == {"200": 24} and report.server_errors() == 0
    records, ids = count_records(tmp_path / "data")
    assert records == 24 and ids == set(report.acknowledged)
