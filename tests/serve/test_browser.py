"""The review page in a real browser (headless Chromium, Playwright): upload, verdict, review, export.

Needs Debian's chromium (``.ci/run`` installs it) and the playwright package (dev extra); skips with
the reason otherwise. The service runs in-process under uvicorn on a free loopback port.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import png_bytes

pytest.importorskip("fastapi", reason="the service needs the serve extra")
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright (dev extra)")

import uvicorn  # noqa: E402

from defectkit.serve import ServeSettings, create_app  # noqa: E402

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run does)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def live_service(serve_settings: ServeSettings) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(serve_settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the service did not start within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_upload_review_and_export_in_a_browser(live_service: str, tmp_path: Path) -> None:
    image = tmp_path / "bracket-17.png"
    image.write_bytes(png_bytes(21))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(live_service + "/")
            sync_api.expect(page.locator("#model-info")).to_contain_text("segdec")
            sync_api.expect(page.locator("#message")).to_contain_text("Nothing here yet")

            page.set_input_files("#upload", str(image))
            verdict = page.locator("#last-verdict")
            sync_api.expect(verdict).to_have_text(_verdicts())
            model_verdict = verdict.inner_text().strip().lower()
            sync_api.expect(page.locator("#last-detail")).to_contain_text("bracket-17.png")
            sync_api.expect(page.locator(".card")).to_have_count(1)

            page.locator(".card").first.click()
            sync_api.expect(page.locator("#detail")).to_be_visible()
            sync_api.expect(page.locator("#detail-score")).to_contain_text("threshold")
            _wait_for_image(page, "#detail-overlay")
            corrected = "ok" if model_verdict == "defect" else "defect"
            page.keyboard.press(corrected[0])  # the operator corrects the model with one key
            sync_api.expect(page.locator("#review-status")).to_have_text(f"saved: {corrected}")
            page.keyboard.press("Escape")
            sync_api.expect(page.locator(".card .reviewed")).to_contain_text(corrected)

            with page.expect_download() as download_info:
                page.click("#export")
            archive = tmp_path / "reviews.zip"
            download_info.value.save_as(archive)
            assert not errors, errors
        finally:
            browser.close()
    with zipfile.ZipFile(archive) as exported:
        rows = [json.loads(line) for line in io.TextIOWrapper(exported.open("manifest.jsonl"))]
        assert len(rows) == 1 and rows[0]["label"] == (1 if corrected == "defect" else 0)
        assert rows[0]["model_verdict"] == model_verdict
        assert exported.read(rows[0]["path"]) == image.read_bytes()


def _verdicts() -> re.Pattern[str]:
    return re.compile(r"^(ok|defect|unknown)$", re.IGNORECASE)


def _wait_for_image(page: Any, selector: str) -> None:
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }",
        arg=selector,
        timeout=20_000,
    )
