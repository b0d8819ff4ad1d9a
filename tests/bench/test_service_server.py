from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from defectkit.bench.service import ServerProcess


def test_an_interrupted_start_leaves_no_server_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: object, **__: object) -> httpx.Response:
        raise KeyboardInterrupt  # Ctrl-C / SIGTERM while waiting for the service to answer

    monkeypatch.setattr(httpx, "get", interrupted)
    server = ServerProcess(tmp_path / "model", tmp_path / "data")
    with pytest.raises(KeyboardInterrupt):
        server.start()
    assert server.process is not None and server.process.poll() is not None
