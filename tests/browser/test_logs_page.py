"""The web page's logs view (frontend/static/logs.js) in headless Chromium, on the real served stack (its
LOG_DIR set by the harness): the lines of a request that failed in Triton, found by its x-request-id."""

from __future__ import annotations

import time

import httpx
from playwright.sync_api import Page, expect

from tests.browser.test_web_page import base_url, browser, page  # noqa: F401 (fixtures)


def test_the_logs_view_shows_a_failed_request_in_the_frontend_and_triton(page: Page, base_url: str) -> None:  # noqa: F811
    request_id = f"browser-logs-{time.time_ns()}"
    failed = httpx.post(f"{base_url}/v1/audio/transcriptions", headers={"x-request-id": request_id},
                        data={"model": "whisper-1"}, files={"file": ("a.wav", b"RIFF not audio" * 80)}, timeout=60)
    assert failed.status_code == 400 and failed.headers["x-request-id"] == request_id
    time.sleep(1)  # Triton's lines come through a pipe

    page.locator("#logs summary").click()
    page.get_by_label("Request id").fill(request_id)
    page.get_by_label("From level").select_option("info")
    page.get_by_role("button", name="Show", exact=True).click()

    lines = page.locator("#log-lines .log-line")
    expect(lines.filter(has_text="request failed")).to_have_count(1)
    expect(lines.filter(has_text="request failed")).to_have_attribute("data-source", "triton")
    expect(lines.filter(has_text="/v1/audio/transcriptions")).to_have_attribute("data-source", "frontend")
    expect(page.locator("#logs-note")).to_contain_text("lines")

    page.get_by_label("From level").select_option("error")
    page.get_by_role("button", name="Show", exact=True).click()
    expect(page.locator("#logs-note")).to_have_text("No lines match.")
